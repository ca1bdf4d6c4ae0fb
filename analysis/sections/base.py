"""The extension point of ``labrun analyze``: a section is one statistic, end to end.

A section computes its numbers from the shared :class:`analysis.report.Analysis`, builds
its table cells once the numbers are final, and contributes to every output: the printed
text, ``analysis.md``, its own ``.md``/``.tex`` files, figures and its keys of
``stats.json``. The pipeline only loops over sections, so a new statistic is a new
section and its name in :data:`analysis.sections.SECTIONS`, and no output can forget it.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import tables

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.report import Analysis

MAX_FIGURE_GROUPS = 30     # beyond this a per-group figure is unreadable
CURVE_GROUPS = 10          # with more groups, the curves show the best ones


@dataclass
class Table:
    """One table's cells and the footnotes of its marked cells, rendered at most once per format.

    The printed text, ``analysis.md`` and the ``*.md`` files show the very same rendering, so
    they cannot drift apart and nothing is formatted twice.
    """

    cells: "pd.DataFrame"
    notes: list[str] = field(default_factory=list)

    @cached_property
    def text(self) -> str:
        return tables.to_text(self.cells) + "".join("\n" + n for n in self.notes)

    @cached_property
    def markdown(self) -> str:
        return tables.to_markdown(self.cells) + ("\n" + "\n\n".join(self.notes) + "\n" if self.notes else "")

    def latex(self, **kw: Any) -> str:
        return tables.to_latex(self.cells, notes=self.notes, **kw)


class Section(abc.ABC):
    """One statistic of an analysis. Only :meth:`compute` is required; an output a section
    has nothing for stays empty."""

    @abc.abstractmethod
    def compute(self, a: "Analysis") -> None:
        """The numbers, kept on the section (or on ``a`` when later sections read them);
        raise ConfigError to refuse the input: nothing has been written yet."""

    def tabulate(self, a: "Analysis") -> None:
        """Build the cells, after every section has computed (a later one may add a column)."""

    def text(self, a: "Analysis") -> list[str]:
        """Lines of what ``labrun analyze`` prints."""
        return []

    def markdown(self, a: "Analysis") -> list[str]:
        """Lines of ``analysis.md``."""
        return []

    def write(self, out: Path, a: "Analysis") -> list[str]:
        """Own table files in ``out``; returns their paths relative to it."""
        return []

    def figures(self, out: Path, a: "Analysis") -> list[str]:
        """Figures (and their data) in ``out``; returns their paths relative to it."""
        return []

    def document(self, a: "Analysis") -> dict[str, Any]:
        """Keys of ``stats.json``: every number, for scripts rather than readers."""
        return {}


def json_number(x: Any) -> Any:
    """A float for JSON (NaN as null); what is no number as its text."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return None if math.isnan(x) else x


def slug(metric: str) -> str:
    return metric.replace(".", "_")
