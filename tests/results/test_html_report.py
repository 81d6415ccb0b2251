"""HTML report: parses, holds the tables and embedded images, references nothing external, is
written atomically; and headless Chromium renders it (a non-blank screenshot, the DOM holds both)."""
from __future__ import annotations

import base64
import html.parser
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.results.html import markdown_to_html, write_html_report
from pipeline.results.plots import plot_per_class

CHROMIUM = Path("/usr/bin/chromium")
TABLE = ("| method (hmdb51, accuracy, %) | sp1 | sp2 | mean |\n|---|---|---|---|\n"
         "| SO+MaxExp | 50.00 | 70.00 | 60.00 ± 14.14 |\n"
         "| TO+MaxExp+IDT | 55.00 | 65.00 | 60.00 ± 7.07 |\n"
         "\nUnscored videos (missing features or descriptors):\n\n"
         "- SO+MaxExp: sp1 scored 70/30, missing 2/1\n")


class Collector(html.parser.HTMLParser):
    """Tags, attributes and text of a page; tables as lists of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.tables, self.text, self._cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        # nothing external: no links, every source an embedded data URI
        assert "href" not in attrs and attrs.get("src", "data:").startswith("data:"), attrs

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell += data


@pytest.fixture
def report(tmp_path) -> Path:
    classes = [f"class_{i}" for i in range(8)]
    per_class = {c: float(v) for c, v in zip(classes, np.linspace(0.2, 0.9, 8))}
    png = plot_per_class(dict(method="SO+MaxExp", split="sp1", metric="accuracy", per_class=per_class),
                         tmp_path / "per_class.png")
    return write_html_report(tmp_path / "out" / "report.html", title="HMDB51 <results>",
                             tables={"hmdb51 (splits, accuracy)": TABLE},
                             images={"per-class accuracy, sp1": png}, notes="Demo run.\nSecond line.")


def test_report_parses_and_holds_tables_and_images(report, tmp_path):
    page = report.read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(page)
    assert parser.tables == [[["method (hmdb51, accuracy, %)", "sp1", "sp2", "mean"],
                              ["SO+MaxExp", "50.00", "70.00", "60.00 ± 14.14"],
                              ["TO+MaxExp+IDT", "55.00", "65.00", "60.00 ± 7.07"]]]
    (image,) = parser.images
    assert image["alt"] == "per-class accuracy, sp1"
    prefix = "data:image/png;base64,"
    assert image["src"].startswith(prefix)
    assert base64.b64decode(image["src"][len(prefix):]) == (tmp_path / "per_class.png").read_bytes()
    text = "".join(parser.text)
    assert "HMDB51 <results>" in text and "missing 2/1" in text and "Second line." in text
    assert "<style>" in page and "<link" not in page and "<script" not in page
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]      # no temporary left


def test_markdown_to_html_escapes():
    out = markdown_to_html("| a<b | c |\n|---|---|\n| <i>x</i> | 1 |\n\nplain & simple")
    assert "<th>a&lt;b</th>" in out and "<td>&lt;i&gt;x&lt;/i&gt;</td>" in out
    assert "<p>plain &amp; simple</p>" in out


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent; install Debian's chromium package "
                    f"(apt-get install -y chromium) to render the report")
    from matplotlib.image import imread
    flags = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000"]
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    env = dict(os.environ, HOME=str(tmp_path))
    run = subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, text=True,
                         timeout=120, env=env)
    assert shot.is_file(), f"no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.var() > 1e-3, "the rendered page is blank"
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120,
                         env=env).stdout
    parser = Collector()
    parser.feed(dom)
    assert len(parser.tables) == 1 and parser.tables[0][1][0] == "SO+MaxExp"
    assert len(parser.images) == 1 and parser.images[0]["src"].startswith("data:image/png;base64,")


def test_marked_rows_get_a_class():
    text = ("| method | p vs best | vs best |\n|---|---|---|\n| A |  | best |\n| B | 0.6 | within noise |\n"
            "| C | 0.001 | worse |\n| D | | |\n")
    out = markdown_to_html(text)
    assert '<tr class="best"><td>A</td>' in out and '<tr class="noise"><td>B</td>' in out
    assert '<tr class="worse"><td>C</td>' in out and "<tr><td>D</td>" in out
