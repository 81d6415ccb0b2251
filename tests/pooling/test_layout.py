"""Stage 2's feature layout (DescriptorConfig.layout): the window groups stacked along the windows
(the default) or side by side along the features, aligned in time ("features"): the alignment
rule against hand-built centres, the stored descriptor against an independent numpy construction,
the keys, the row names, and the refusals."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core.cache import item_path, read_manifest
from pipeline.core.settings import parse_overrides
from pipeline.extract.features import extract_features
from pipeline.extract.settings import ExtractConfig
from pipeline.learn.naming import method_name
from pipeline.pooling import descriptors as D
from pipeline.pooling.descriptors import align_groups, compute_descriptors, window_centres
from pipeline.pooling.packing import n_unique, pack
from pipeline.pooling.settings import DescriptorConfig
from pipeline.pooling.sketch import make_sketches
from stages import train as train_stage
from tests.conftest import TINY

# 12-frame videos: L4_s1 (5 windows), L4_s2 (span 7: 3 windows), L16_s1 (span 16 > 12: one
# window over the whole video), two parts (mean, max of the fake's 6 stats)
STAGE = ["backbone='fake_counting'", "layer='stats'", "weights='none'", "streams=('rgb',)",
         "size=32", f"dataset_options={TINY!r}", "pool=('mean', 'max')",
         "lengths=(4, 16)", "strides=(2, 4)", "steps=((1, 2), (1,))"]


# ================================================================ unit: centres and alignment

def test_window_centres_and_the_over_long_window():
    np.testing.assert_array_equal(window_centres(np.array([0, 6]), 8, 2, 48), [7.0, 13.0])
    np.testing.assert_array_equal(window_centres(np.array([0, 4]), 4, 1, 12), [1.5, 5.5])
    # span (32 - 1) * 2 + 1 = 63 > 48 frames: stage 1 samples the whole video, centred
    np.testing.assert_array_equal(window_centres(np.array([0]), 32, 2, 48), [23.5])
    np.testing.assert_array_equal(window_centres(np.array([0]), 12, 1, 12), [5.5])   # exactly fits


def test_align_groups_oracle():
    a = np.array([5.0, 11, 17, 23, 29])      # every 6 frames: the most windows, the reference
    b = np.array([7.0, 15, 23])              # every 8 frames; 11 is 4 from 7 and 15: the earlier
    c = np.array([17.0])                     # one window longer than a 35-frame video
    picks = align_groups([b, a, c])
    assert [p.tolist() for p in picks] == [[0, 0, 1, 2, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


def test_align_groups_ties_take_the_first_group_and_the_earlier_window():
    first, second = np.array([0.0, 2]), np.array([5.0, 6])     # as many windows: the first leads
    assert [p.tolist() for p in align_groups([first, second])] == [[0, 1], [0, 0]]
    assert [p.tolist() for p in align_groups([second, first])] == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="non-empty"):
        align_groups([first, np.array([])])


def test_layout_choices_are_named():
    assert DescriptorConfig().layout == "windows"
    with pytest.raises(ValueError, match=r"layout='rows'.*'windows'.*'features'"):
        DescriptorConfig(layout="rows")


def test_row_names_state_a_non_default_layout():
    e = ExtractConfig()
    assert method_name(e, DescriptorConfig(layout="windows")) == "SO+MaxExp"
    assert method_name(e, DescriptorConfig(layout="features")) == "SO+MaxExp (layout=features)"
    assert method_name(e, DescriptorConfig(order=3, epn="none", layout="features")) == \
        "TO (no EPN) (layout=features)"
    assert method_name(e, DescriptorConfig(order=1, layout="features")) == \
        "first-order (mean, layout=features)"
    assert method_name(e, DescriptorConfig(order=1)) == "first-order (mean)"


def test_the_default_layout_keeps_its_folder_and_features_is_keyed(monkeypatch):
    """Folder names snapshot from the code before layout= existed."""
    inp = D.FeatureInput(SimpleNamespace(identity="tiny"), Path("/nowhere/features/tiny/so-abc"),
                         {}, ["rgb/stats/mean", "rgb/stats/max"], ["L4_s1", "L16_s1"], {}, [])
    monkeypatch.setattr(D, "find_features", lambda ecfg, cfg: inp)
    e = ExtractConfig(cache_root="/nowhere/cache")
    folder = lambda **kw: D.descriptors_dir(e, DescriptorConfig(**kw))[0].name  # noqa: E731
    assert folder() == folder(layout="windows") == "so-maxexp-d256-624e095ba293"
    assert folder(order=1) == folder(order=1, layout="windows") == "fo-mean-d256-facb34fafb17"
    assert folder(order=3, epn="none", sketch_dim=8) == "to-none-d8-c6df67aeb36c"
    features = folder(layout="features")
    assert features.startswith("so-maxexp-d256-features-") and features[-12:] != folder()[-12:]
    assert folder(order=1, layout="features")[-12:] != folder(order=1)[-12:]


def test_train_refuses_the_features_layout_before_any_work(tmp_path, caplog):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.ERROR):
        assert train_stage.main(["dataset=folder", "root=/nowhere", f"cache_root={str(cache)!r}",
                                 "layout=features"]) != 0
    assert "layout='features' is for fixed pooling" in caplog.text
    assert "layout='windows'" in caplog.text
    assert not cache.exists()                                # nothing computed, nothing written


# ================================================================ stage 2 on a tiny stage-1 item

@pytest.fixture(scope="module")
def stage1(tiny_root, tmp_path_factory) -> tuple[list[str], Path]:
    """(the extract arguments, the stage-1 folder) of the tiny dataset with STAGE's windows."""
    args = [f"root={str(tiny_root)!r}",
            f"cache_root={str(tmp_path_factory.mktemp('layout') / 'cache')!r}", *STAGE]
    result = extract_features(parse_overrides(args, ExtractConfig)[0])
    assert result.ok
    return args, result.folder


def by_hand(path: Path, parts: list[str], sketch_dim: int, weights: dict | None = None
            ) -> np.ndarray:
    """Phi (N, G P d') of one item, built directly from its file: each group's windows sketched
    part by part, each part and then the group's block l2-normalised; per column of the group
    with the most windows, each group's window with the nearest centre (strictly nearer wins:
    the earlier on a tie), blocks side by side, weighted, the column l2-normalised."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    with h5py.File(path, "r") as f:
        frames = int(f.attrs["num_frames"])
        names = list(f[parts[0]].keys())
        dims = [f[p][names[0]].shape[1] for p in parts]
        matrices = [np.eye(D_p) for D_p in dims]                     # sketch_dim=0: raw
        if sketch_dim:
            matrices = [np.zeros((D_p, sketch_dim)) for D_p in dims]   # S[i, h(i)] = s(i)
            for S, sk in zip(matrices, make_sketches(dims, sketch_dim, 0)):
                S[np.arange(len(sk.h)), sk.h] = sk.s
        blocks, centres = [], []
        for g in names:
            attrs = f[parts[0]][g].attrs
            length, step = int(attrs["length"]), int(attrs["step"])
            if (length - 1) * step + 1 > frames:
                centres.append([(frames - 1) / 2] * len(attrs["starts"]))
            else:
                centres.append([s + (length - 1) * step / 2 for s in attrs["starts"]])
            blocks.append(unit(np.concatenate(
                [unit(f[p][g][()].astype(np.float64) @ S) for p, S in zip(parts, matrices)],
                axis=1)))
    reference = max(centres, key=len)
    if len(centres[0]) == len(reference):
        reference = centres[0]
    columns = []
    for c in reference:
        column = []
        for g, block, cs in zip(names, blocks, centres):
            best = 0
            for i, ci in enumerate(cs):
                if abs(ci - c) < abs(cs[best] - c):
                    best = i
            column.append((weights or {}).get(g, 1.0) * block[best])
        columns.append(unit(np.concatenate(column)))
    return np.array(columns)


def stored(folder: Path, item_id: str) -> np.ndarray:
    with h5py.File(item_path(folder, item_id), "r") as f:
        return f["descriptor"][()]


@pytest.mark.parametrize("sketch_dim", [4, 0])
def test_features_layout_matches_the_numpy_construction(stage1, sketch_dim):
    args, upstream = stage1
    parts = ["rgb/stats/mean", "rgb/stats/max"]
    ecfg, dcfg = parse_overrides([*args, "layout=features", "order=2", "epn=none",
                                  f"sketch_dim={sketch_dim}"], ExtractConfig, DescriptorConfig)
    result = compute_descriptors(ecfg, dcfg)
    assert result.ok
    d = 3 * 2 * (sketch_dim or 6)                            # G P d' (unsketched: D = 6)
    manifest = read_manifest(result.folder)
    assert manifest["d"] == d and manifest["n_unique"] == n_unique(d, 2)
    ids = D.load_view(result.folder)[0]
    for item_id in ids[:2]:
        phi = by_hand(item_path(upstream, item_id), parts, sketch_dim)
        assert phi.shape == (5, d)                           # the columns of L4_s1
        X = phi.T @ phi / len(phi)
        np.testing.assert_allclose(stored(result.folder, item_id), pack(X), atol=1e-6)


def test_features_layout_group_weights_scale_the_blocks_and_order_1(stage1):
    args, upstream = stage1
    parts = ["rgb/stats/mean", "rgb/stats/max"]
    weights = {"L16_s1": 2.0, "L4_s2": 0.5}
    ecfg, dcfg = parse_overrides([*args, "layout=features", "order=2", "epn=none",
                                  "sketch_dim=4", f"group_weights={weights!r}"],
                                 ExtractConfig, DescriptorConfig)
    folder = compute_descriptors(ecfg, dcfg).folder
    item_id = D.load_view(folder)[0][0]
    phi = by_hand(item_path(upstream, item_id), parts, 4, weights)
    np.testing.assert_allclose(stored(folder, item_id), pack(phi.T @ phi / len(phi)), atol=1e-6)
    ecfg, dcfg = parse_overrides([*args, "layout=features", "order=1", "sketch_dim=4"],
                                 ExtractConfig, DescriptorConfig)
    folder = compute_descriptors(ecfg, dcfg).folder
    mean = by_hand(item_path(upstream, item_id), parts, 4).mean(axis=0)
    np.testing.assert_allclose(stored(folder, item_id), mean / np.linalg.norm(mean), atol=1e-6)
