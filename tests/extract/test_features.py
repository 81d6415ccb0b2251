"""The stage-1 engine: several layers from one pass as parts, spatial maps, windows batched
across videos, the flow cache reused by later runs, bf16, per-window weights in stage 2, and real
clips through stages 1 and 2."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.extract import features
from pipeline.extract.backbones import build_backbone
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors, load_view
from pipeline.extract.features import WindowEncoder, extract_features
from tests.fakes import CountingBackbone
from tests.test_stages import snapshot

ITEM = "items/move_up/move_up_001.avi.h5"


def test_several_layers_and_pools_are_parts_and_maps_are_kept(tiny_args):
    e, d = parse_overrides(tiny_args + ["layer=('stats','means')", "pool=('mean','map')", "sketch_dim=4"],
                           ExtractConfig, DescriptorConfig)
    result = extract_features(e)
    assert result.folder.name.startswith("fake_counting-stats+means-")
    with h5py.File(result.folder / ITEM, "r") as f:
        stats, means, maps = (f[k][()] for k in ("rgb/stats/mean/L8_s1", "rgb/means/mean/L8_s1",
                                                 "rgb/stats/map/L8_s1"))
        assert stats.shape == (2, 6) and means.shape == (2, 3) and maps.shape == (2, 6, 2, 2)
        assert maps.dtype == np.float16              # maps are stored compactly (half the bytes)
        np.testing.assert_allclose(maps.astype(np.float32).mean(axis=(2, 3)), stats, rtol=2e-3,
                                   atol=1e-4)        # float16: 11 significant bits
        np.testing.assert_allclose(means, stats[:, :3], rtol=1e-5, atol=1e-6)  # quadrants average
    with h5py.File(compute_descriptors(e, d).folder / "descriptors.h5", "r") as f:
        assert f.attrs["d"] == 8                     # two parts (maps are not sketched) x d'=4


def test_windows_of_consecutive_videos_share_batches(tiny_args):
    e, = parse_overrides(tiny_args + ["batch_size=4"], ExtractConfig)
    CountingBackbone.calls = CountingBackbone.windows = 0
    extract_features(e)
    per_group = {"L4_s1": 5, "L4_s2": 4, "L8_s1": 2}     # windows per 12-frame video
    assert CountingBackbone.windows == 9 * sum(per_group.values())
    assert CountingBackbone.calls == sum(math.ceil(9 * n / 4) for n in per_group.values())  # 23
    # (one video at a time would take sum(ceil(n / 4)) * 9 = 36 forward passes)


def flow_args(tiny_args, *extra):
    return [a for a in tiny_args if not a.startswith("streams")] + [
        "streams=('rgb','flow')", "flow_backbone='fake_counting_flow'", "flow='farneback'", *extra]


def test_flow_is_computed_once_and_reused_by_later_runs(tiny_args, monkeypatch):
    e, = parse_overrides(flow_args(tiny_args), ExtractConfig)
    first = extract_features(e)
    cached = list((first.folder.parents[2] / "flow").rglob("*.avi.h5"))
    assert len(cached) == 9
    reference = snapshot(first.folder)

    def no_flow(*args, **kwargs):
        raise AssertionError("flow was computed again")

    monkeypatch.setattr(features, "AlignedFlow", no_flow)
    for path in first.folder.joinpath("items").rglob("*.h5"):     # recompute the features...
        path.unlink()
    (first.folder / "manifest.json").unlink()
    again = extract_features(e)                                   # ...from the cached flow
    assert again.ok and again.computed == 9 and snapshot(again.folder) == reference
    flow_only, = parse_overrides(flow_args(tiny_args, "streams=('flow',)"), ExtractConfig)
    alone = extract_features(flow_only)                           # no decoding needed at all
    with h5py.File(alone.folder / ITEM, "r") as f, h5py.File(first.folder / ITEM, "r") as g:
        assert np.array_equal(f["flow/stats/mean/L4_s1"][()], g["flow/stats/mean/L4_s1"][()])
        assert f.attrs["num_frames"] == 12


def test_bf16_autocast_stays_close_to_fp32():
    model, _ = build_backbone("x3d_xs", weights="none", seed=0)
    clips = [np.random.default_rng(k).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for k in range(2)]
    cpu = torch.device("cpu")
    full = WindowEncoder(model, layers=("res5",), pool=("mean",), device=cpu)(clips)[0]
    half = WindowEncoder(model, layers=("res5",), pool=("mean",), device=cpu, precision="bf16")(clips)[0]
    assert half.dtype == np.float32 and not np.array_equal(half, full)       # autocast did run
    assert np.abs(half - full).max() <= 0.05 * np.abs(full).max()


def test_group_weights_change_the_descriptor(tiny_args):
    e, plain = parse_overrides(tiny_args + ["sketch_dim=8"], ExtractConfig, DescriptorConfig)
    _, weighted = parse_overrides(tiny_args + ["sketch_dim=8", "group_weights={'L8_s1': 0.25}"],
                                  ExtractConfig, DescriptorConfig)
    extract_features(e)
    a, b = compute_descriptors(e, plain), compute_descriptors(e, weighted)
    assert a.folder != b.folder
    _, da, _ = load_view(a.folder)
    _, db, _ = load_view(b.folder)
    assert not np.allclose(da, db)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_clips_go_through_stages_one_and_two(shared_data, tmp_path):
    root = shared_data / "videos" / "arid6"
    args = [f"root={str(root)!r}", "dataset=folder", f"cache_root={str(tmp_path)!r}",
            "backbone=fake_counting", "flow_backbone=fake_counting_flow", "layer=stats",
            "weights=none", "streams=('rgb','flow')", "flow=farneback", "size=32",
            "lengths=(8, 16)", "strides=(8,)", "steps=((1, 2), (1,))", "sketch_dim=8"]
    e, d = parse_overrides(args, ExtractConfig, DescriptorConfig)
    result = extract_features(e)
    assert result.ok and result.done == 36, result.failures
    with h5py.File(next((result.folder / "items").rglob("*.h5")), "r") as f:
        assert 33 <= f.attrs["num_frames"] <= 105
        assert f["flow/stats/mean/L16_s1"].shape[0] >= 1
    ids, descriptors, attrs = load_view(compute_descriptors(e, d).folder)
    assert len(ids) == 36 and descriptors.shape == (36, 16 * 17 // 2)
    assert np.isfinite(descriptors).all()
