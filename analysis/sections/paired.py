"""Is the winner better than each rival, seed by seed? Paired t and Wilcoxon tests, Holm-adjusted."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import stats, tables
from analysis.sections.base import MAX_FIGURE_GROUPS, Section, Table, json_number
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.report import Analysis


class Paired(Section):
    """Sets ``a.paired``: the ``--compare`` pair, else each stratum's winner against the others."""

    holm_p: list[float]
    table: Table | None

    def compute(self, a: "Analysis") -> None:
        if a.opts.compare:
            _compare_pair(a)
        else:
            _winner_pairs(a)
        few_pairs = sorted({p.n for p in a.paired if any("cannot reach" in w for w in p.warnings)})
        if few_pairs:   # one line for all of them, not one per comparison
            a.warnings.append(f"paired tests over {'/'.join(map(str, few_pairs))} shared seeds: a two-sided "
                              "Wilcoxon test cannot reach p < 0.05 below 6 pairs (the paired t-test can)")
        self.holm_p = stats.holm([p.t_p for p in a.paired])

    def tabulate(self, a: "Analysis") -> None:
        notes = tables.Footnotes()
        self.table = Table(_cells(a.paired, self.holm_p, notes), notes.lines) if a.paired else None

    def text(self, a: "Analysis") -> list[str]:
        if self.table is None:
            return []
        what = "A − B" if a.opts.compare else "winner − other"
        over = "shared (block, seed) pairs" if a.within else "shared seeds"
        return [f"paired comparisons ({what}, over {over}):", self.table.text, ""]

    def markdown(self, a: "Analysis") -> list[str]:
        return [] if self.table is None else ["", "## Paired comparisons", "", self.table.markdown]

    def write(self, out: Path, a: "Analysis") -> list[str]:
        if self.table is None:
            return []
        (out / "paired.md").write_text(self.table.markdown)
        caption = f"Paired comparisons on {a.opts.metric}"
        (out / "paired.tex").write_text(self.table.latex(caption=caption))
        return ["paired.md", "paired.tex"]

    def document(self, a: "Analysis") -> dict[str, Any]:
        return {"paired": [{**p.as_dict(), "holm_p": json_number(h)} for p, h in zip(a.paired, self.holm_p)]}


def _compare_pair(a: "Analysis") -> None:
    """The user named the question: refuse a label that is not a group rather than test nothing."""
    groups = list(a.summary["group"])
    if len(a.opts.compare) != 2:
        raise ConfigError(f"--compare takes two group labels, got {len(a.opts.compare)}")
    for label in a.opts.compare:
        if label not in groups:
            raise ConfigError(f"--compare: no group {label!r}; groups: {', '.join(groups[:12])}")
    if T.SEED not in a.runs.columns:
        raise ConfigError(f"--compare needs runs with a {T.SEED} tag to pair them")
    _add_pair(a, _per_seed(a.runs, a.value_col), *a.opts.compare)


def _winner_pairs(a: "Analysis") -> None:
    """Is the winner better than each rival? Asked per stratum, as the ranks were."""
    by_mean = list(a.summary["group"])
    for name, r in a.rankings.items():
        if r.winner is None:
            continue
        table = _per_seed(a.strata[name], a.value_col)
        others = [g for g in by_mean if g != r.winner and g in table.columns]
        if len(others) > MAX_FIGURE_GROUPS - 1:   # the closest ones are the questions worth asking
            a.warnings.append(f"paired tests against the {MAX_FIGURE_GROUPS - 1} closest of {len(others)} "
                              "other groups only")
            others = others[:MAX_FIGURE_GROUPS - 1]
        for other in others:
            _add_pair(a, table, r.winner, other)


def _per_seed(runs: "pd.DataFrame", value_col: str) -> "pd.DataFrame":
    """Seeds x groups; repeats of one group and seed are averaged so that each seed is one pair.

    With blocks (methods compared within settings), a pair is one seed of one block."""
    index = ["block", T.SEED] if "block" in runs.columns else T.SEED
    return runs.pivot_table(index=index, columns="group", values=value_col, aggfunc="mean")


def _add_pair(a: "Analysis", table: "pd.DataFrame", x: str, y: str) -> None:
    both = table[[x, y]].dropna()
    p = stats.paired_comparison(both[x], both[y], labels=(x, y), confidence=a.opts.confidence)
    a.paired.append(p)
    a.warnings += [w for w in p.warnings if "cannot reach" not in w]   # summed up in compute


def _cells(paired: list[stats.Paired], holm_p: list[float], notes: tables.Footnotes) -> "pd.DataFrame":
    """A statistic that is absent is a dash marked with its reason; Holm's p shares the t-test's."""
    import pandas as pd

    def cell(text: str, p: stats.Paired, name: str) -> str:
        return notes.mark(text, p.notes.get(name))

    return pd.DataFrame({
        "comparison": [f"{p.a} − {p.b}" for p in paired],
        "n pairs": [str(p.n) for p in paired],
        "mean diff": [tables.num(p.mean_diff) for p in paired],
        "95% CI of diff": [cell(tables.interval(p.ci_low, p.ci_high), p, "ci") for p in paired],
        "paired t p": [cell(tables.pvalue(p.t_p), p, "t_p") for p in paired],
        "Holm p": [cell(tables.pvalue(h), p, "t_p") for p, h in zip(paired, holm_p)],
        "Wilcoxon p": [cell(tables.pvalue(p.wilcoxon_p), p, "wilcoxon_p") for p in paired],
        "effect d_z": [cell(tables.num(p.effect_size_dz, 3), p, "effect_size_dz") for p in paired],
    })
