"""What a person watching a sweep sees: a live bar with counts and ETA, and a cell table.

Where stderr is not a terminal (a pipe, a file, CI) or ``LABRUN_PROGRESS=0``, the bar is
replaced by one plain line per cell that ends and a one-line status every
:data:`STATUS_EVERY_S` while cells run, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Sequence, TextIO

from tracking.progress import bars_enabled

STATUS_EVERY_S = 60.0


class SweepProgress:
    def __init__(self, total: int, skipped: int, desc: str, stream: TextIO | None = None) -> None:
        self.total, self.skipped = total, skipped
        self.counts = {"finished": 0, "failed": 0, "killed": 0, "pruned": 0, "retried": 0}
        self.running = 0
        self.stream = stream or sys.stderr
        self.t0 = time.time()
        self.bar = None
        self._said = time.time()
        if bars_enabled(self.stream) and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True,
                            unit="cell", leave=True)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            c = self.counts
            self.bar.set_postfix_str(f"done {c['finished']} | running {self.running} | failed {c['failed']}"
                                     f" | killed {c['killed']} | skipped {self.skipped}")

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._postfix()
        if self.bar is None and self.total and time.time() - self._said >= STATUS_EVERY_S:
            self._status()

    def _status(self) -> None:
        c = self.counts
        done = sum(v for k, v in c.items() if k != "retried")
        print(f"[{done}/{self.total}] running {self.running}, finished {c['finished']}, failed {c['failed']}, "
              f"killed {c['killed']}, {time.time() - self.t0:.0f}s elapsed", file=self.stream, flush=True)
        self._said = time.time()

    def event(self, kind: str, label: str, run_id: str | None = None, *, final: bool = True) -> None:
        """A cell ended (``final``) or is being retried (not final)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.bar is not None:
            if final:
                self.bar.update(1)
            self._postfix()
            if kind in ("failed", "retried"):
                self.bar.write(f"  {kind}: {label}" + (f" (run {run_id})" if run_id else ""))
            return
        done = sum(v for k, v in self.counts.items() if k != "retried")
        eta = ""
        if final and done:
            left = (time.time() - self.t0) / done * (self.total - done)
            eta = f", ETA {left:.0f}s" if self.total - done else ""
        print(f"[{done}/{self.total}{eta}] {kind}: {label}" + (f" run {run_id}" if run_id else ""),
              file=self.stream, flush=True)
        self._said = time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width table (Markdown-compatible) for terminals and artifacts."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def summarize(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts if n)
