"""`make report` (stages.report, pipeline.results.report) on a ledger built by the cheap stages on a
tiny folder dataset with the counting fake backbone: the report holds the paper table, the sweep
and attention plots as embedded PNGs, the tables as markdown and CSV; making it runs no stage."""
from __future__ import annotations

import base64
import csv
import io
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core.settings import parse_overrides
from pipeline.results import frames
from pipeline.results.configurations import Configuration, family, settings, sweep_lines
from pipeline.pooling.descriptors import compute_descriptors
from pipeline.learn.evaluate import evaluate
from pipeline.extract.features import extract_features
from pipeline.results.ledger import Ledger
from pipeline.learn.train import train
from stages import report as report_stage
from stages.common import CONFIGS
from tests.fakes import CountingBackbone

FAKE = ["dataset=folder", "backbone=fake_counting", "layer=stats", "weights=none",
        "streams=('rgb',)", "lengths=(4, 8)", "strides=(2, 4)", "steps=((1, 2), (1,))", "size=32",
        "device=cpu", "max_epochs=3", "patience=2", "weight_decay=0", "epn=maxexp",
        "dataset_options={'folds': 2}"]
# (descriptor and head settings) of each evaluated configuration: a sweep over d' (SO+MaxExp at
# 4 and 8) and one over Gamma's parameter at d' = 8 (0.25 and the default)
EVALUATED = [("sketch_dim=4",), ("sketch_dim=8",), ("sketch_dim=8", "epn=gamma"),
             ("sketch_dim=8", "epn=gamma", "epn_params={'gamma': 0.25}")]
SWEEP_IMAGES = ("sweep_sketch_dim.png", "sweep_gamma_gamma.png")


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory) -> tuple[list[str], Path, Path]:
    """(key=value arguments, the dataset root, the cache root) with stage 1, four evaluations and
    one trained HoT model in the cache and the ledger."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    cache = tmp / "cache"
    args = [f"root={str(root)!r}", f"cache_root={str(cache)!r}", *FAKE]
    extract_features(parse_overrides(args, *CONFIGS)[0])
    for extra in EVALUATED:
        e, d, v = parse_overrides([*args, *extra], *CONFIGS)[:3]
        compute_descriptors(e, d)
        evaluate(e, d, v)
    e, d, v, _, t = parse_overrides([*args, "sketch_dim=8", "attention=hot"], *CONFIGS)
    train(e, d, v, t)
    return args, root, cache


def snapshot(cache: Path) -> dict[str, int]:
    """Every file and folder of the cache outside report/ and the ledger, with its mtime."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*")
            if p.relative_to(cache).parts[0] != "report" and not p.name.startswith("ledger.sqlite")}


def images_of(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def make_report(args: list[str], capsys, *extra: str) -> tuple[int, str]:
    code = report_stage.main([*args, *extra])
    return code, capsys.readouterr().out


def test_report_holds_tables_and_plots_and_runs_no_stage(built, capsys):
    args, root, cache = built
    ledger = Ledger(cache / "ledger.sqlite")
    n_records = len(ledger.records())
    before = snapshot(cache)
    CountingBackbone.calls = 0
    code, out = make_report(args, capsys)
    assert code == 0
    path = Path(out.strip().splitlines()[-1])                  # the report's path, printed last
    assert path == cache / "report" / "folder-persons" / "report.html" and path.is_file()
    assert CountingBackbone.calls == 0 and len(ledger.records()) == n_records
    assert snapshot(cache) == before                           # nothing written outside report/
    ledger_files = {p.name for p in cache.glob("ledger.sqlite*")}
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        {Path(k).parts[0] for k in before} | {"report"} | ledger_files)

    page = path.read_text()
    methods = ["SO+MaxExp", "SO+Gamma", "SO+MaxExp+Att"]
    att = [r["score"] for r in ledger.records() if r["method"] == "SO+MaxExp+Att"]
    assert f"{100 * sum(att) / len(att):.2f}" in page         # the scores come from the ledger
    for name in methods + ["f1", "f2", "<table", "configurations"]:
        assert name in page, name
    pngs = images_of(page)
    images = sorted(p.name for p in (path.parent / "images").iterdir())
    assert images == sorted(["confusion_f1.png", "confusion_f2.png", "per_class.png",
                             "group_attention_f1.png", "group_attention_f2.png",
                             "window_attention_hot.png", *SWEEP_IMAGES])
    assert len(pngs) == len(images) and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert sum("test videos of each class" in c for c in captions) == 2
    assert sum("attention over the windows of" in c for c in captions) == 1

    markdown = (path.parent / "tables.md").read_text()
    assert all(m in markdown for m in methods) and "| f1 | f2 |" in markdown
    rows = list(csv.reader(io.StringIO(
        (path.parent / "results.csv").read_text())))
    assert rows[0][:3] == ["method", "f1", "f2"] and len(rows) == 1 + len(EVALUATED) + 1
    traced = list(csv.reader(io.StringIO((path.parent / "configurations.csv").read_text())))
    assert all(r[4].startswith(("evaluate/", "train/")) for r in traced[1:])

    CountingBackbone.calls = 0                                 # again: the same report
    assert make_report(args, capsys)[0] == 0 and snapshot(cache) == before
    assert sorted(p.name for p in (path.parent / "images").iterdir()) == images


def test_report_video_chooses_the_video_and_an_unknown_one_is_an_error(built, capsys):
    args, root, cache = built
    video = "move_up/move_up_002.avi"
    code, out = make_report(args, capsys, f"report_video={video}")
    assert code == 0
    page = Path(out.strip().splitlines()[-1]).read_text()
    assert f"attention over the windows of {video}" in page
    assert make_report(args, capsys, "report_video=move_up/nothing.avi")[0] == 2
    assert make_report(args, capsys, "report_video=")[0] == 2


def test_tables_to_writes_the_report_tables_where_asked(built, capsys, tmp_path):
    args, root, cache = built
    target = tmp_path / "docs" / "results_persons.md"
    code, out = make_report(args, capsys, f"tables_to={str(target)!r}")
    assert code == 0
    tables = Path(out.strip().splitlines()[-1]).parent / "tables.md"
    assert target.read_text() == tables.read_text() and "SO+MaxExp" in target.read_text()
    assert make_report(args, capsys, "tables_to=")[0] == 2


def test_no_ledger_or_no_results_is_an_error_that_creates_nothing(built, tmp_path, capsys, caplog):
    args, root, _ = built
    empty = tmp_path / "empty"
    code, _ = make_report([*args, f"cache_root={str(empty)!r}"], capsys)
    assert code == 2 and not empty.exists() and "no results ledger" in caplog.text
    code, _ = make_report([*args, "dataset_options={'name': 'other'}"], capsys)
    assert code == 2 and "folder-other" in caplog.text and "folder-persons" in caplog.text


def test_a_long_video_keeps_only_the_frames_the_strip_shows(tmp_path, monkeypatch):
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25, (48, 32))
    for t in range(40):                                   # frame t is grey level 5 + 6 t
        writer.write(np.full((32, 48, 3), 5 + 6 * t, np.uint8))
    writer.release()
    every = frames.thumbnails(video, None, 40)
    assert every.shape == (40, 32, 48, 3) and (every[:, 0, 0, 0] == 5 + 6 * np.arange(40)).all()
    assert (frames.thumbnails(video, (10, 30), 20) == every[10:30]).all()
    monkeypatch.setattr(frames, "ALL_FRAMES_BYTES", 0)     # as if the video were long
    some = frames.thumbnails(video, None, 40)
    strip = ((np.arange(12) + 0.5) * 40 / 12).astype(int)          # plots._frame_strip's frames
    assert np.flatnonzero(some.any(axis=(1, 2, 3))).tolist() == strip.tolist()
    assert (some[strip] == every[strip]).all()


def test_sweep_lines_group_by_every_other_setting():
    def config(sketch_dim, C, epn="maxexp"):
        return {"descriptors": {"order": 2, "epn": epn, "sketch_dim": sketch_dim},
                "evaluate": {"head": "svm", "C": C, "name": f"row {sketch_dim} {C}"}}
    configs = [Configuration(f"k{i}", [{"config": config(*p), "score": 0.5, "method": "m",
                                        "split": "sp1"}])
               for i, p in enumerate([(4, 1.0), (8, 1.0), (4, 10.0), (8, 10.0), (16, 100.0),
                                      (4, 1.0, "gamma")])]
    lines = sweep_lines(configs, lambda c: c["descriptors"]["sketch_dim"],
                        lambda c: {k: v for k, v in settings(c).items()
                                   if k != "descriptors.sketch_dim"})
    assert {name: [c.key for c in cs] for name, cs in lines.items()} == {
        "SO+MaxExp (C=1.0)": ["k0", "k1"], "SO+MaxExp (C=10.0)": ["k2", "k3"]}
    assert family(config(4, 1.0, "none")) == "SO (no EPN)"
