"""A report as a list of blocks, rendered to Markdown, self-contained HTML and LaTeX.

A block is Markdown text (`str`: headings, paragraphs, lists, notes), a `tables.Table` or an
`Image` (a PNG under the report folder). Markdown joins them (images as `![alt](plots/x.png)`);
HTML converts the text blocks with the `markdown` package, renders each table from its rows and
inlines each image as a base64 data URI, so the page loads nothing from anywhere; LaTeX writes the
tables alone, as a standalone document like DomainBed's `results.tex`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import markdown as markdown_lib

from reasonbed.report.tables import Table, latex_escape

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0 .3em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td code { word-break: break-all; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
ul.notes { font-size: 0.88em; color: #444; margin-top: 0; }
blockquote { border-left: 4px solid #d33; margin: 1em 0; padding: .3em 1em; background: #fff4f4; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
"""


@dataclass(frozen=True)
class Image:
    """A PNG figure, `path` relative to the report folder."""

    path: Path
    alt: str


Block = str | Table | Image


def to_markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Table):
            parts.append(block.markdown())
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.path.as_posix()})")
        else:
            parts.append(block.strip("\n"))
    return "\n\n".join(parts) + "\n"


def _image_html(image: Image, base_dir: Path) -> str:
    data = base64.b64encode((base_dir / image.path).read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(image.alt)}"></p>'


def to_html(blocks: Sequence[Block], base_dir: str | Path, title: str) -> str:
    """The whole HTML page; images are read from `base_dir` and inlined."""
    base_dir = Path(base_dir)
    body = []
    for block in blocks:
        if isinstance(block, Table):
            body.append(block.html())
        elif isinstance(block, Image):
            body.append(_image_html(block, base_dir))
        else:
            body.append(markdown_lib.markdown(block, output_format="html"))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def to_latex(tables: Sequence[Table], title: str) -> str:
    """A standalone LaTeX document of `tables` (booktabs + adjustbox, as DomainBed's results.tex)."""
    lines = [r"\documentclass{article}", r"\usepackage{booktabs}", r"\usepackage{adjustbox}",
             r"\usepackage[utf8]{inputenc}", r"\begin{document}", r"\section{" + latex_escape(title) + "}"]
    for table in tables:
        lines += ["", table.latex()]
    lines += ["", r"\end{document}", ""]
    return "\n".join(lines)
