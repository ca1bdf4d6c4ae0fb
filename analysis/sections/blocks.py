"""Across blocks: average ranks, Friedman/Iman–Davenport, Nemenyi and Holm vs a control, a CD diagram."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import tables
from analysis.sections.base import Section, Table, json_number, slug

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.blocked import BlockedComparison
    from analysis.report import Analysis

MAX_BLOCK_ROWS = 20        # the per-block table printed; every block is in blocks.csv


class Blocks(Section):
    """Only when methods are compared within blocks (``a.within``): what holds across them."""

    result: "BlockedComparison | None" = None
    table: Table | None = None

    def compute(self, a: "Analysis") -> None:
        from analysis.blocked import compare_blocks

        if not a.within:
            return
        self.result = compare_blocks(a.runs, a.value_col, direction=a.direction, control=a.opts.control)
        if self.result.dropped_blocks:
            a.warnings.append(f"{len(self.result.dropped_blocks)} block(s) lack a method and are left out of the "
                              f"blocked comparison: {', '.join(self.result.dropped_blocks[:5])}")

    def tabulate(self, a: "Analysis") -> None:
        if self.result is not None:
            self.table = Table(_cells(self.result))

    def text(self, a: "Analysis") -> list[str]:
        if self.result is None:
            return []
        return [*_lines(self.result), self.table.text, ""]

    def markdown(self, a: "Analysis") -> list[str]:
        if self.result is None:
            return []
        return ["", "## Methods across blocks", "", *(ln + "  " for ln in _lines(self.result)), "",
                self.table.markdown]

    def write(self, out: Path, a: "Analysis") -> list[str]:
        if self.result is None:
            return []
        r = self.result
        per_block = r.values.add_prefix("value ").join(r.ranks.add_prefix("rank "))
        per_block.to_csv(out / "blocks.csv")
        shown = per_block.head(MAX_BLOCK_ROWS).map(lambda v: tables.num(float(v)))
        more = f"\n\n{r.n_blocks - MAX_BLOCK_ROWS} more blocks in blocks.csv\n" if r.n_blocks > MAX_BLOCK_ROWS else ""
        (out / "blocks.md").write_text("\n".join(_lines(r)) + "\n\n" + self.table.markdown + "\n\n"
                                       + tables.to_markdown(shown.reset_index().astype(str)) + more)
        (out / "blocks.tex").write_text(self.table.latex(caption=f"Average ranks over {r.n_blocks} blocks on "
                                                                 f"{a.opts.metric} (Friedman/Nemenyi/Holm)"))
        return ["blocks.csv", "blocks.md", "blocks.tex"]

    def figures(self, out: Path, a: "Analysis") -> list[str]:
        from analysis import curves as cv

        r = self.result
        if r is None or r.note:
            return []
        path = f"figures/cd_{slug(a.opts.metric)}.png"
        cv.plot_cd_diagram(r.mean_rank, r.nemenyi_p, r.cd, a.opts.metric, r.n_blocks, out / path)
        return [path]

    def document(self, a: "Analysis") -> dict[str, Any]:
        r = self.result
        if r is None:
            return {}
        f = json_number
        return {"blocked": {
            "within": a.within, "n_blocks": r.n_blocks, "methods": list(r.mean_rank.index), "note": r.note,
            "mean_rank": {k: f(v) for k, v in r.mean_rank.items()},
            "friedman": {"chi2": f(r.friedman_chi2), "p_value": f(r.friedman_p)},
            "iman_davenport": {"f": f(r.iman_davenport_f), "p_value": f(r.iman_davenport_p)},
            "nemenyi": {"alpha": 0.05, "cd": f(r.cd),
                        "p_value": {i: {j: f(r.nemenyi_p.at[i, j]) for j in r.nemenyi_p.columns if j != i}
                                    for i in r.nemenyi_p.index}},
            "holm_vs_control": {"control": r.control,
                                "tests": {m: {"z": f(row.z), "p_value": f(row.p), "holm_p": f(row.holm_p)}
                                          for m, row in r.holm.iterrows()}},
            "dropped_blocks": len(r.dropped_blocks)}}


def _lines(r: "BlockedComparison") -> list[str]:
    """The verdict in words: the test, then which methods one CD does not separate."""
    from analysis.blocked import cliques

    head = f"methods across {r.n_blocks} blocks (mean over seeds within each block, ranked; 1 = best):"
    if r.note:
        return [head, f"  Friedman test undefined: {r.note}"]
    same = cliques(r.mean_rank, r.cd)
    tied = "; ".join("{" + ", ".join(c) + "}" for c in same) if same else "none"
    return [head,
            f"  Friedman chi2 = {tables.num(r.friedman_chi2, 3)} ({_p(r.friedman_p)}); "
            f"Iman–Davenport F = {tables.num(r.iman_davenport_f, 3)} ({_p(r.iman_davenport_p)})",
            f"  Nemenyi CD (alpha 0.05) = {tables.num(r.cd, 3)}; not separated by it: {tied}"]


def _p(p: float) -> str:
    text = tables.pvalue(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _cells(r: "BlockedComparison") -> "pd.DataFrame":
    import pandas as pd

    holm = r.holm
    rows = []
    for m, rank in r.mean_rank.items():
        is_control = m == r.control
        rows.append({"method": m + (" (control)" if is_control else ""), "mean rank": tables.num(rank, 3),
                     "rank-1 blocks": str(int(r.ranks[m].eq(r.ranks.min(axis=1)).sum())),
                     "Nemenyi p vs control": "—" if is_control or r.note else tables.pvalue(r.nemenyi_p.at[m, r.control]),
                     "Holm p vs control": "—" if is_control or m not in holm.index else tables.pvalue(holm.at[m, "holm_p"])})
    return pd.DataFrame(rows).astype(str)
