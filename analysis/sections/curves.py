"""Learning curves: mean ± std bands per group over the steps of the metric's history."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from analysis import query
from analysis.sections.base import CURVE_GROUPS, MAX_FIGURE_GROUPS, Section, slug

if TYPE_CHECKING:  # pragma: no cover
    from analysis.report import Analysis


class Curves(Section):
    """The histories are the one store read after the frame: only with ``--curves`` (the
    default), and only the shown groups' (the best CURVE_GROUPS of many)."""

    def compute(self, a: "Analysis") -> None:
        """Nothing until the figure: reading histories is the slow part, and refuses nothing."""

    def figures(self, out: Path, a: "Analysis") -> list[str]:
        from analysis import curves as cv

        if not a.opts.curves:
            return []
        metric, runs, ordered = a.opts.metric, a.runs, list(a.summary["group"])
        few = len(ordered) <= MAX_FIGURE_GROUPS
        shown = runs if few else runs[runs["group"].isin(ordered[:CURVE_GROUPS])]
        curves = query.curves_frame(shown["run_id"], [metric], tracking_uri=a.opts.tracking_uri)
        bands = cv.band_frame(curves, dict(zip(shown["run_id"], shown["group"])), metric)
        if bands["step"].nunique() <= 1:
            return []
        title = None if few else f"{metric}: best {CURVE_GROUPS} of {len(ordered)} groups, mean ± std"
        cv.plot_bands(bands, metric, out / "figures" / f"curves_{slug(metric)}.png",
                      order=ordered[:len(ordered) if few else CURVE_GROUPS], title=title)
        bands.to_csv(out / f"curves_{slug(metric)}.csv", index=False)
        return [f"figures/curves_{slug(metric)}.png", f"curves_{slug(metric)}.csv"]
