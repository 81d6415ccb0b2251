"""A self-contained HTML report: markdown tables as <table>, PNG images embedded as base64 data
URIs, inline CSS, no external resources (it opens offline); written atomically.
"""
from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path

from pipeline.core.cache import atomic_path

log = logging.getLogger(__name__)

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
        ".gif": "image/gif", ".webp": "image/webp"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1a1a1a; background: #fff; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { margin-top: 1.6em; color: #234; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #bbb; padding: .3em .7em; }
th { background: #e8eef4; text-align: center; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f6f8fa; }
tr.best td { font-weight: 600; background: #e3f1e3; }
tr.noise td { background: #fff6d8; }
tr.worse td { color: #666; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 13px; }
"""


def _cells(line: str) -> list[str]:
    line = line.strip()
    return [cell.strip() for cell in line.strip("|").split("|")]


def _is_rule(line: str) -> bool:
    return all(set(cell) <= set("-: ") and "-" in cell for cell in _cells(line))


MARKS = {"best": "best", "within noise": "noise", "worse": "worse"}   # tables.row_statistics


def _row_tag(cells: list[str]) -> str:
    """<tr>, with a class when a cell holds a results table's mark (best / within noise / worse)."""
    mark = next((MARKS[c] for c in cells if c in MARKS), None)
    return f'<tr class="{mark}">' if mark else "<tr>"


def markdown_to_html(text: str) -> str:
    """Pipe tables -> <table> (first row the header, the |---| rule dropped; a row marked "best",
    "within noise" or "worse" gets that class: bold, shaded, greyed); lines starting
    with "- " -> <ul>; other paragraphs (split on blank lines) -> <p>. Text is HTML-escaped."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [row for row in block if not _is_rule(row)]
            head, body = (rows[0], rows[1:]) if len(block) > 1 and _is_rule(block[1]) else (None, rows)
            parts = ["<table>"]
            if head is not None:
                parts.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in _cells(head))
                             + "</tr></thead>")
            parts.append("<tbody>" + "".join(
                _row_tag(_cells(row)) + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row))
                + "</tr>" for row in body) + "</tbody></table>")
            out.append("".join(parts))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{html.escape(lines[i].strip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("|", "- ")):
                para.append(html.escape(lines[i].strip()))
                i += 1
            out.append("<p>" + "<br>\n".join(para) + "</p>")
        else:
            i += 1
    return "\n".join(out)


def _data_uri(path: str | os.PathLike) -> str:
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"image {path} has an unsupported type; known: {sorted(MIME)}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_html_report(path: str | os.PathLike, *, title: str, tables: dict[str, str],
                      images: dict[str, str | os.PathLike], notes: str = "") -> Path:
    """Write one self-contained HTML file: `title`, `notes` (markdown-lite text), a section per
    table (name -> markdown from pipeline.results.tables) and a figure per image (caption -> PNG path).
    Returns the path. Images are embedded, so the file can be copied or mailed on its own."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    if notes:
        body.append(f'<div class="notes">{markdown_to_html(notes)}</div>')
    for name, table in tables.items():
        body.append(f"<section><h2>{esc(name)}</h2>\n{markdown_to_html(table)}</section>")
    for caption, image in images.items():
        body.append(f'<figure><img alt="{esc(caption)}" src="{_data_uri(image)}">'
                    f"<figcaption>{esc(caption)}</figcaption></figure>")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d tables, %d images)", path, len(tables), len(images))
    return path
