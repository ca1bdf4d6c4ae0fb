"""Python logging for a run: the console and ``logs/train.log``, uploaded at the end.

Handlers go on the root logger for the run's lifetime so that task modules can log with
plain ``logging.getLogger(__name__)`` and still land in the run's log file.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLogging:
    def __init__(self, log_file: Path, level: int = logging.INFO) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.path = log_file
        self._file = logging.FileHandler(log_file, encoding="utf-8")
        self._file.setFormatter(logging.Formatter(FORMAT))
        self._console = logging.StreamHandler(sys.stderr)
        self._console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        self._root = logging.getLogger()
        self._old_level = self._root.level
        self._root.setLevel(min(level, self._old_level or level))
        for handler in (self._file, self._console):
            handler.setLevel(level)
            self._root.addHandler(handler)
        # MLflow and alembic chatter at INFO would drown the training log.
        for noisy in ("alembic", "mlflow", "urllib3", "git"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    def flush(self) -> None:
        self._file.flush()

    def upload(self, client: Any, run_id: str) -> None:
        """The log so far into the run's ``logs/`` (after each checkpoint, and at the end)."""
        if self.path.exists():
            client.log_artifact(run_id, str(self.path), "logs")

    def close(self) -> None:
        for handler in (self._file, self._console):
            self._root.removeHandler(handler)
            handler.close()
        self._root.setLevel(self._old_level)
