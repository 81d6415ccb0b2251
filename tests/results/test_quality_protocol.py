"""The scene-disjoint protocol of tests/bench/quality.py: which test clips qualify (no training
clip of their class from their scene, and their class still has training clips), and a record
restricted to them is rescored."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_quality", Path(__file__).resolve().parents[1] / "bench" / "quality.py")
quality = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(quality)


def test_qualifying_clips():
    split = {"Jump/Jump_1_1.mp4": "test", "Jump/Jump_1_2.mp4": "train",    # same class, same scene
             "Jump/Jump_2_1.mp4": "test",                                   # scene 2: qualifies
             "Run/Run_1_1.mp4": "test",                                     # Run in training? no
             "Walk/Walk_1_1.mp4": "test", "Walk/Walk_3_1.mp4": "train"}     # other scene: qualifies
    keep = quality.qualifying({"f1": split})["f1"]
    assert keep == {"Jump/Jump_2_1.mp4", "Walk/Walk_1_1.mp4"}


def test_restrict_rescores():
    preds = [{"id": "a", "true": [0], "pred": 0}, {"id": "b", "true": [0], "pred": 1},
             {"id": "c", "true": [1], "pred": 1}]
    record = {"score": 2 / 3, "n_test": 3, "predictions": preds}
    out = quality.restrict(record, {"b", "c"})
    assert out["score"] == pytest.approx(0.5) and out["n_test"] == 2
    assert quality.restrict(record, set())["n_test"] == 0


def test_protocols_group_by_class_and_scene():
    import re
    group = re.compile(quality.PROTOCOLS["scene-disjoint"][0]["group"])
    assert group.search("Jump_11_3.mp4").group(1) == "Jump_11"
    assert set(quality.DEFAULT_PROTOCOLS) == {"folds", "scene-disjoint"}
