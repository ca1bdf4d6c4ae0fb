"""Per group: n, mean ± std, sem, t and bootstrap CIs; the table a paper prints first."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import stats, tables
from analysis.sections.base import MAX_FIGURE_GROUPS, Section, Table, slug
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.report import Analysis


class Summary(Section):
    """Sets ``a.summary``, best group first (within each condition): the order every other
    section shows groups in."""

    table: Table

    def compute(self, a: "Analysis") -> None:
        """With one run per group there is no spread to report, so refuse."""
        a.summary = stats.group_stats(a.runs, a.value_col, "group", confidence=a.opts.confidence,
                                      n_boot=a.opts.n_boot, seed=a.opts.seed)
        if int(a.summary["n"].max()) < 2:
            raise ConfigError(f"every group of {a.exps} has a single run (single seed): mean ± std and CIs need "
                              f"at least 2 seeds per group; run more seeds or group by fewer keys")
        a.warnings += _small_n_lines(a.summary)
        a.summary = _best_first(a)

    def tabulate(self, a: "Analysis") -> None:
        notes = tables.Footnotes()
        self.table = Table(_cells(a.summary, a.opts.confidence, notes), notes.lines)

    def text(self, a: "Analysis") -> list[str]:
        return ["", self.table.text, ""]

    def markdown(self, a: "Analysis") -> list[str]:
        return ["", self.table.markdown]

    def write(self, out: Path, a: "Analysis") -> list[str]:
        opts = a.opts
        caption = (f"{opts.metric} ({opts.value}; {a.better} is better): "
                   f"mean ± std over seeds, {opts.confidence * 100:g}% CIs")
        (out / "table.md").write_text(self.table.markdown)
        (out / "table.tex").write_text(self.table.latex(caption=caption, bold_row=0,
                                                        label="tab:" + opts.metric.replace(".", "-")))
        return ["table.md", "table.tex"]

    def figures(self, out: Path, a: "Analysis") -> list[str]:
        """Best vs final per group, while groups stay readable (<= MAX_FIGURE_GROUPS)."""
        from analysis import curves as cv

        ordered = list(a.summary["group"])
        if len(ordered) > MAX_FIGURE_GROUPS:
            return []
        metric, name = a.opts.metric, f"figures/best_vs_final_{slug(a.opts.metric)}.png"
        final = stats.group_stats(a.runs, f"final.{metric}", "group", n_boot=0)
        best = stats.group_stats(a.runs, f"best.{metric}", "group", n_boot=0)
        final = final.set_index("group").reindex(ordered).reset_index()
        best = best.set_index("group").reindex(ordered).reset_index()
        cv.plot_best_vs_final(final, best, metric, out / name)
        return [name]

    def document(self, a: "Analysis") -> dict[str, Any]:
        groups = json.loads(a.summary.to_json(orient="records"))
        for g in groups:    # why a group's CIs are null
            g["ci_note"] = stats.interval_note(g["n"], math.nan if g["std"] is None else g["std"])
        return {"groups": groups}


def _best_first(a: "Analysis") -> "pd.DataFrame":
    """Best mean first, conditions apart (each stratum's best first within it)."""
    summary = a.summary
    better = summary["mean"] if a.direction == "min" else -summary["mean"]
    by = ["_key"]
    if len(a.strata) > 1:
        first_condition = a.runs.drop_duplicates("group").set_index("group")[T.CONDITION].astype(str)
        summary["_cond"] = summary["group"].map(first_condition)
        by = ["_cond", "_key"]
    summary = summary.assign(_key=better).sort_values(by, kind="stable").drop(columns=by)
    return summary.reset_index(drop=True)


def _small_n_lines(summary: "pd.DataFrame") -> list[str]:
    """One line per kind of small group, naming a few, instead of one line per group."""
    lines = []
    for low, high, what in ((0, 1, "a single run: no std or CI"),
                            (2, 4, "fewer than 5 seeds: wide CIs, unreliable bootstrap CI")):
        part = summary[(summary["n"] >= low) & (summary["n"] <= high)]
        if len(part):
            names = ", ".join(f"{g} (n={n})" for g, n in zip(part["group"][:5], part["n"][:5]))
            more = f" and {len(part) - 5} more" if len(part) > 5 else ""
            lines.append(f"{len(part)} group(s) with {what}: {names}{more}")
    return lines


def _cells(summary: "pd.DataFrame", conf: float, notes: tables.Footnotes) -> "pd.DataFrame":
    import pandas as pd

    pct = f"{conf * 100:g}%"
    why = [stats.interval_note(n, s) for n, s in zip(summary["n"], summary["std"])]
    cells = pd.DataFrame({
        "group": summary["group"].astype(str),
        "n": summary["n"].astype(int).astype(str),
        "mean ± std": [tables.pm(m, s) for m, s in zip(summary["mean"], summary["std"])],
        "sem": [tables.num(x, 3) for x in summary["sem"]],
        f"{pct} CI (t)": [notes.mark(tables.interval(a, b), w)
                          for a, b, w in zip(summary["ci_low"], summary["ci_high"], why)],
        f"{pct} CI (bootstrap)": [notes.mark(tables.interval(a, b), w)
                                  for a, b, w in zip(summary["boot_low"], summary["boot_high"], why)],
    })
    if "mean_rank" in summary:   # the ranks section's column
        cells["mean rank"] = [tables.num(x, 3) for x in summary["mean_rank"]]
    return cells
