"""trunk=on: one trunk pass per stream and rate, windows pooled from stored maps. A new window
configuration costs no forward pass; per-frame backbones are exact; temporal ones equal the exact
windows where a window falls on the map's cells; chunks bound memory without changing cells."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import tests.fakes  # noqa: F401 - registers the fakes
from pipeline.core.settings import parse_overrides
from pipeline.extract.backbones import TRUNK_KINDS, build_backbone
from pipeline.extract.features import WindowEncoder, extract_features
from pipeline.extract.settings import ExtractConfig
from pipeline.extract.trunk import (RateTrunk, TrunkEncoder, check_trunk, kernel_average,
                                    position_weights, window_rate)
from pipeline.extract.video import WindowGroup
from tests.fakes import CountingBackbone

ITEM = "items/move_up/move_up_001.avi.h5"


def run(tiny_args, *extra):
    cfg, = parse_overrides(tiny_args + list(extra), ExtractConfig)
    return extract_features(cfg)


def read(folder, key):
    with h5py.File(folder / ITEM, "r") as f:
        return f[key][()], f[key].attrs["starts"]


def test_a_new_window_configuration_runs_zero_forward_passes(tiny_args):
    CountingBackbone.calls = CountingBackbone.frames = 0
    first = run(tiny_args, "trunk='on'", "pool=('mean','max','map')")
    assert first.ok and first.computed == 9
    assert CountingBackbone.calls == 9 and CountingBackbone.frames == 9 * 12   # each frame once
    CountingBackbone.calls = 0
    other = ["lengths=(3, 6, 10)", "strides=(1, 3, 5)", "steps=((1, 3), (2,), (1,))"]
    second = run(tiny_args, "trunk='on'", "pool=('mean','max','map')", *other)
    assert second.ok and second.computed == 9 and second.folder != first.folder
    assert CountingBackbone.calls == 0                    # a pooling over the stored maps
    assert len(list((second.folder.parents[2] / "trunk").rglob("manifest.json"))) == 1   # shared
    exact = run(tiny_args, "pool=('mean','max','map')", *other)      # trunk=off: per window
    assert CountingBackbone.calls > 0 and exact.folder != second.folder
    for key in ("rgb/stats/mean/L3_s3", "rgb/stats/max/L6_s2", "rgb/stats/map/L10_s1",
                "rgb/stats/mean/L3_s1"):
        (a, sa), (b, sb) = read(second.folder, key), read(exact.folder, key)
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)      # per-frame: exact


def test_temporal_trunk_equals_exact_windows_that_fall_on_its_cells(tiny_args):
    args = [a for a in tiny_args if not a.startswith(("backbone", "layer"))] + [
        "backbone='fake_counting_temporal'", "layer=('logits','cells')", "pool=('mean','max')"]
    CountingBackbone.calls = 0
    trunk = run(args, "trunk='on'")
    assert CountingBackbone.calls == 9 * 2                # one pass per video and rate (1, 2)
    exact = run(args)
    for key in ("rgb/logits/mean/L4_s1", "rgb/logits/mean/L8_s1", "rgb/cells/mean/L8_s1",
                "rgb/logits/max/L4_s1"):                  # starts 0, 2, 4, ...: on the cells
        np.testing.assert_allclose(read(trunk.folder, key)[0], read(exact.folder, key)[0],
                                   rtol=1e-5, atol=1e-6)
    a, b = read(trunk.folder, "rgb/logits/mean/L4_s2")[0], read(exact.folder, "rgb/logits/mean/L4_s2")[0]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert not np.allclose(a, b) and cos.min() > 0.99     # odd starts / 2: weighted by overlap


def test_windows_longer_than_the_video_take_the_rate_nearest_their_spacing():
    g = WindowGroup(24, 6, 4)                              # span 93
    assert window_rate(93, g, (1, 2, 3, 4)) == 4           # holds one span: its own step
    assert window_rate(50, g, (1, 2, 3, 4)) == 2           # 24 frames spaced 49/23 = 2.13
    assert window_rate(50, g, (1, 4)) == 1                 # only among the trunk's rates
    assert window_rate(20, g, (1, 2, 3, 4)) == 1           # spaced < 1: repeats
    assert window_rate(4, WindowGroup(3, 1, 4), (1, 2, 3, 4)) == 1   # 1.5: ties to the lower
    assert window_rate(60, WindowGroup(24, 6, 3), (1, 2, 3)) == 3    # 59/23 = 2.57


def test_rates_are_computed_as_windows_need_them_and_kept(tiny_args, tmp_path):
    """12-frame videos. Windowing A: (6, 3, 1) and (12, 6, 2), whose one window (span 23) is all
    12 frames: pooled from rate 1, so rate 2 never runs, and it equals the exact window. B
    needs rate 2 (L4_s2, span 7): that rate alone runs, rate 1 is kept; back to A: nothing."""
    args = [a for a in tiny_args if not a.startswith(("backbone", "layer"))] + [
        "backbone='fake_counting_temporal'", "layer=('cells','logits')", "pool=('mean',)", "trunk='on'"]
    a_win = ["lengths=(6, 12)", "strides=(3, 6)", "steps=((1,), (2,))"]
    b_win = ["lengths=(4,)", "strides=(2,)", "steps=((1, 2),)"]
    CountingBackbone.calls = CountingBackbone.frames = 0
    first = run(args, *a_win)
    assert first.ok and CountingBackbone.calls == 9 and CountingBackbone.frames == 9 * 12
    exact = run([a for a in args if a != "trunk='on'"], *a_win)
    np.testing.assert_allclose(read(first.folder, "rgb/cells/mean/L12_s2")[0],
                               read(exact.folder, "rgb/cells/mean/L12_s2")[0], rtol=1e-6)
    trunk_item = next((first.folder.parents[2] / "trunk").rglob("move_up_001.avi.h5"))
    with h5py.File(trunk_item, "r") as f:
        assert sorted(f["rgb/cells"]) == ["r1"]
        rate1 = f["rgb/cells/r1"][()]
    CountingBackbone.calls = CountingBackbone.frames = 0
    second = run(args, *b_win)
    assert second.ok and CountingBackbone.calls == 9 and CountingBackbone.frames == 9 * 6
    assert len(list((first.folder.parents[2] / "trunk").rglob("manifest.json"))) == 1
    with h5py.File(trunk_item, "r") as f:
        assert sorted(f["rgb/cells"]) == ["r1", "r2"]
        np.testing.assert_array_equal(f["rgb/cells/r1"][()], rate1)
    fresh = run(args, *b_win, f"cache_root={str(tmp_path / 'fresh')!r}")
    assert fresh.folder != second.folder
    for key in ("rgb/cells/mean/L4_s1", "rgb/logits/mean/L4_s2"):
        np.testing.assert_array_equal(read(second.folder, key)[0], read(fresh.folder, key)[0])
    CountingBackbone.calls = 0
    assert run(args, "lengths=(6, 12)", "strides=(2, 4)", "steps=((1,), (2,))").ok
    assert CountingBackbone.calls == 0


def test_position_weights_count_overlap_beyond_the_kernel():
    np.testing.assert_allclose(position_weights(6, 2, 1, 4), [0, 1, 1, 0, 0])
    np.testing.assert_allclose(position_weights(6, 2, 0.5, 4.5), [0.5, 1, 1, 0.5, 0])
    np.testing.assert_allclose(position_weights(6, 1, 0.25, 2), [0.75, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(position_weights(6, 2, 1, 2.5), [0, 0.5, 0, 0, 0])
    np.testing.assert_allclose(position_weights(6, 2, 1, 1.5), [0.5, 0.5, 0, 0, 0])  # < 2 cells: overlap
    np.testing.assert_allclose(kernel_average(np.arange(5.0)[:, None], 2)[:, 0], [0.5, 1.5, 2.5, 3.5])


def temporal_trunk(model, frames, chunk, rate=1, **kw):
    enc = TrunkEncoder(model, device=torch.device("cpu"))
    layer = model.trunk_layer(next(iter(model.layers)))
    trunk = RateTrunk(enc, rate, (layer.source,), {layer.source: layer.stride}, chunk=chunk, spatial=False)
    for f in frames:
        trunk.push(f)
    return trunk, trunk.finish()[layer.source][0]


def test_chunks_keep_every_cell_once():
    model, _ = build_backbone("fake_counting_temporal", weights="none")
    frames = list(np.random.default_rng(0).integers(0, 256, (301, 4, 4, 3), dtype=np.uint8))
    whole, cells = temporal_trunk(model, frames, 320)
    chunked, parts = temporal_trunk(model, frames, 72)
    assert whole.forwards == 1 and chunked.forwards == 1 + 28 + 1 and cells.shape == (151, 3)
    np.testing.assert_allclose(parts, cells, rtol=1e-6)       # a local trunk: chunking is exact
    _, rate3 = temporal_trunk(model, frames, 72, rate=3)
    assert rate3.shape == (51, 3)                             # ceil(ceil(301 / 3) / 2)


@pytest.mark.slow
def test_inception_chunks_stay_close_to_one_pass():
    model, _ = build_backbone("inception_i3d", weights="none", seed=0)
    rng = np.random.default_rng(0)
    frames = list(np.clip(rng.normal(128, 40, (1, 32, 32, 3)) + rng.normal(0, 20, (200, 32, 32, 3)),
                          0, 255).astype(np.uint8))
    _, whole = temporal_trunk(model, frames, 200)
    _, chunked = temporal_trunk(model, frames, 96)
    assert whole.shape == chunked.shape == (25, 1024)
    cos = (whole * chunked).sum(1) / np.linalg.norm(whole, axis=1) / np.linalg.norm(chunked, axis=1)
    assert cos.min() > 0.99, cos


@pytest.mark.slow
@pytest.mark.parametrize("name, layers, size", [("inception_i3d", ("logits", "pool", "mixed_5c"), 64),
                                                ("x3d_xs", ("logits", "pool", "res5"), 160)])
def test_trunk_windows_follow_the_exact_ones(name, layers, size, tmp_path):
    """Random weights, a 48-frame clip: windows of 16 frames at rate 1 pooled from the trunk
    against one forward per window (the same network, the same windows)."""
    from pipeline.extract.trunk import pool_item
    from pipeline.extract.video import WindowGroup, window_indices
    model, _ = build_backbone(name, weights="none", seed=0)
    rng = np.random.default_rng(1)
    video = np.clip(rng.normal(128, 50, (1, size, size, 3))
                    + np.cumsum(rng.normal(0, 6, (48, size, size, 3)), 0),
                    0, 255).astype(np.uint8)
    group = WindowGroup(16, 8, 1)
    enc = TrunkEncoder(model, device=torch.device("cpu"))
    plans = {layer: model.trunk_layer(layer) for layer in layers}
    srcs = tuple(sorted({p.source for p in plans.values()}))
    trunk = RateTrunk(enc, 1, srcs, {p.source: p.stride for p in plans.values()}, chunk=192, spatial=False)
    for f in video:
        trunk.push(f)
    cells = trunk.finish()

    with h5py.File(tmp_path / "trunk.h5", "w") as f:            # a trunk file of this clip
        f.attrs["num_frames"] = 48
        for src, (c, _) in cells.items():
            ds = f.create_dataset(f"rgb/{src}/r1", data=c)
            ds.attrs.update(stride=next(p.stride for p in plans.values() if p.source == src), frames=48)
    with h5py.File(tmp_path / "trunk.h5", "r") as f:
        feats, starts = pool_item(f, model, "rgb", layers, ("mean",), [group], (1,))
    _, idx = window_indices(48, group)
    exact = WindowEncoder(model, layers=layers, pool=("mean",), device=torch.device("cpu"))(
        [video[i] for i in idx])
    for layer, b in zip(layers, exact):
        a = feats[f"{layer}/mean", 0]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.mean() > 0.9, (layer, cos)


def test_backbones_that_cannot_refuse_trunk_on_and_name_those_that_can(tiny_args):
    model, _ = build_backbone("fake_no_trunk", weights="none")
    with pytest.raises(ValueError, match="does not support trunk=on.*inception_i3d"):
        check_trunk(model, "fake_no_trunk")
    args = [a for a in tiny_args if not a.startswith("backbone")] + ["backbone='fake_no_trunk'"]
    with pytest.raises(ValueError, match="fake_no_trunk.*trunk=off"):
        run(args, "trunk='on'")
    assert TRUNK_KINDS["slowfast_r50"] is None
    for name in ("inception_i3d", "inception_i3d_flow", "i3d_r50", "slow_r50", "x3d_xs"):
        assert TRUNK_KINDS[name] == "temporal", name
    assert TRUNK_KINDS["resnet50"] == "frames"


def test_trunk_settings_are_checked():
    with pytest.raises(ValueError, match="trunk='maybe'"):
        ExtractConfig(trunk="maybe")
    with pytest.raises(ValueError, match="trunk_chunk=100"):
        ExtractConfig(trunk_chunk=100)


def test_two_streams_from_one_decode_equal_the_exact_windows(tiny_args):
    args = [a for a in tiny_args if not a.startswith("streams")] + [
        "streams=('rgb','flow')", "flow_backbone='fake_counting_flow'", "flow='farneback'"]
    trunk, exact = run(args, "trunk='on'"), run(args)
    assert trunk.ok and exact.ok
    for key in ("flow/stats/mean/L4_s2", "rgb/stats/mean/L8_s1"):
        np.testing.assert_allclose(read(trunk.folder, key)[0], read(exact.folder, key)[0],
                                   rtol=1e-5, atol=1e-6)


def test_exact_windows_keep_their_key_and_the_trunk_keys_apart(tiny_args):
    from pipeline.extract.features import features_dir, load_dataset
    cfgs = [parse_overrides(tiny_args + list(extra), ExtractConfig)[0] for extra in
            ([], ["trunk_chunk=256"], ["trunk='on'"], ["trunk='on'", "trunk_chunk=256"])]
    folders = [features_dir(c, load_dataset(c)) for c in cfgs]
    assert folders[0] == folders[1]              # trunk=off: keyed as before trunk= existed
    assert len({folders[0], folders[2], folders[3]}) == 3
