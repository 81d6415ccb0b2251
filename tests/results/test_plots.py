"""Plots: each writes a valid, non-trivial PNG (decoded back and checked not blank); config
fields are found by dotted path or bare name; bad shapes are refused."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.results import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path) -> np.ndarray:
    """The decoded image; it must be a PNG of some size and hold more than one colour."""
    from matplotlib.image import imread
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.02
    return image


@pytest.fixture
def record() -> dict:
    rng = np.random.default_rng(0)
    classes = [f"class_{i}" for i in range(6)]
    confusion = rng.integers(0, 5, (6, 6)) + 10 * np.eye(6, dtype=int)
    return dict(dataset="hmdb51", split="sp1", method="SO+MaxExp", metric="accuracy",
                classes=classes, confusion=confusion.tolist(),
                per_class={c: float(confusion[i, i] / confusion[i].sum()) for i, c in enumerate(classes)})


def test_confusion_and_per_class(tmp_path, record):
    check_png(plots.plot_confusion(record, tmp_path / "confusion.png"))
    check_png(plots.plot_confusion(record, tmp_path / "counts.png", normalize=False))
    check_png(plots.plot_per_class(record, tmp_path / "per_class.png"))
    with pytest.raises(ValueError, match="confusion"):
        plots.plot_confusion(dict(record, confusion=[[1, 2]]), tmp_path / "bad.png")


def test_config_value():
    config = {"extract": {"lengths": [16, 32]},
              "descriptors": {"sketch_dim": 64, "epn_params": {"eta": 2.0}}}
    assert plots.config_value(config, "sketch_dim") == 64
    assert plots.config_value(config, "descriptors.epn_params.eta") == 2.0
    assert plots.config_value(config, "epn_params.eta") == 2.0
    with pytest.raises(KeyError):
        plots.config_value(config, "C")


def test_sweep(tmp_path, caplog):
    records = []
    for order, base in (("SO", 0.5), ("TO", 0.6)):
        for d in (32, 64, 128, 256):
            for split in ("sp1", "sp2"):
                records.append(dict(dataset="hmdb51", split=split, metric="accuracy",
                                    method=f"{order}+MaxExp (i3d, d'={d})", score=base + d / 1000,
                                    config_key=f"{order}{d}", config={"descriptors": {"sketch_dim": d}}))
    check_png(plots.plot_sweep(records, tmp_path / "sweep.png", param="sketch_dim"))
    assert "averaged" not in caplog.text                  # one configuration per (family, d')
    # one family for all: SO and TO share every d', so they are averaged, with a warning
    check_png(plots.plot_sweep(records, tmp_path / "one_family.png", param="sketch_dim",
                               family=lambda r: "all"))
    assert "2 configurations of all at sketch_dim=64 are averaged" in caplog.text
    # a categorical parameter is drawn at evenly spaced positions
    records = [dict(r, config={"descriptors": {"epn": r["config_key"][:2].lower()}}) for r in records]
    check_png(plots.plot_sweep(records, tmp_path / "categorical.png", param="epn"))


def test_group_attention(tmp_path):
    rng = np.random.default_rng(1)
    weights = rng.dirichlet(np.ones(5), size=40)
    labels = rng.integers(0, 4, 40)
    groups = [f"L{L}_s{s}" for L, s in ((16, 1), (16, 2), (32, 1), (32, 2), (64, 1))]
    check_png(plots.plot_group_attention(weights, groups, labels, ["a", "b", "c", "d", "absent"],
                                         tmp_path / "groups.png"))
    with pytest.raises(ValueError, match="n_videos"):
        plots.plot_group_attention(weights[:, :3], groups, labels, ["a"], tmp_path / "bad.png")


def test_window_and_spatial_attention(tmp_path):
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (48, 64, 80, 3), dtype=np.uint8)
    starts = np.array([0, 8, 16, 24, 32, 0, 16, 32, 0])
    lengths = np.array([8, 8, 8, 8, 8, 16, 16, 16, 24])
    steps = np.array([2, 2, 2, 2, 2, 1, 1, 1, 2])
    weights = rng.dirichlet(np.ones(9))
    out = plots.plot_window_attention(frames, np.minimum(starts, 47), lengths, weights,
                                      tmp_path / "windows.png", steps=np.ones(9, int))
    check_png(out)
    maps = rng.random((9, 7, 7))
    check_png(plots.plot_window_attention(frames, starts, lengths, weights,
                                          tmp_path / "spatial_windows.png", steps=steps, spatial=maps,
                                          title="video 1"))
    with pytest.raises(ValueError, match="n_windows"):
        plots.plot_window_attention(frames, starts[:3], lengths, weights, tmp_path / "bad.png")
