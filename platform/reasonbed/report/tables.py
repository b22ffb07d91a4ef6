"""Tables as data, rendered three ways: Markdown (report.md), HTML (report.html), LaTeX (results.tex).

A `Table` holds a title, column names, rows of cells and notes printed under it. A cell is plain text
(`str`), code (`Code`: trial ids, hyperparameters, hashes) or a results cell (`selection.Stat`,
written by `selection.format_mean`: `mean ± se`, `n=1`, or `X`). Each renderer escapes for its own
target, so no table is ever written in one format and re-parsed into another. Notes are one line of
text each, with `code` and **bold** inline marks that every renderer understands.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from reasonbed.tune.selection import Stat, format_mean


@dataclass(frozen=True)
class Code:
    """A cell shown as code."""

    text: str


Cell = str | Code | Stat
_INLINE = re.compile(r"(`[^`]*`|\*\*[^*]+\*\*)")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def inline_html(text: str) -> str:
    """A note's `code` and **bold** as HTML, everything else escaped."""
    out = []
    for part in _INLINE.split(text):
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        elif part.startswith("**") and part.endswith("**") and len(part) >= 4:
            out.append(f"<strong>{html.escape(part[2:-2])}</strong>")
        else:
            out.append(html.escape(part))
    return "".join(out)


def inline_latex(text: str) -> str:
    """A note's `code` and **bold** as LaTeX, everything else escaped."""
    out = []
    for part in _INLINE.split(text):
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(r"\texttt{" + latex_escape(part[1:-1]) + "}")
        elif part.startswith("**") and part.endswith("**") and len(part) >= 4:
            out.append(r"\textbf{" + latex_escape(part[2:-2]) + "}")
        else:
            out.append(latex_escape(part))
    return "".join(out)


def cell_markdown(cell: Cell) -> str:
    if isinstance(cell, Stat):
        return format_mean(cell)
    if isinstance(cell, Code):
        return f"`{_md_escape(cell.text).replace('`', '')}`"
    return _md_escape(cell)


def cell_html(cell: Cell) -> str:
    if isinstance(cell, Stat):
        return html.escape(format_mean(cell))
    if isinstance(cell, Code):
        return f"<code>{html.escape(cell.text)}</code>"
    return html.escape(str(cell))


def cell_latex(cell: Cell) -> str:
    if isinstance(cell, Stat):
        return format_mean(cell, latex=True)
    if isinstance(cell, Code):
        return r"\texttt{" + latex_escape(cell.text) + "}"
    return latex_escape(cell)


@dataclass
class Table:
    """A titled table with notes; rows hold one cell per column."""

    columns: list[str]
    rows: list[list[Cell]]
    title: str = ""  # shown as a level-3 heading (Markdown, HTML) or a subsection (LaTeX)
    notes: list[str] = field(default_factory=list)  # lines under the table, with `code` / **bold** marks

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: a row has {len(row)} cells for {len(self.columns)} "
                                 f"columns ({self.columns}): {row}")

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""] if self.title else []
        lines += ["| " + " | ".join(_md_escape(c) for c in self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell_markdown(cell) for cell in row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [f"<h3>{html.escape(self.title)}</h3>"] if self.title else []
        head = "".join(f"<th>{html.escape(column)}</th>" for column in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{cell_html(cell)}</td>" for cell in row) + "</tr>" for row in self.rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if self.notes:
            parts.append("<ul class=\"notes\">" + "".join(f"<li>{inline_html(n)}</li>" for n in self.notes) + "</ul>")
        return "\n".join(parts)

    def latex(self) -> str:
        """A booktabs table in DomainBed's results.tex layout (collect_results.print_table)."""
        lines = [r"\subsection{" + latex_escape(self.title) + "}"] if self.title else []
        lines += [r"\begin{center}", r"\adjustbox{max width=\textwidth}{%",
                  r"\begin{tabular}{l" + "c" * (len(self.columns) - 1) + "}", r"\toprule",
                  " & ".join(r"\textbf{" + latex_escape(column) + "}" for column in self.columns) + r" \\",
                  r"\midrule"]
        lines += [" & ".join(cell_latex(cell) for cell in row) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{center}"]
        if self.notes:
            lines += [r"\begin{itemize}", *(r"\item " + inline_latex(note) for note in self.notes), r"\end{itemize}"]
        return "\n".join(lines)
