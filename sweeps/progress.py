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


class Labels:
    """A cell's name in tables and progress lines: only the keys that vary between the
    spec's cells (of a zip group, the fewest that tell its rows apart), long values cut in
    the middle. A 600-character cell column becomes a readable one; ``--format csv|json``
    has every value in full."""

    def __init__(self, spec: Any, width: int = 24) -> None:
        self.width = width
        self.keys: set[str] = set()
        if spec.seeds and len(spec.seeds) > 1:
            self.keys.add("seed")
        if getattr(spec, "conditions", None) and len(spec.conditions) > 1:
            self.keys.add("condition")
        for key, values in (spec.matrix or {}).items():
            if len({repr(v) for v in values}) > 1:
                self.keys.add(key)
        for group in spec.zip or []:
            self.keys.update(_distinguishing(group))

    def short(self, value: Any) -> str:
        text = str(value)
        if len(text) <= self.width:
            return text
        keep = self.width - 1
        return text[: keep - keep // 3] + "…" + text[len(text) - keep // 3:]

    def __call__(self, cell: Any) -> str:
        """The cell's varying values in its own order (a condition first, the seed last)."""
        parts = [f"{k}={self.short(v)}" for k, v in cell.values.items() if k in self.keys]
        return " ".join(parts) or cell.label

    def fragments(self, spec: Any, axes: Sequence[Sequence[dict[str, Any]]]) -> tuple[list[list[str]], list[int]]:
        """Per axis row, its part of the label, and the axes in label order (the seed last):
        a cell's label is their join, so a plan of a million cells formats no value twice."""
        frags: list[list[str]] = []
        for a, axis in enumerate(axes):
            rows = []
            for row in axis:
                if spec.conditions and row.get("condition") in spec.conditions:
                    row = {"condition": row["condition"]}
                rows.append(" ".join(f"{k}={self.short(v)}" for k, v in row.items() if k in self.keys))
            frags.append(rows)
        order = list(range(len(axes)))
        if spec.seeds:
            order = order[1:] + order[:1]
        return frags, order


def _distinguishing(group: dict[str, list[Any]]) -> list[str]:
    """The fewest keys of a zip group, in order, whose values tell its rows apart (greedy:
    a key is taken when it splits rows the keys before it did not)."""
    rows = list(zip(*(group[k] for k in group)))
    keys, taken = list(group), []
    distinct = 1
    for j, key in enumerate(keys):
        cols = [keys.index(k) for k in taken] + [j]
        n = len({tuple(repr(r[c]) for c in cols) for r in rows})
        if n > distinct:
            taken.append(key)
            distinct = n
        if distinct == len(rows):
            break
    return taken


def plan_writer(fmt: str, out: TextIO, widths: Sequence[int]) -> Any:
    """``write(index, label_or_cell, fingerprint, decision, plan)`` for one row of a dry run
    (``write(None, ...)`` at the end): a fixed-width table (widths known beforehand, so no
    row is held), or CSV / a JSON array with every value of the cell in full."""
    import csv
    import json

    if fmt == "table":
        header = ["#", "cell", "fingerprint", "plan"]
        w = [max(a, len(h)) for a, h in zip(widths, header)]
        rule = "|" + "|".join("-" * (x + 2) for x in w) + "|"
        out.write(f"| {'#'.ljust(w[0])} | {'cell'.ljust(w[1])} | {'fingerprint'.ljust(w[2])} | "
                  f"{'plan'.ljust(w[3])} |\n{rule}\n")
        a, b, c, d = w

        def table_row(index: Any, label: Any, fp: str, decision: str, plan: str) -> None:
            out.write(f"| {str(index).ljust(a)} | {label.ljust(b)} | {fp.ljust(c)} | {plan.ljust(d)} |\n")
        return table_row
    if fmt == "csv":
        rows = csv.writer(out)
        rows.writerow(["index", "fingerprint", "decision", "plan", "cell", "values", "overrides"])

        def csv_row(index: Any, cell: Any, fp: str, decision: str, plan: str) -> None:
            if cell is not None:
                rows.writerow([index, fp, decision, plan, cell.label, json.dumps(cell.values, default=str),
                               " ".join(cell.overrides)])
        return csv_row
    first = [True]

    def json_row(index: Any, cell: Any, fp: str, decision: str, plan: str) -> None:
        if cell is None:
            out.write("[]\n" if first[0] else "\n]\n")
            return
        out.write(("[\n" if first[0] else ",\n") + json.dumps(
            {"index": index, "fingerprint": fp, "decision": decision, "plan": plan, "cell": cell.label,
             "values": cell.values, "overrides": cell.overrides}, default=str))
        first[0] = False
    return json_row


class QuietPipe:
    """``out`` until its reader goes away (``labrun sweep | head``), then nowhere.

    A sweep's cells keep running and finishing when the reader of its report has gone; the
    report then has nobody to reach, which is no reason to end the sweep with a traceback."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.gone = out, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.out.write(text)
            except BrokenPipeError:
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.out.flush()
            except BrokenPipeError:
                self._lost()

    def _lost(self) -> None:
        self.gone = True
        silence(self.out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


def silence(out: TextIO) -> None:
    """After a closed pipe: point ``out`` at /dev/null so the interpreter's final flush is quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, AttributeError):
        pass

