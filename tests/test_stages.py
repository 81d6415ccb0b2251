"""The resumable-stage contract with a counting fake backbone: no work twice, crash-safe resume
with identical output, new keys for new parameters, announced random weights, offline hub errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.extract import features
from pipeline.extract.backbones import build_backbone
from pipeline.extract.backbones.base import WeightsError
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors
from pipeline.extract.features import extract_features
from stages import extract as extract_stage
from tests.fakes import CountingBackbone

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every item file's datasets and attributes, for equality checks."""
    out = {}
    for path in sorted((folder / "items").rglob("*.h5")):
        with h5py.File(path, "r") as f:
            entry = {"attrs": {a: np.asarray(v).tolist() for a, v in f.attrs.items()}}

            def add(name, obj):
                if isinstance(obj, h5py.Dataset):
                    entry[name] = (obj[()].tolist(), {a: np.asarray(v).tolist() for a, v in obj.attrs.items()})
            f.visititems(add)
        out[str(path.relative_to(folder))] = entry
    return out


def test_second_run_does_no_work(tiny_args):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    CountingBackbone.calls = 0
    first = extract_features(cfg)
    assert first.ok and first.computed == 9 and CountingBackbone.calls > 0
    manifest = json.loads((first.folder / "manifest.json").read_text())
    assert manifest["done"] == 9 and manifest["weights"]["rgb"]["source"] == "none"
    CountingBackbone.calls = 0
    second = extract_features(cfg)
    assert second.skipped_run and CountingBackbone.calls == 0 and second.folder == first.folder


def test_items_hold_groups_with_starts(tiny_args):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    folder = extract_features(cfg).folder
    with h5py.File(folder / "items" / "move_right" / "move_right_000.avi.h5", "r") as f:
        assert list(f.keys()) == ["rgb"] and sorted(f["rgb/stats/mean"].keys()) == ["L4_s1", "L4_s2", "L8_s1"]
        assert f["rgb/stats/mean/L4_s2"].attrs["starts"].tolist() == [0, 2, 4, 5]   # span 7 over 12 frames
        assert f["rgb/stats/mean/L4_s2"].shape == (4, 6) and f.attrs["num_frames"] == 12


def test_crash_at_item_k_then_rerun_is_identical(tiny_args, tmp_path, monkeypatch):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    reference = snapshot(extract_features(cfg).folder)
    crash_args = [a for a in tiny_args if not a.startswith("cache_root")] + \
        [f"cache_root={str(tmp_path / 'crash')!r}"]
    cfg2, = parse_overrides(crash_args, ExtractConfig)
    original, seen = features.write_item, [0]

    def crash_at_third(out, **kwargs):
        seen[0] += 1
        original(out, **kwargs)
        if seen[0] == 3:
            raise RuntimeError("injected crash after writing the temporary file")

    monkeypatch.setattr(features, "write_item", crash_at_third)
    result = extract_features(cfg2)
    assert len(result.failures) == 1 and "injected crash" in next(iter(result.failures.values()))
    assert not list((result.folder / "items").rglob(".*tmp*"))              # nothing partial
    assert len(list((result.folder / "items").rglob("*.h5"))) == 8
    monkeypatch.setattr(features, "write_item", original)
    CountingBackbone.windows = 0
    rerun = extract_features(cfg2)
    assert rerun.ok and rerun.computed == 1
    assert snapshot(rerun.folder) == reference


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_is_identical(tiny_args, tmp_path):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    reference = snapshot(extract_features(cfg).folder)
    args = [a for a in tiny_args if not a.startswith("cache_root")] + [f"cache_root={str(tmp_path / 'k')!r}"]
    code = "import sys, tests.fakes; from stages.extract import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "FAKE_KILL_AT": "4", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    folder = next((tmp_path / "k" / "features").rglob("manifest.json"), None)
    assert folder is None                                                   # killed before the manifest
    env.pop("FAKE_KILL_AT")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    folder = next((tmp_path / "k" / "features").rglob("manifest.json")).parent
    assert "6 of 9 items to compute" in done.stderr.decode()
    assert snapshot(folder) == reference


def test_changed_parameter_makes_a_new_key_and_back_finds_the_old(tiny_args):
    a, = parse_overrides(tiny_args, ExtractConfig)
    b, = parse_overrides(tiny_args + ["pool='max'"], ExtractConfig)
    fa, fb = extract_features(a).folder, extract_features(b).folder
    assert fa != fb
    assert extract_features(a).skipped_run


def test_descriptor_stage_resumes_and_reuses_features(tiny_args):
    e, d = parse_overrides(tiny_args + ["sketch_dim=8"], ExtractConfig, DescriptorConfig)
    with pytest.raises(RuntimeError, match="run `make extract`"):
        compute_descriptors(e, d)
    extract_features(e)
    first = compute_descriptors(e, d)
    assert first.ok and first.computed == 9 and (first.folder / "descriptors.h5").is_file()
    with h5py.File(first.folder / "descriptors.h5", "r") as f:
        assert f["descriptors"].shape == (9, 8 * 9 // 2)
    with h5py.File(first.folder / "sketch.h5", "r") as f:
        assert f["rgb/stats/mean/h"].shape == (6,)
    assert compute_descriptors(e, d).skipped_run


def test_random_weights_are_announced(caplog):
    _, info = build_backbone("x3d_xs", weights="none", seed=3)
    assert info.source == "none" and info.seed == 3
    assert "RANDOM initialisation" in caplog.text


def test_hub_offline_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"X3D_XS.pyth.*place it at .*checkpoints/X3D_XS.pyth"):
        build_backbone("x3d_xs", weights="hub")


def test_checkpoint_path_loads_and_is_identified(tmp_path):
    import torch
    model, _ = build_backbone("x3d_xs", weights="none", seed=1)
    torch.save({"model_state": model.net.state_dict()}, tmp_path / "X3D_XS.pyth")
    loaded, info = build_backbone("x3d_xs", weights=str(tmp_path / "X3D_XS.pyth"), seed=2)
    assert info.source == "file" and info.file == "X3D_XS.pyth" and len(info.sha256) == 64
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x, "res5"), loaded(x, "res5"))


def test_stage_cli_reports_bad_arguments(capsys, caplog):
    assert extract_stage.main(["bogus=1"]) == 2
    assert "unknown key 'bogus'" in caplog.text


def test_shards_together_equal_the_single_run(tiny_args, tmp_path):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    reference = snapshot(extract_features(cfg).folder)
    base = [a for a in tiny_args if not a.startswith("cache_root")] + [f"cache_root={str(tmp_path / 's')!r}"]
    first, = parse_overrides(base + ["shard=1/2"], ExtractConfig)
    r1 = extract_features(first)
    assert r1.computed == 5 and not (r1.folder / "manifest.json").exists()
    assert (r1.folder / "manifest-shard-1-of-2.json").is_file()
    second, = parse_overrides(base + ["shard=2/2"], ExtractConfig)
    r2 = extract_features(second)
    assert r2.computed == 4 and r2.folder == r1.folder and (r2.folder / "manifest.json").is_file()
    assert snapshot(r2.folder) == reference
    with pytest.raises(ValueError, match="shard='3/2'"):
        parse_overrides(base + ["shard=3/2"], ExtractConfig)


def test_two_streams_from_one_decode_share_windows_and_become_parts(tiny_args):
    args = [a for a in tiny_args if not a.startswith("streams")] + [
        "streams=('rgb', 'flow')", "flow_backbone='fake_counting_flow'", "flow='farneback'", "sketch_dim=8"]
    e, d = parse_overrides(args, ExtractConfig, DescriptorConfig)
    folder = extract_features(e).folder
    assert folder.name.startswith("fake_counting+fake_counting_flow-stats-")
    with h5py.File(folder / "items" / "move_right" / "move_right_000.avi.h5", "r") as f:
        assert sorted(f.keys()) == ["flow", "rgb"] and f.attrs["num_frames"] == 12
        for g in ("L4_s1", "L4_s2", "L8_s1"):
            assert f[f"rgb/stats/mean/{g}"].attrs["starts"].tolist() == f[f"flow/stats/mean/{g}"].attrs["starts"].tolist()
            assert f[f"flow/stats/mean/{g}"].shape[1] == 4                  # 2 flow channels x (mean, std)
        flow_stds = f["flow/stats/mean/L4_s1"][:, 2:]
    assert flow_stds.min() > 1e-6                  # the sprite moves: flow is neither zero nor constant
    result = compute_descriptors(e, d)
    with h5py.File(result.folder / "descriptors.h5", "r") as f:
        assert f.attrs["d"] == 16 and f["descriptors"].shape == (9, 16 * 17 // 2)
    with h5py.File(result.folder / "sketch.h5", "r") as f:
        assert f["rgb/stats/mean/h"].shape == (6,) and f["flow/stats/mean/h"].shape == (4,)


def test_a_checkpoint_file_for_rgb_needs_one_for_flow():
    with pytest.raises(ValueError, match="flow_weights=/path/to/flow_checkpoint"):
        parse_overrides(["streams=('rgb','flow')", "weights=/x/rgb_imagenet.pt"], ExtractConfig)


def test_mean_and_max_pooling_are_two_parts(tiny_args):
    e, d = parse_overrides(tiny_args + ["pool=('mean','max')", "sketch_dim=4"], ExtractConfig, DescriptorConfig)
    folder = extract_features(e).folder
    with h5py.File(folder / "items" / "move_up" / "move_up_001.avi.h5", "r") as f:
        mean, peak = f["rgb/stats/mean/L8_s1"][()], f["rgb/stats/max/L8_s1"][()]
    assert mean.shape == peak.shape and (peak >= mean - 1e-6).all() and (peak > mean + 1e-6).any()
    with h5py.File(compute_descriptors(e, d).folder / "descriptors.h5", "r") as f:
        assert f.attrs["d"] == 8
