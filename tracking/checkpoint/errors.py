"""What can go wrong with a checkpoint, as exceptions a caller can tell apart."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (truncated, corrupted, wrong format)."""


class SaveCancelled(RuntimeError):
    """A save that was asked to stop before it finished: no file was left behind."""
