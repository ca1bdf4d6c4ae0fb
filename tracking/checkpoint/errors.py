"""What can go wrong with a checkpoint, as exceptions a caller can tell apart."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (truncated, corrupted, wrong format)."""


class SaveCancelled(RuntimeError):
    """A save that was asked to stop before it finished: no file was left behind."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint that names a global off the allow-list (:mod:`tracking.checkpoint.allowlist`):
    refused before that global is imported or called, so nothing of it runs."""

    def __init__(self, source: str, global_name: str, *, saving: bool = False) -> None:
        self.source, self.global_name, self.saving = source, global_name, saving
        super().__init__(self.describe(source))

    def when_saving(self, source: str | None = None) -> "UnsafeCheckpoint":
        """The same refusal, said of a save (``source``: the file and where in the state)."""
        return UnsafeCheckpoint(source or self.source, self.global_name, saving=True)

    def describe(self, source: str) -> str:
        """The one-line message, naming the file as ``source``."""
        if self.saving:
            return (f"{source}: cannot save {self.global_name}: checkpoints load only allow-listed globals; "
                    f"register the task's own class with tracking.checkpoint.register_safe_globals")
        return (f"{source}: refused to load global {self.global_name} (not on the checkpoint allow-list; "
                f"nothing of it ran); load files you trust with --trust-checkpoints or "
                f"LABRUN_TRUST_CHECKPOINTS=1")
