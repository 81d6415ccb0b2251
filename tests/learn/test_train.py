"""`make train` and `make predict` on a tiny folder dataset with the counting fake backbone: models,
learned weights and ledger records per split; a second run does nothing; training never runs the
backbone; predict writes the top-k CSV; saved models reload with weights_only=True."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.learn.attention import load_attention
from pipeline.learn.settings import TrainConfig
from pipeline.core.settings import parse_overrides
from pipeline.extract.features import extract_features
from pipeline.results.ledger import Ledger
from pipeline.pooling.sketched import load_sketched
from pipeline.learn.train import samples
from stages import predict as predict_stage
from stages.common import CONFIGS
from stages import train as train_stage
from tests.fakes import CountingBackbone

FAKE = ["dataset=folder", "backbone=fake_counting", "layer=('stats','means')", "weights=none",
        "streams=('rgb',)", "lengths=(4, 8)", "strides=(2, 4)", "steps=((1, 2), (1,))", "size=32",
        "sketch_dim=8", "device=cpu", "max_epochs=3", "patience=2", "weight_decay=0",
        "dataset_options={'folds': 2}"]


@pytest.fixture
def setup(tiny_root, tmp_path) -> tuple[Path, list[str]]:
    """(the tiny synthetic set copied as a folder dataset, the key=value arguments), with its
    stage-1 features extracted."""
    root = tmp_path / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    args = [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}", *FAKE]
    extract_features(parse_overrides(args, *CONFIGS)[0])
    return root, args


def train_folder(cache: Path) -> Path:
    """The one training folder (its split models f1, f2) under cache."""
    (folder,) = [p for p in (cache / "train").glob("*/*") if (p / "f1" / "state.pt").is_file()]
    return folder


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("attention", ["hot", "none", "ap_windows"])
def test_train_writes_models_weights_and_ledger_once(setup, tmp_path, attention, caplog):
    root, args = setup
    cache = tmp_path / "cache"
    CountingBackbone.calls = 0
    assert train_stage.main([*args, f"attention={attention}", "head=linear"]) == 0
    assert CountingBackbone.calls == 0                         # stage 1 read, never recomputed
    folder = train_folder(cache)
    results = json.loads((folder / "results.json").read_text())
    assert list(results["splits"]) == ["f1", "f2"]
    records = Ledger(cache / "ledger.sqlite").records(config_key=results["config_key"])
    assert sorted(r["split"] for r in records) == ["f1", "f2"]
    assert results["method"] in (folder / "results.md").read_text()
    for split in ("f1", "f2"):
        out = folder / split
        state = torch.load(out / "state.pt", weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
        config = json.loads((out / "config.json").read_text())
        assert config["train"]["attention"] == attention and config["split"] == split
        with h5py.File(out / "weights.h5", "r") as f:
            n, groups = len(f["ids"]), [g.decode() for g in f["groups"][()]]
            assert groups == ["L4_s1", "L4_s2", "L8_s1"] and f["group_weights"].shape == (n, 3)
            assert n == 9 and f["offsets"][-1] == len(f["window_weights"])
            if attention == "none":
                assert np.allclose(f["group_weights"][()], 1.0)
            if attention == "hot":
                assert (f["group_weights"][()] > 0).all()
        # the saved model reloads and gives the scores recorded for the test videos
        clf = load_attention(out)
        result = json.loads((out / "result.json").read_text())
        test_ids = [p["id"] for p in result["predictions"]]
        videos, _ = load_sketched(Path(results["sketched"]), test_ids)
        scores = clf.decision_function(samples(attention, videos))
        recorded = np.array([p["scores"] for p in result["predictions"]])
        assert np.allclose(scores, recorded, atol=1e-4)
    before = snapshot(folder)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train_stage.main([*args, f"attention={attention}", "head=linear"]) == 0  # again
    assert "training already complete" in caplog.text
    assert snapshot(folder) == before and CountingBackbone.calls == 0
    assert len(Ledger(cache / "ledger.sqlite").records(config_key=results["config_key"])) == 2


@pytest.mark.parametrize("attention", ["hot", "self"])
def test_every_head_reuses_the_trained_models(setup, tmp_path, attention):
    """head=svm|logreg|mlp after head=linear: fitted on the learned representation of each split's
    training part, no model retrained, one ledger row per head, named as evaluate names them."""
    root, args = setup
    cache = tmp_path / "cache"
    ledger = Ledger(cache / "ledger.sqlite")
    assert train_stage.main([*args, f"attention={attention}", "head=linear"]) == 0
    folder = train_folder(cache)
    models = {p: p.stat().st_mtime_ns for p in folder.glob("f*/state.pt")}
    linear = json.loads((folder / "results.json").read_text())
    methods = {"linear": linear["method"]}
    for head in ("svm", "logreg", "mlp"):
        assert train_stage.main([*args, f"attention={attention}", f"head={head}"]) == 0
        (path,) = folder.glob(f"results-{head}-*.json")
        results = json.loads(path.read_text())
        assert results["head"] == path.stem[len("results-"):]
        assert sorted(r["split"] for r in ledger.records(config_key=results["config_key"])) == [
            "f1", "f2"]
        for split in ("f1", "f2"):
            r = json.loads((folder / split / "heads" / f"{results['head']}.json").read_text())
            assert r["n_train"] + r["n_test"] == 9 and 0 <= r["score"] <= 1
        methods[head] = results["method"]
    assert {p: p.stat().st_mtime_ns for p in folder.glob("f*/state.pt")} == models
    assert methods["linear"].endswith(" [linear]") and methods["logreg"].endswith(" [logreg]")
    assert methods["svm"] == methods["linear"][:-len(" [linear]")]
    assert len({r["config_key"] for r in ledger.records()}) == 4


def test_a_cached_result_takes_the_name_of_the_run_that_asks(setup):
    """name= labels a run without keying it: a later run reaching the same cached training or
    evaluation gets its own row name, not the first run's label."""
    from pipeline.pooling.descriptors import compute_descriptors
    from pipeline.learn.evaluate import evaluate
    from pipeline.learn.naming import method_name
    from pipeline.learn.train import train
    root, args = setup
    for extra in (["attention=none", "head=linear"], []):
        named = parse_overrides([*args, *extra, "name='my label'"], *CONFIGS)
        plain = parse_overrides([*args, *extra], *CONFIGS)
        ecfg, dcfg, vcfg, icfg, tcfg = plain
        if extra:
            first, again = (train(e, d, v, t)[1] for e, d, v, _, t in (named, plain))
            expected = method_name(ecfg, dcfg) + " (uniform) [linear]"
        else:
            compute_descriptors(ecfg, dcfg)
            first, again = (evaluate(e, d, v, i)[1] for e, d, v, i, _ in (named, plain))
            expected = method_name(ecfg, dcfg, vcfg)
        assert first["method"] == "my label" and again["config_key"] == first["config_key"]
        assert again["method"] == expected != "my label"


def test_train_refuses_idt_fusion(setup):
    root, args = setup
    assert train_stage.main([*args, "idt=on"]) != 0


def test_predict_writes_top_k_and_reuses_its_cache(setup, tmp_path, capsys):
    root, args = setup
    assert train_stage.main([*args, "attention=hot"]) == 0
    model = train_folder(tmp_path / "cache") / "f1"
    videos = (str(root / "move_up" / "move_up_000.avi"),
              str(root / "move_left" / "move_left_001.avi"))
    command = [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}", "device=cpu",
               f"model={str(model)!r}", f"videos={videos!r}", "top_k=2"]
    CountingBackbone.calls = 0
    assert predict_stage.main(command) == 0
    assert CountingBackbone.calls > 0                          # new videos: stage 1 runs for them
    (path,) = model.glob("predictions-*.csv")
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["video"], r["rank"]) for r in rows] == [
        ("move_up_000.avi", "1"), ("move_up_000.avi", "2"),
        ("move_left_001.avi", "1"), ("move_left_001.avi", "2")]
    classes = {"move_right", "move_left", "move_up"}
    assert all(r["class"] in classes for r in rows)
    for video in {r["video"] for r in rows}:
        mine = [r for r in rows if r["video"] == video]
        assert float(mine[0]["score"]) >= float(mine[1]["score"])
        assert mine[0]["class"] != mine[1]["class"]
    assert "move_up_000.avi" in capsys.readouterr().out
    CountingBackbone.calls = 0
    assert predict_stage.main(command) == 0                    # cached: no forward pass
    assert CountingBackbone.calls == 0


@pytest.mark.parametrize("head", ["svm", "logreg", "mlp"])
def test_predict_uses_the_fitted_head_and_gives_its_recorded_scores(setup, tmp_path, head,
                                                                   caplog):
    """`make predict head=...` reads the head `make train head=...` fitted on the model's
    learned representation, saved as a head on the (l2-normalised) learned rows: the scores it
    gives the split's test videos, run through stages 1 and 2 afresh, are the ones the head
    scored them with in training. A head never fitted is refused, naming what to run."""
    root, args = setup
    cache = tmp_path / "cache"
    assert train_stage.main([*args, "attention=hot", f"head={head}"]) == 0
    folder = train_folder(cache)
    (path,) = folder.glob(f"results-{head}-*.json")
    tag = json.loads(path.read_text())["head"]
    recorded = json.loads((folder / "f1" / "heads" / f"{tag}.json").read_text())["predictions"]
    classes = json.loads((folder / "f1" / "config.json").read_text())["classes"]
    videos = tuple(str(root / p["id"]) for p in recorded)
    command = [f"root={str(root)!r}", f"cache_root={str(cache)!r}", "device=cpu",
               f"model={str(folder / 'f1')!r}", f"videos={videos!r}", f"top_k={len(classes)}"]
    assert predict_stage.main([*command, f"head={head}"]) == 0
    (csv_path,) = (folder / "f1").glob("predictions-*.csv")
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    for p in recorded:
        mine = {r["class"]: float(r["score"]) for r in rows if r["video"] == Path(p["id"]).name}
        assert np.allclose([mine[c] for c in classes], p["scores"], atol=2e-4)
    probability = {r["probability"] for r in rows}
    assert probability == {""} if head == "svm" else "" not in probability
    other = "logreg" if head != "logreg" else "svm"
    caplog.clear()
    assert predict_stage.main([*command, f"head={other}"]) != 0
    assert f"head={other}" in caplog.text and "make train" in caplog.text


def test_train_config_names_the_key():
    with pytest.raises(ValueError, match="attention="):
        TrainConfig(attention="bogus")
    with pytest.raises(ValueError, match="weight_decay="):
        TrainConfig(weight_decay=-1.0)
    with pytest.raises(ValueError, match="top_k="):
        TrainConfig(top_k=0)
    assert TrainConfig(weight_decay=[0, 0.1]).weight_decay == (0.0, 0.1)
    assert TrainConfig(videos="a/b").videos == ("a/b",)


def test_pyramid_windows_levels_are_layers_and_attention_keys_reach_their_runs(setup, tmp_path):
    """pyramid_windows fuses the window features of two layers (here stats and means, sketch_dim
    8 each); each type's own keys (rank, bottom_up, maps, ...) select its model and name its row."""
    root, args = setup
    cache = tmp_path / "cache"
    assert train_stage.main([*args, "attention=pyramid_windows", "maps=2", "head=linear"]) == 0
    folder = train_folder(cache)
    params = json.loads((folder / "f1" / "params.json").read_text())
    assert params["meta"]["layer_dims"] == [8, 8] and params["params"]["n_maps"] == 2
    assert json.loads((folder / "f1" / "config.json").read_text())["levels"] == [[0, 8], [8, 16]]
    for extra, name in ((["bottom_up='none'"], "average pooling over windows"),
                        (["rank=2", "bottom_up='per_class'"], "AP over windows (rank-2, per-class)")):
        assert train_stage.main([*args, "attention=ap_windows", "head=linear", *extra]) == 0
        names = {json.loads(p.read_text())["method"]
                 for p in (cache / "train").glob("*/ap_windows-*/results.json")}
        assert f"{name} [linear]" in names
    assert len(list((cache / "train").glob("*/ap_windows-*/results.json"))) == 2


@pytest.mark.parametrize("parts,why", [("('stats/mean',)", "one level"),
                                       ("('stats/mean','stats/max')", "streams or poolings")])
def test_pyramid_windows_refuses_one_level_and_poolings_before_any_work(tiny_root, tmp_path,
                                                                       parts, why, caplog):
    root = tmp_path / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    args = [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}", *FAKE,
            "pool=('mean','max')", f"parts={parts}", "attention=pyramid_windows"]
    extract_features(parse_overrides(args, *CONFIGS)[0])
    with caplog.at_level(logging.ERROR):
        assert train_stage.main(args) != 0
    assert why in caplog.text and "parts=(" in caplog.text
    assert not (tmp_path / "cache" / "sketched").exists()


@pytest.fixture
def fake_maps(monkeypatch):
    """The fake backbone's "convolutional maps", shallow to deep: means (1 x 1), stats (2 x 2)."""
    from pipeline.learn import train as train_module
    monkeypatch.setitem(train_module.CONV_MAPS, "fake_counting", ("means", "stats"))


@pytest.mark.parametrize("attention", ["ap", "pyramid", "self_cells"])
def test_attention_over_map_cells_trains_exports_maps_and_predicts(tiny_root, tmp_path, attention,
                                                                   fake_maps):
    """ap, self_cells attend over the H' x W' cells of every window's last map (the fake's
    "stats": 2 x 2), pyramid fuses it with the lower "means" map; weights.h5 holds each
    window's cell map; predict reads the maps of new videos too."""
    root = tmp_path / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    args = [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}", *FAKE,
            "pool=('mean','map')", "parts=('stats/mean',)", "head=linear",
            f"attention={attention}"]
    extract_features(parse_overrides(args, *CONFIGS)[0])
    assert train_stage.main(args) == 0
    folder = train_folder(tmp_path / "cache")
    params = json.loads((folder / "f1" / "params.json").read_text())
    assert params["meta"]["n_features_in"] == 6         # stats: mean and std of 3 channels
    if attention == "pyramid":
        assert params["meta"]["layer_dims"] == [3, 6]   # means, then stats (top last)
    with h5py.File(folder / "f1" / "weights.h5", "r") as f:
        n_windows = len(f["window_weights"])
        assert f["cell_weights"].shape[0] == n_windows and f["cell_weights"].shape[2:] == (2, 2)
    video = str(root / "move_up" / "move_up_000.avi")
    assert predict_stage.main([f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}",
                               "device=cpu", f"model={str(folder / 'f1')!r}",
                               f"videos={(video,)!r}", "top_k=1", "head=linear"]) == 0


@pytest.mark.parametrize("attention", ["ap", "pyramid"])
def test_attention_over_cells_without_maps_stops_before_any_work_with_the_extract_command(
        tiny_root, tmp_path, attention, fake_maps, caplog):
    root = tmp_path / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    args = [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}", *FAKE,
            "layer=('stats',)", f"attention={attention}"]
    with caplog.at_level(logging.ERROR):
        assert train_stage.main(args) != 0
    assert "make extract DATASET=folder ARGS=" in caplog.text
    assert "pool=('mean', 'map')" in caplog.text
    wanted = "('stats',)" if attention == "ap" else "('stats', 'means')"
    assert f"layer={wanted}" in caplog.text
    assert not (tmp_path / "cache").exists()                 # nothing computed, nothing written


def test_pyramid_refuses_a_backbone_with_one_convolutional_map(caplog):
    assert train_stage.main(["dataset=folder", "root=/nowhere", "backbone=resnet50",
                             "attention=pyramid"]) != 0
    assert "two or more depths" in caplog.text and "layer4" in caplog.text


def test_a_hot_run_keeps_its_cache_key_and_other_types_keys_do_not_key_it():
    """The registry changed how train.py finds a type's keys, not the keys: a HoT run's key is
    the one computed before (snapshot from the code before the registry); another type's
    options never key a run, its own do."""
    from pipeline.core.cache import stage_key
    from pipeline.learn import train as T
    from pipeline.pooling.settings import DescriptorConfig
    splits, sources = {"sp1": {"a": "train", "b": "test"}}, {"a": "x", "b": "y"}

    def key(tcfg, dcfg=DescriptorConfig()):
        return stage_key(T.STAGE, T.STAGE_VERSION, T.train_params(tcfg, dcfg, splits, sources),
                         upstream=["sketched-abc"])
    sigme = DescriptorConfig(epn="sigme")           # the default EPN when the snapshot was taken
    assert key(TrainConfig(attention="hot"), sigme) == \
        "eb3d63e9f01688bd4f4e986a06dfb148572e3011efcede14620162eb01f7447f"
    assert key(TrainConfig(attention="none"), DescriptorConfig(order=3, epn="maxexp")) == \
        "5a5609c3bf03492ec65530de21728ee50cb729aa8124ac021e2bf9177ae6a3e3"
    assert key(TrainConfig(attention="hot", rank=3, maps=9, self_heads=2)) == \
        key(TrainConfig(attention="hot"))
    assert key(TrainConfig(attention="ap", nonneg="sigmoid")) == key(TrainConfig(attention="ap"))
    assert key(TrainConfig(attention="ap", rank=2)) != key(TrainConfig(attention="ap"))
    assert key(TrainConfig(attention="hot", hidden=4)) != key(TrainConfig(attention="hot"))


def test_a_training_run_sweeps_what_killed_runs_left(setup, tmp_path):
    """A killed training run can leave `.result.json.tmp-<pid>-<tid>@<host>` in a split folder;
    the next run removes it (its writer is dead), never a live writer's."""
    from pipeline.core.cache import HOST
    from tests.test_reliability import dead_pid
    root, args = setup
    assert train_stage.main([*args, "attention=none", "head=linear", "max_epochs=1"]) == 0
    folder = train_folder(tmp_path / "cache")
    dead = dead_pid()
    left = folder / "f2" / f".result.json.tmp-{dead}-{dead}@{HOST}"
    live = folder / "f2" / f".weights.h5.tmp-{os.getpid()}-1@{HOST}"
    for path in (left, live):
        path.write_text("partial")
    (folder / "f2" / "result.json").unlink()
    (folder / "results.json").unlink()
    assert train_stage.main([*args, "attention=none", "head=linear", "max_epochs=1"]) == 0
    assert not left.exists() and live.exists()
