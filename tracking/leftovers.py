"""What a SIGKILLed process leaves in the temp folder, and who removes it.

A run works in ``<tmp>/labrun-<run>-*`` (logs, checkpoints before upload) and journals its
metrics in ``<tmp>/labrun-journal/<run>``; ``labrun server`` keeps its auth file (with the admin
password) in ``<tmp>/labrun-server-*``. A process that ends normally removes its folder; one that
is SIGKILLed cannot. Each folder therefore carries an owner file (pid, host, run), and whoever
closes a stale run (its resume, a sweep's ledger, an optimize worker) removes that run's
leftovers once what they hold is in the store: the journal replayed, the log uploaded.
``labrun gc`` removes the rest.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

OWNER = "labrun.owner"
PATTERNS = ("labrun-*",)


def claim(folder: Path, **info: str) -> None:
    """Mark ``folder`` as this process's, so a later ``gc`` can tell a live one from a leftover."""
    data = {"pid": os.getpid(), "host": socket.gethostname(), **info}
    try:
        (folder / OWNER).write_text(json.dumps(data))
    except OSError:  # a full disk must not stop the run; gc then judges the folder by its owner's absence
        pass


@dataclass
class Leftover:
    path: Path
    owner: dict[str, Any]

    @property
    def run_id(self) -> str | None:
        return self.owner.get("run_id")

    @property
    def alive(self) -> bool:
        """Its process still runs (on another host we cannot tell: treated as alive)."""
        from tracking.store import process_alive

        if self.owner.get("host") != socket.gethostname():
            return True
        try:
            return process_alive(int(self.owner["pid"]))
        except (KeyError, ValueError):
            return False


def folders(root: Path | None = None) -> Iterator[Leftover]:
    """Every owned labrun folder in the temp dir (a folder without an owner file is not ours to judge)."""
    base = Path(root or tempfile.gettempdir())
    for pattern in PATTERNS:
        for path in sorted(base.glob(pattern)):
            owner_file = path / OWNER
            if not path.is_dir() or not owner_file.is_file():
                continue
            try:
                owner = json.loads(owner_file.read_text())
            except (OSError, ValueError):
                owner = {}
            yield Leftover(path, owner)


def clean_run(client: Any, run_id: str) -> list[Path]:
    """A closed (or stale) run's leftovers: its journal replayed into the store, its last log
    uploaded, then its folders removed. Folders of a live process are left alone."""
    from tracking import store
    from tracking.metrics import recover

    try:
        recover(client, run_id, fast_uri=store.tracking_uri())
    except Exception:  # the journal stays for gc; closing the run matters more
        pass
    removed = []
    for left in folders():
        if left.run_id == run_id and not left.alive:
            _upload_log(client, run_id, left.path)
            shutil.rmtree(left.path, ignore_errors=True)
            removed.append(left.path)
    return removed


def _upload_log(client: Any, run_id: str, folder: Path) -> None:
    log = folder / "logs" / "train.log"
    if log.is_file():
        try:
            client.log_artifact(run_id, str(log), "logs")
        except Exception:
            pass


def gc(client: Any | None, *, dry_run: bool = False) -> list[str]:
    """``labrun gc``: every leftover whose process is gone; returns one line per decision."""
    from tracking import store
    from tracking.journal import journal_root

    lines = []
    for left in folders():
        if left.alive:
            continue
        if left.run_id and client is not None and not dry_run:
            store.close_if_stale(client, left.run_id, grace_s=0)
            clean_run(client, left.run_id)
        if not dry_run:
            shutil.rmtree(left.path, ignore_errors=True)
        lines.append(f"{'would remove' if dry_run else 'removed'} {left.path}"
                     + (f" (run {left.run_id})" if left.run_id else ""))
    lines += _journals(client, journal_root(), dry_run)
    return lines


def _journals(client: Any | None, root: Path, dry_run: bool) -> list[str]:
    """A journal holds metrics not yet in the store: replayed where its run is in this store,
    otherwise kept and named (it belongs to another store)."""
    from tracking.metrics import recover
    from tracking import store

    lines = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        run_id = folder.name
        try:
            client.get_run(run_id) if client is not None else None
            known = client is not None
        except Exception:
            known = False
        if not known:
            lines.append(f"kept {folder}: run {run_id} is not in this store ({store.tracking_uri()}); run "
                         f"`labrun gc` with that store's MLFLOW_TRACKING_URI to replay it")
            continue
        if dry_run:
            lines.append(f"would replay and remove {folder}")
            continue
        n = recover(client, run_id, fast_uri=store.tracking_uri())
        if n or not folder.exists():  # a live run's journal is left alone, silently
            lines.append(f"replayed {n} metric values into run {run_id}"
                         + ("" if folder.exists() else f", removed {folder}"))
    return lines
