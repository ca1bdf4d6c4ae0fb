"""Task projects: each ``projects/<task>/`` is one MLproject entry point built on ``tracking``."""
