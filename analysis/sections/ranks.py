"""Does the ranking hold from seed to seed? Per-seed ranks and Kendall's W, per condition."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from analysis import tables
from analysis.sections.base import MAX_FIGURE_GROUPS, Section, Table, json_number, slug
from tracking import tags as T

MAX_PAIRWISE = 50          # groups in a pairwise matrix of stats.json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.ranking import Ranking
    from analysis.report import Analysis


class Ranked(NamedTuple):
    """One stratum's ranking as every output shows it."""

    name: str                  # the stratum: "all", or a condition
    ranking: "Ranking"
    line: str                  # the rank-consistency sentence
    table: Table | None        # per-seed ranks; None when no seed ranks every group


class Ranks(Section):
    """Sets ``a.rankings`` (stratum -> Ranking) and the summary's ``mean_rank`` column.

    A method may win under one condition and lose under another; pooled ranks would hide
    it, so each condition (``a.strata``) is ranked on its own.
    """

    blocks: list[Ranked]

    def compute(self, a: "Analysis") -> None:
        from analysis import ranking as rk

        if T.SEED not in a.runs.columns:
            a.warnings.append(f"runs have no {T.SEED} tag: no per-seed ranking or paired tests")
        else:
            multi = len(a.strata) > 1
            for name, part in a.strata.items():
                if part["group"].nunique() >= 2:
                    r = a.rankings[name] = rk.rank_methods(part, a.value_col, item="group", block=T.SEED,
                                                           direction=a.direction)
                    a.warnings += [f"[{name}] {w}" if multi else w for w in r.warnings]
        mean_rank: dict[str, float] = {}
        for r in a.rankings.values():
            mean_rank.update({k: float(v) for k, v in r.mean_rank.items()})
        a.summary["mean_rank"] = a.summary["group"].map(mean_rank)

    def tabulate(self, a: "Analysis") -> None:
        multi = len(a.rankings) > 1
        self.blocks = [Ranked(name, r, _consistency_line(name, r, multi), Table(_cells(r)) if r.n_seeds else None)
                       for name, r in a.rankings.items()]

    def text(self, a: "Analysis") -> list[str]:
        lines = []
        for block in self.blocks:
            lines.append(block.line)
            if block.table is not None:
                lines += [block.table.text, ""]
        return lines

    def markdown(self, a: "Analysis") -> list[str]:
        md = []
        for block in self.blocks:
            md.append(block.line)
            if block.table is not None:
                md += ["", block.table.markdown]
        return md

    def write(self, out: Path, a: "Analysis") -> list[str]:
        if not self.blocks:
            return []
        rank_md, rank_tex = [], []
        for block in self.blocks:
            rank_md.append(block.line + "\n")
            if block.table is not None:
                w = tables.num(block.ranking.kendall_w, 3)
                rank_md.append(block.table.markdown)
                rank_tex.append(block.table.latex(caption=f"Per-seed ranks on {a.opts.metric} "
                                                          f"({block.name}); Kendall's W = {w}"))
        (out / "ranks.md").write_text("\n".join(rank_md))
        (out / "ranks.tex").write_text("\n".join(rank_tex))
        return ["ranks.md", "ranks.tex"]

    def figures(self, out: Path, a: "Analysis") -> list[str]:
        """A heatmap of the per-seed ranks, while it stays readable."""
        from analysis import curves as cv

        written = []
        for name, r in a.rankings.items():
            if r.n_seeds and r.n_methods <= MAX_FIGURE_GROUPS and r.n_seeds <= 60:
                suffix = "" if len(a.rankings) == 1 else "_" + "".join(ch if ch.isalnum() else "_" for ch in name)
                path = f"figures/ranks_{slug(a.opts.metric)}{suffix}.png"
                cv.plot_rank_heatmap(r.ranks[list(r.mean_rank.sort_values(kind="stable").index)], a.opts.metric,
                                     out / path)
                written.append(path)
        return written

    def document(self, a: "Analysis") -> dict[str, Any]:
        f = json_number
        return {"rankings": {name: {"kendall_w": f(r.kendall_w), "chi2": f(r.chi2), "p_value": f(r.p_value),
                                    "note": r.note, "winner": r.winner, "winner_wins": r.winner_wins, "n_seeds": r.n_seeds,
                                    "mean_rank": {k: f(v) for k, v in r.mean_rank.items()},
                                    **_pairwise(r)}
                             for name, r in a.rankings.items()}}


def _pairwise(r: "Ranking") -> dict[str, Any]:
    """The win-rate matrix, among the best :data:`MAX_PAIRWISE` groups only: it grows as the
    square of the groups (2,000 groups made a 148 MB stats.json)."""
    import json

    keys = list(r.mean_rank.sort_values(kind="stable").index[:MAX_PAIRWISE])
    doc: dict[str, Any] = {"pairwise_win_rate": json.loads(r.pairwise.loc[keys, keys].to_json())}
    if r.n_methods > MAX_PAIRWISE:
        doc["pairwise_note"] = f"among the {MAX_PAIRWISE} best of {r.n_methods} groups by mean rank"
    return doc


def _cells(r: "Ranking") -> "pd.DataFrame":
    t = r.table()
    t.insert(0, "group", t.index.astype(str))
    t["mean_rank"] = [tables.num(x, 3) for x in t["mean_rank"]]
    for c in t.columns[3:]:
        t[c] = [tables.num(float(x)) for x in t[c]]
    return t.rename(columns={"mean_rank": "mean rank", "wins": "rank-1 seeds"}).reset_index(drop=True).astype(str)


def _consistency_line(name: str, r: "Ranking", multi: bool) -> str:
    head = f"[{name}] " if multi else ""
    if r.n_seeds < 2:
        return f"{head}rank consistency: needs 2+ seeds shared by every group (have {r.n_seeds})"
    if r.note:
        return (f"{head}rank consistency over {r.n_seeds} seeds x {r.n_methods} groups: Kendall's W and its p "
                f"undefined ({r.note}); winner {r.winner} is best on {r.winner_wins}/{r.n_seeds} seeds")
    return (f"{head}rank consistency over {r.n_seeds} seeds x {r.n_methods} groups: Kendall's W = "
            f"{tables.num(r.kendall_w, 3)} (chi2 = {tables.num(r.chi2, 3)}, p = {tables.pvalue(r.p_value)}); "
            f"winner {r.winner} is best on {r.winner_wins}/{r.n_seeds} seeds")
