"""Every registered backbone builds with random weights and maps a tiny clip to (B, D, T', H', W')."""
from __future__ import annotations

import pytest
import torch

from pipeline.backbones import BACKBONES, build_backbone
from pipeline.backbones.pytorchvideo_zoo import ZOO

REAL = sorted(name for name in BACKBONES if not name.startswith("fake_"))


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_every_backbone_forwards_a_tiny_clip(name):
    model, info = build_backbone(name, weights="none", seed=0)
    assert info.source == "none" and model.layers
    spec = model.spec
    frames = max(spec.min_frames, 8)
    x = torch.randn(1, spec.channels, frames, 64, 64)
    map_layer = [layer for layer in model.layers if layer not in ("logits", "pool")][0]
    with torch.inference_mode():
        y = model(x, map_layer)
    assert y.ndim == 5 and y.shape[0] == 1 and torch.isfinite(y).all()


@pytest.mark.slow
def test_zoo_logits_at_the_training_input_size():
    model, _ = build_backbone("x3d_xs", weights="none")
    entry = ZOO["x3d_xs"]
    x = torch.randn(2, 3, entry.frames, entry.size, entry.size)
    with torch.inference_mode():
        logits, pooled = model(x, "logits"), model(x, "pool")
    assert logits.shape[:2] == (2, 400) and pooled.shape[:2] == (2, 2048)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="backbone='nope' is unknown; choose one of .*x3d_xs"):
        build_backbone("nope", weights="none")
    model, _ = build_backbone("x3d_xs", weights="none")
    with pytest.raises(ValueError, match="layer='fc7' is not available"):
        model(torch.randn(1, 3, 4, 32, 32), "fc7")
