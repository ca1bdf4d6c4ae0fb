"""The sections of ``labrun analyze``, in the order every output shows them.

Each is a :class:`Section`: one statistic from its numbers to its text, Markdown, files,
figures and ``stats.json`` keys. A new statistic is a new module here and its class in
:data:`SECTIONS`; :mod:`analysis.report` only loops over them.
"""
from analysis.sections.base import CURVE_GROUPS, MAX_FIGURE_GROUPS, Section, Table
from analysis.sections.blocks import Blocks
from analysis.sections.curves import Curves
from analysis.sections.paired import Paired
from analysis.sections.ranks import Ranks
from analysis.sections.summary import Summary

SECTIONS: tuple[type[Section], ...] = (Summary, Ranks, Paired, Blocks, Curves)
"""Order matters twice: a section reads what earlier ones set on the Analysis (Ranks adds
the summary's mean rank, Paired tests each ranking's winner), and outputs follow it."""

__all__ = ["CURVE_GROUPS", "MAX_FIGURE_GROUPS", "SECTIONS", "Section", "Table",
           "Blocks", "Curves", "Paired", "Ranks", "Summary"]
