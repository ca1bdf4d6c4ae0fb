"""Tables for three readers: a terminal, a Markdown page (MLflow UI, GitHub), a LaTeX paper.

Cells are strings built once (``cells``), so the three renderings always show the same
numbers. LaTeX uses booktabs rules and escapes what TeX treats as special. A statistic the
data cannot support is a dash with a footnote mark (:class:`Footnotes`), never a number.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        **{m: r"\textsuperscript{" + str(i + 1) + "}" for i, m in enumerate(_MARKS)}}


def num(x: float | None, digits: int = 4) -> str:
    """Compact number: ``0.01234``, ``1.235e+05``; blank for missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (int,)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.{digits}g}"


def pm(mean: float, std: float, digits: int = 4) -> str:
    return num(mean, digits) if std is None or math.isnan(std) else f"{num(mean, digits)} ± {num(std, 3)}"


def interval(low: float, high: float, digits: int = 4) -> str:
    if low is None or math.isnan(low):
        return "–"
    return f"[{num(low, digits)}, {num(high, digits)}]"


def pvalue(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


class Footnotes:
    """The notes of one table: each distinct note gets the next mark (¹, ², ...) on the
    cells it explains, and :attr:`lines` lists them under the table."""

    def __init__(self) -> None:
        self._marks: dict[str, str] = {}

    def mark(self, cell: str, note: str | None) -> str:
        """``cell`` with the mark of ``note`` (unchanged without one)."""
        if not note:
            return cell
        if note not in self._marks:
            self._marks[note] = _MARKS[len(self._marks)] if len(self._marks) < len(_MARKS) else f"[{len(self._marks) + 1}]"
        return cell + self._marks[note]

    @property
    def lines(self) -> list[str]:
        return [f"{m} {note}" for note, m in self._marks.items()]


def to_text(table: "pd.DataFrame") -> str:
    """Aligned plain-text table for the terminal (first column left, the rest right)."""
    return render([list(r) for r in table.itertuples(index=False)], list(table.columns))


def render(rows: Sequence[Sequence[object]], header: Sequence[object], *, align: str = "lr",
           boxed: bool = False, min_widths: Sequence[int] = ()) -> str:
    """The one fixed-width text table: the analysis tables and the benches' tables alike.

    ``align`` gives each column ``l`` or ``r``, its last letter standing for the columns
    after it (``"lr"``: first left, the rest right; ``"l"``: all left). ``boxed`` draws
    ``| a | b |`` rows, Markdown-compatible; ``min_widths`` keeps columns from shrinking
    below a width, so tables printed one after another line up. A column is never narrower
    than its widest cell.
    """
    head = [str(c) for c in header]
    body = [[str(c) for c in r] for r in rows]
    widths = [max([len(c), min_widths[i] if i < len(min_widths) else 0, *(len(r[i]) for r in body)])
              for i, c in enumerate(head)]
    sides = [align[min(i, len(align) - 1)] for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        text = (" | " if boxed else "  ").join(c.ljust(w) if a == "l" else c.rjust(w)
                                                for c, w, a in zip(cells, widths, sides))
        return f"| {text} |" if boxed else text

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in body)])


def to_markdown(table: "pd.DataFrame") -> str:
    cols = [str(c) for c in table.columns]
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(c) for c in cols) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|"]
    out += ["| " + " | ".join(esc(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(out) + "\n"


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$").replace("–", "--")


def to_latex(table: "pd.DataFrame", *, caption: str = "", label: str = "",
             bold_row: int | None = None, notes: Sequence[str] = ()) -> str:
    """A ``table`` environment with booktabs rules; ``bold_row`` marks the best method,
    ``notes`` (the footnotes of its marked cells) go under the rules."""
    cols = [str(c) for c in table.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
             r"\toprule", " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for i, r in enumerate(table.itertuples(index=False)):
        cells = [tex_escape(v) for v in r]
        if bold_row is not None and i == bold_row:
            cells = [r"\textbf{" + c + "}" for c in cells]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + r"\\ ".join(tex_escape(n) for n in notes) + "}")
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
