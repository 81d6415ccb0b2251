"""Every registered backbone builds with random weights, maps a tiny clip to (B, D, T', H', W'),
and gives several layers from one pass equal to one layer at a time."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from pipeline.extract.backbones import BACKBONES, Backbone, build_backbone
from pipeline.extract.backbones.pytorchvideo_zoo import ZOO

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


@contextlib.contextmanager
def counting_leaf_calls(model: nn.Module):
    """Counts calls of the model's leaf modules (convolutions, norms, pools, ...) while open."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def tiny_clip_model(name: str) -> tuple[Backbone, torch.Tensor]:
    """Backbone `name` (random weights) and a (1, C, T, 64, 64) clip that reaches every layer.

    The zoo heads average-pool with kernels fixed for the training clip (e.g. 4 x 7 x 7 for 8
    frames at 224 px); they are scaled to the 4-frame 64 px clip, so pool is 1 x 1 x 1 as in
    training and SlowFast's two pathways still pool to the same length."""
    model, _ = build_backbone(name, weights="none", seed=0)
    spec = model.spec
    frames = max(spec.min_frames, 2)
    head_pools = [m for m in model.modules() if isinstance(m, nn.AvgPool3d)]
    if head_pools:
        frames = 4
        scale = (frames / spec.min_frames, 64 / spec.size, 64 / spec.size)
        for pool in head_pools:
            pool.kernel_size = tuple(max(1, round(int(k) * s)) for k, s in zip(pool.kernel_size, scale))
    torch.manual_seed(1)
    return model, torch.randn(1, spec.channels, frames, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_forward_layers_is_one_pass_equal_to_forward_per_layer(name):
    model, x = tiny_clip_model(name)
    layers = tuple(model.layers)            # registry order: not the depth order in any family
    singles, cost = {}, {}
    with torch.inference_mode():
        with counting_leaf_calls(model) as together:
            maps = model.forward_layers(x, layers)
        for layer in layers:
            with counting_leaf_calls(model) as calls:
                singles[layer] = model(x, layer)
            cost[layer] = calls[0]
    assert len(maps) == len(layers)
    assert len({tuple(y.shape) for y in maps}) == len(layers)     # so a wrong order cannot pass
    for layer, y in zip(layers, maps):
        assert y.ndim == 5 and y.shape[0] == 1
        torch.testing.assert_close(y, singles[layer], rtol=0, atol=0, msg=f"layer {layer}")
    map_layer = [layer for layer in layers if layer not in ("logits", "pool")][0]
    assert together[0] == cost["logits"]                # all layers cost what the deepest alone does
    assert 0 < cost[map_layer] < cost["logits"]         # the feature map alone stops before the head


def test_forward_layers_rejects_unknown_repeated_and_no_layers():
    model, _ = build_backbone("x3d_xs", weights="none")
    x = torch.randn(1, 3, 4, 32, 32)
    with pytest.raises(ValueError, match=r"layer='fc7' is not available for ZooBackbone; "
                                         r"choose one of \['logits', 'pool', 'res4', 'res5'\]"):
        model.forward_layers(x, ("pool", "fc7"))
    with pytest.raises(ValueError, match=r"names \['pool'\] more than once"):
        model.forward_layers(x, ("pool", "logits", "pool"))
    with pytest.raises(ValueError, match=r"layers=\(\) is empty; choose one or more of \['logits'"):
        model.forward_layers(x, ())
    with pytest.raises(TypeError, match=r"must be a tuple of layer names, e.g. \('pool',\)"):
        model.forward_layers(x, "pool")


class OnlyForward(Backbone):
    """A backbone written against the one-layer contract: forward(x, layer) only."""

    layers = {"mean": "the clip's mean", "max": "the clip's max"}

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, layer="mean"):
        self.check_layer(layer)
        self.calls += 1
        return x.mean(dim=1, keepdim=True) if layer == "mean" else x.amax(dim=1, keepdim=True)


def test_base_forward_layers_falls_back_to_forward_per_layer():
    x = torch.randn(2, 3, 4, 8, 8)
    model = OnlyForward()
    maxed, mean = model.forward_layers(x, ["max", "mean"])
    assert model.calls == 2
    assert torch.equal(maxed, x.amax(dim=1, keepdim=True)) and torch.equal(mean, x.mean(dim=1, keepdim=True))

    class Bare(Backbone):
        layers = {"a": "a layer nobody computes"}

    with pytest.raises(NotImplementedError, match="Bare implements neither layer_maps nor forward"):
        Bare()(x)
