"""Folder datasets (seeded stratified split or a CSV of path,split), the registry, and the
`validate` report behind `make check-dataset`."""
from __future__ import annotations

import logging

import pytest

from tests.dataset_fixtures import make_small_folder, make_small_hmdb, touch, write
from pipeline.datasets import DATASETS, DatasetError, get_dataset
from pipeline.datasets.base import TEST, TRAIN, Dataset
from pipeline.datasets.check import validate
from pipeline.datasets.folder import FolderDataset, stratified_split
from pipeline.results.metrics import METRICS


def roles_per_class(ds):
    out = {}
    for vid, role in ds.splits()["sp1"].items():
        out.setdefault(vid.split("/")[0], []).append(role)
    return out


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    make_small_folder(tmp_path, per_class=5)
    touch(tmp_path, "jump/notes.txt", ".hidden/x.mp4")
    ds = get_dataset("Folder", tmp_path)
    assert ds.classes == ("jump", "run", "walk") and len(ds.items()) == 15
    assert list(ds.splits()) == ["sp1"]
    for roles in roles_per_class(ds).values():
        assert sorted(roles) == [TEST] * 2 + [TRAIN] * 3          # round(5 * 0.3) = 2 test
    assert FolderDataset(tmp_path).splits() == ds.splits()
    draws = {tuple(sorted(FolderDataset(tmp_path, seed=s).splits()["sp1"].items()))
             for s in range(6)}
    assert len(draws) > 1                                           # the seed matters
    item = ds.items()[0]
    assert item.id == "jump/jump_0.mp4" and item.labels == (0,) and item.path.is_file()


def test_a_class_draw_does_not_depend_on_other_classes():
    run = [f"run/run_{i}.mp4" for i in range(10)]
    alone = stratified_split({"run": run}, test_fraction=0.3, seed=3)
    with_more = stratified_split({"a": ["a/1", "a/2"], "run": run}, test_fraction=0.3, seed=3)
    assert {k: with_more[k] for k in run} == alone
    assert stratified_split({"one": ["one/x"]}, test_fraction=0.5, seed=0) == {"one/x": TRAIN}


def test_nested_folders_and_extensions(tmp_path, caplog):
    make_small_folder(tmp_path, classes=("jump",), per_class=2)
    touch(tmp_path, "jump/outdoor/clip.avi", "jump/clip.webm", "solo/only.mp4")
    with caplog.at_level(logging.WARNING):
        ds = FolderDataset(tmp_path, extensions=("mp4", ".AVI"))
    assert {i.id for i in ds.items()} == {"jump/jump_0.mp4", "jump/jump_1.mp4",
                                          "jump/outdoor/clip.avi", "solo/only.mp4"}
    assert "class 'solo' has 1 video(s)" in caplog.text


def test_split_csv(tmp_path):
    make_small_folder(tmp_path, per_class=2)
    write(tmp_path / "split.csv", "path,split\njump/jump_0.mp4,train\njump/jump_1.mp4,test\n"
                                  "run/run_0.mp4,TRAIN\nrun/run_1.mp4,test\n")
    ds = FolderDataset(tmp_path, split_csv="split.csv")
    assert ds.classes == ("jump", "run")
    assert ds.splits()["sp1"] == {"jump/jump_0.mp4": TRAIN, "jump/jump_1.mp4": TEST,
                                  "run/run_0.mp4": TRAIN, "run/run_1.mp4": TEST}
    assert ds.unlisted == ["walk/walk_0.mp4", "walk/walk_1.mp4"]


@pytest.mark.parametrize("row, kind, expected", [
    ("jump/jump_9.mp4,train", "missing video", "'jump/jump_9.mp4' is not a video under"),
    ("../jump/jump_0.mp4,train", "path escapes root", "escapes the dataset root"),
    ("/etc/passwd,train", "path escapes root", "is absolute"),
    ("jump/jump_0.mp4,val", "malformed line", "is not '<path>,<train|test|unused>'"),
    ("jump/jump_0.mp4", "malformed line", "is not '<path>,<train|test|unused>'"),
    ("run/run_0.mp4,test", "duplicate", "already on line 1"),
])
def test_bad_csv_rows(tmp_path, row, kind, expected):
    make_small_folder(tmp_path, per_class=3)
    rows = ["run/run_0.mp4,train", "run/run_1.mp4,test", "jump/jump_1.mp4,test",
            "jump/jump_2.mp4,train", "walk/walk_0.mp4,train", "walk/walk_1.mp4,test"]
    csv = write(tmp_path / "split.csv", "\n".join(rows + [row]) + "\n")
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, split_csv=csv)
    message = str(err.value)
    assert "split.csv:7: " in message and expected in message and f"1 {kind}" in message
    ds = FolderDataset(tmp_path, split_csv=csv, strict=False)
    assert len(ds.skipped) == 1 and len(ds.items()) == 6


def test_bad_roots_and_options(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FolderDataset(tmp_path / "nowhere")
    touch(tmp_path, "loose.mp4", "docs/readme.txt")
    with pytest.raises(DatasetError, match=r"no video .* in any <class>/ folder"):
        FolderDataset(tmp_path)
    make_small_folder(tmp_path)
    with pytest.raises(DatasetError, match=r"test_fraction=1.5 must be in \(0, 1\)"):
        FolderDataset(tmp_path, test_fraction=1.5)
    with pytest.raises(DatasetError, match=r"split CSV not found .*nope.csv"):
        FolderDataset(tmp_path, split_csv="nope.csv")
    with pytest.raises(DatasetError, match=r"unknown option.*'test_fraction'"):
        get_dataset("folder", tmp_path, test_frac=0.2)


def test_registry_names_every_dataset_and_metric():
    assert {"hmdb51", "ucf101", "yup", "mpii_cooking", "folder", "synthetic"} <= set(DATASETS)
    for name, cls in DATASETS.items():
        assert issubclass(cls, Dataset) and name == name.lower()
        assert cls.metric in METRICS and cls.layout, name
    with pytest.raises(DatasetError, match=r"dataset='kinetics' is unknown; choose one of"):
        get_dataset("kinetics", ".")


def test_validate_report(tmp_path):
    make_small_folder(tmp_path, per_class=4)
    report = validate("folder", tmp_path, seed=1)
    assert "12 items, 3 classes, splits: sp1" in report
    assert "sp1: 9 train, 3 test, 0 unused" in report and "jump: 4 | 3/1" in report
    assert "problems: 0" in report and "videos named by no split: 0" in report
    write(tmp_path / "split.csv", "jump/jump_0.mp4,train\njump/gone.mp4,test\n")
    with pytest.raises(DatasetError) as err:
        validate("FOLDER", tmp_path, split_csv="split.csv")
    assert "split.csv:2: 'jump/gone.mp4' is not a video" in str(err.value)
    report = validate("folder", tmp_path, split_csv="split.csv", strict=False)
    assert "problems: 3 (2 entries skipped)" in report and "videos named by no split: 11" in report
    assert "1 class(es) with videos" in report         # + no test video, and one class left


def test_validate_opens_no_video_and_extracts_nothing(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: pytest.fail("a video was opened"))
    make_small_hmdb(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert "hmdb51" in validate("hmdb51", tmp_path)
    assert sorted(p for p in tmp_path.rglob("*")) == before
