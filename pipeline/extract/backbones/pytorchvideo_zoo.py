"""pytorchvideo model-zoo backbones (Kinetics-400), built through pytorchvideo's hub builders.

Each entry records the input the published checkpoint was trained with (pytorchvideo model zoo
table): crop size, clip length and normalisation. Layers: `logits` (400-d Kinetics scores
before softmax), `pool` (the head's pooled features, 2048-d, 2304-d for SlowFast), `res5`
(the last residual stage's map) and `res4` (the stage before it: pyramid attention's lower level;
not for SlowFast).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pytorchvideo.models import hub
from torch import nn

from pipeline.extract.backbones import register
from pipeline.extract.backbones.base import (Backbone, InputSpec, TrunkLayer, WeightsInfo, identify_weights,
                                             load_weights)

ZOO_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
LAYERS = {
    "logits": "Kinetics-400 class scores before softmax (400-d)",
    "pool": "the head's pooled features before the classifier",
    "res5": "the last residual stage's feature map",
    "res4": "the residual stage before res5 (pyramid attention's lower level; not SlowFast)",
}


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    builder: str        # function name in pytorchvideo.models.hub
    checkpoint: str     # file name under ZOO_URL
    size: int           # training crop (px)
    frames: int         # training clip length = the shortest clip the logits head accepts


ZOO = {
    "x3d_xs": ZooEntry("x3d_xs", "X3D_XS.pyth", 160, 4),
    "x3d_s": ZooEntry("x3d_s", "X3D_S.pyth", 160, 13),
    "x3d_m": ZooEntry("x3d_m", "X3D_M.pyth", 224, 16),
    "i3d_r50": ZooEntry("i3d_r50", "I3D_8x8_R50.pyth", 224, 8),
    "slow_r50": ZooEntry("slow_r50", "SLOW_8x8_R50.pyth", 224, 8),
    "c2d_r50": ZooEntry("c2d_r50", "C2D_8x8_R50.pyth", 224, 8),
    "r2plus1d_r50": ZooEntry("r2plus1d_r50", "R2PLUS1D_16x4_R50.pyth", 224, 16),
    "csn_r101": ZooEntry("csn_r101", "CSN_32x2_R101.pyth", 224, 32),
    "slowfast_r50": ZooEntry("slowfast_r50", "SLOWFAST_8x8_R50.pyth", 224, 32),
}


class ZooBackbone(Backbone):
    """A single-pathway pytorchvideo network: blocks[:-1] is the trunk, blocks[-1] the head."""

    layers = LAYERS
    trunk_kind = "temporal"      # every single-pathway zoo network is convolutional in time

    def __init__(self, net: nn.Module, spec: InputSpec):
        super().__init__()
        self.net, self.spec = net, spec
        self._strides: dict[str, int] | None = None

    def temporal_strides(self) -> dict[str, int]:
        """{"res4": frames per res4 cell, "res5": frames per res5 cell}, measured once on a blank
        32-frame clip (the zoo's temporal strides differ: 1 for slow_r50 and x3d, 8 for csn)."""
        if self._strides is None:
            frames = 32
            x = torch.zeros(1, 3, frames, 32, 32, device=next(self.parameters()).device)
            with torch.inference_mode():
                res4, res5 = self._trunk(x)
            self._strides = {"res4": frames // res4.shape[2], "res5": frames // res5.shape[2]}
        return self._strides

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.net.blocks[:-2]:
            x = block(x)
        return x, self.net.blocks[-2](x)

    def trunk_layer(self, layer: str) -> TrunkLayer:
        """res4 / res5 are stored; `pool` and `logits` average `kernel` res5 cells (the head's
        average pool: 4 or 8 cells) and apply what follows it: for X3D the pooled projection
        (its 1x1x1 pre-convolution is pointwise, so the stored map is after it) then the
        classifier (docs/method.md, Stage 1, trunk)."""
        self.check_layer(layer)
        strides = self.temporal_strides()
        if layer in ("res4", "res5"):
            return TrunkLayer(layer, stride=strides[layer])
        pool = self.net.blocks[-1].pool
        projected = hasattr(pool, "pre_conv")
        kernel = int((pool.pool if projected else pool).kernel_size[0])
        return TrunkLayer("head_pre" if projected else "res5", stride=strides["res5"], kernel=kernel,
                          head=projected or layer == "logits")

    def trunk_sources(self, x: torch.Tensor, sources: tuple[str, ...]) -> list[torch.Tensor]:
        res4, res5 = self._trunk(x)
        maps = {"res4": res4, "res5": res5}
        if "head_pre" in sources:
            pool = self.net.blocks[-1].pool
            maps["head_pre"] = pool.pre_act(pool.pre_norm(pool.pre_conv(res5)))
        return [maps[s] for s in sources]

    def trunk_head(self, layer: str, v: torch.Tensor) -> torch.Tensor:
        """v: (P, D) averaged cells -> (P, D_layer): X3D's post-projection for pool (and logits),
        the classifier for logits."""
        head = self.net.blocks[-1]
        if hasattr(head.pool, "pre_conv") and layer in ("pool", "logits"):
            v = head.pool.post_act(head.pool.post_conv(v[:, :, None, None, None])).flatten(1)
        return head.proj(v) if layer == "logits" else v

    def layer_maps(self, x: torch.Tensor, wanted: frozenset[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """x: (B, 3, T, H, W) normalised -> yields res4, res5, pool, logits in turn, each from the one
        before (see Backbone.forward_layers)."""
        for block in self.net.blocks[:-2]:
            x = block(x)
        yield "res4", x
        x = self.net.blocks[-2](x)
        yield "res5", x
        head = self.net.blocks[-1]
        if head.pool is not None:
            x = head.pool(x)
        yield "pool", x
        yield "logits", project(head, x)


class SlowFastBackbone(ZooBackbone):
    """SlowFast: the slow pathway sees every `alpha`-th frame of the fast one (alpha = 4).

    The two pathways run once; res5 (fast map resampled onto the slow grid, concatenated) and
    pool (the network's own per-pathway pooling, concatenated) both branch off them."""

    alpha = 4
    trunk_kind = None            # two pathways at two rates: trunk=on is not offered
    layers = {k: v for k, v in LAYERS.items() if k != "res4"}   # one res4 per pathway: not offered

    def pathways(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, T, H, W) -> [slow (B, 2048, T/alpha, h, w), fast (B, 256, T, h, w)]."""
        paths = [x[:, :, :: self.alpha], x]
        for block in self.net.blocks[:-2]:
            paths = block(paths)
        return paths

    def layer_maps(self, x: torch.Tensor, wanted: frozenset[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """x: (B, 3, T, H, W) normalised -> yields res5 (only if wanted: pool does not need it),
        pool, logits; the pathways are computed once for all three."""
        slow, fast = self.pathways(x)
        if "res5" in wanted:       # the fast map resampled onto the slow grid: (B, 2304, T/alpha, h, w)
            yield "res5", torch.cat([slow, F.adaptive_avg_pool3d(fast, slow.shape[2:])], dim=1)
        x = self.net.blocks[-2]([slow, fast])       # each pathway pooled, then concatenated
        yield "pool", x
        yield "logits", project(self.net.blocks[-1], x)


def project(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The head's classifier on pooled features: (B, D, T', H', W') -> (B, 400, T', H', W')."""
    return head.proj(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def build_zoo(name: str, *, weights: str, seed: int) -> tuple[Backbone, WeightsInfo]:
    entry = ZOO[name]
    torch.manual_seed(seed)      # random initialisation (weights=none) is reproducible
    net = getattr(hub, entry.builder)(pretrained=False)
    spec = InputSpec(channels=3, size=entry.size, min_frames=entry.frames)
    model = (SlowFastBackbone if name.startswith("slowfast") else ZooBackbone)(net, spec)
    info = load_weights(net, weights, url=f"{ZOO_URL}/{entry.checkpoint}", seed=seed, name=name)
    return model, info


def identify_zoo(name: str, *, weights: str, seed: int) -> WeightsInfo:
    return identify_weights(weights, url=f"{ZOO_URL}/{ZOO[name].checkpoint}", seed=seed, name=name)[0]


for _name in ZOO:
    register(_name, functools.partial(identify_zoo, _name),
             trunk=(SlowFastBackbone if _name.startswith("slowfast") else ZooBackbone).trunk_kind)(functools.partial(build_zoo, _name))
