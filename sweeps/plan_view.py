"""``labrun sweep --dry-run``: the plan as a table, CSV or JSON, streamed.

A plan of a million cells must not be held in memory to be shown: the rows are made twice
from the expansion's index (a pass for the counts in the head line, a pass for the rows),
labels are joined from per-value pieces, and what the store holds for a cell is one
dictionary look-up in the ledger loaded once. A reader that closes the pipe early
(``| head``) ends it quietly.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Iterator, TextIO

from sweeps.matrix import Cell, Expansion
from sweeps.progress import Labels, silence, summarize
from sweeps.spec import SweepSpec
from tracking.exits import EXIT_FINISHED

DECISIONS = ("done", "todo", "elsewhere", "exhausted")


def head_line(spec: SweepSpec, count: int, experiment: str, n: dict[str, int], launcher: str) -> str:
    """``sweep 'x': 12 cells of 'toy' in experiment 'toy' (8 todo, 4 done); launcher local, ...``"""
    return (f"sweep {spec.name!r}: {count} cells of {spec.entry!r} in experiment "
            f"{experiment!r} ({summarize((k, n[k]) for k in n)}); "
            f"launcher {launcher}, parallel {spec.parallel}")


class PlanView:
    """One dry run's display of ``source`` (an :class:`Expansion` or a list of cells)."""

    def __init__(self, spec: SweepSpec, source: Expansion | list[Cell], labels: Labels, ledger: Any,
                 out: TextIO) -> None:
        self.spec, self.source, self.labels, self.ledger, self.out = spec, source, labels, ledger, out

    def show(self, fmt: str, head: Callable[[int, dict[str, int]], str]) -> int:
        try:
            return self._show(fmt, head)
        except BrokenPipeError:
            silence(self.out)
            return EXIT_FINISHED

    def _show(self, fmt: str, head: Callable[[int, dict[str, int]], str]) -> int:
        from sweeps.progress import plan_writer

        n, count, plan_width = dict.fromkeys(DECISIONS, 0), 0, 4
        for fp in self._fingerprints():  # pass 1: the counts for the head line, nothing kept
            decision, plan = self.decide(fp)
            n[decision] += 1
            count += 1
            plan_width = max(plan_width, len(plan))
        print(head(count, n), file=sys.stderr if fmt != "table" else self.out, flush=True)
        if fmt == "table":
            write = plan_writer(fmt, self.out, (len(str(count)), self._label_width(), 16, plan_width))
            for index, label, fp in self._label_rows():  # pass 2: the rows
                write(index, label, fp, *self.decide(fp))
            print("(dry run: nothing launched)", file=self.out, flush=True)
        else:
            write = plan_writer(fmt, self.out, ())
            for cell in self._cells():
                write(cell.index, cell, cell.fingerprint, *self.decide(cell.fingerprint))
            write(None, None, "", "", "")
        return EXIT_FINISHED

    def decide(self, fp: str) -> tuple[str, str]:
        state = self.ledger.states.get(fp)
        if state is None:  # nothing in the store: the common case, kept cheap
            return "todo", "run"
        decision = state.decision(self.spec.retries)
        return decision, describe(decision, state, self.spec.retries)

    def _cells(self) -> Iterable[Cell]:
        return self.source.cells() if isinstance(self.source, Expansion) else self.source

    def _fingerprints(self) -> Iterator[str]:
        if isinstance(self.source, Expansion):
            return (fp for _, _, fp in self.source.index_rows())
        return (c.fingerprint for c in self.source)

    def _label_rows(self) -> Iterator[tuple[int, str, str]]:
        """``(index, label, fingerprint)`` per cell, labels joined from per-value pieces."""
        if not isinstance(self.source, Expansion) or not self.labels.keys:
            for cell in self._cells():
                yield cell.index, self.labels(cell), cell.fingerprint
            return
        frags, order = self.labels.fragments(self.spec, self.source.axes)
        for n, idx, fp in self.source.index_rows():
            yield n, " ".join([f for a in order if (f := frags[a][idx[a]])]) or "base", fp

    def _label_width(self) -> int:
        if not isinstance(self.source, Expansion) or not self.labels.keys:
            return max([len(self.labels(c)) for c in self._cells()] + [4])
        frags, _ = self.labels.fragments(self.spec, self.source.axes)
        longest = [max(map(len, rows)) for rows in frags if any(rows)]
        return max(4, sum(longest) + len(longest) - 1)


def describe(decision: str, state: Any, retries: int) -> str:
    if decision == "done":
        return f"skip (FINISHED {state.finished.run_id[:12]})"
    if decision == "elsewhere":
        return f"running elsewhere ({state.live.run_id[:12]}): wait"
    if decision == "exhausted":
        return f"failed {state.failures}x > retries={retries}: not run (raise retries to retry)"
    if state.attempts:
        kinds = summarize((s, sum(a.status == s or (s == "stale" and a.stale) for a in state.attempts))
                          for s in ("FAILED", "KILLED", "stale"))
        return f"rerun (earlier: {kinds})"
    return "run"


__all__ = ["DECISIONS", "PlanView", "describe", "head_line"]
