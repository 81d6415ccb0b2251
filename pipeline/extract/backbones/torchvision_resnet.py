"""torchvision ImageNet ResNet-50 / ResNet-101 applied to every frame on its own: the frame-level
backbone of attentional pooling (Girdhar & Ramanan, NeurIPS 2017). Clips (B, 3, T, H, W) are folded
to (B*T, 3, H, W) and the chosen layer is unfolded back to (B, D, T, H', W').
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import torch
from torch import nn
from torchvision import models

from pipeline.extract.backbones import register
from pipeline.extract.backbones.base import Backbone, InputSpec, WeightsInfo, identify_weights, load_weights

log = logging.getLogger(__name__)

LAYERS = {
    "pool": "global-average-pooled layer4 per frame (2048-d, B x 2048 x T x 1 x 1)",
    "logits": "ImageNet-1k class scores before softmax per frame (1000-d, B x 1000 x T x 1 x 1)",
    "layer4": "the last residual stage's map per frame (2048-d, 7 x 7 at 224 px)",
}
# ImageNet statistics that torchvision's weights were trained with (frames scaled to [0, 1]).
IMAGENET = InputSpec(channels=3, size=224, min_frames=1,
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# name -> (torchvision builder, weights enum entry whose `url` weights=hub downloads).
RESNETS = {
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V2),
}


class FrameResNet(Backbone):
    """A 2D torchvision ResNet run frame by frame; no information crosses frames.

    forward(x: (B, 3, T, H, W) normalised, layer) -> (B, D, T, H', W'), H' = ceil(H / 32) for
    layer4 and 1 for pool / logits; forward_layers(x, layers) gives several from one pass.
    """

    layers = LAYERS
    spec = IMAGENET
    trunk_kind = "frames"        # trunk=on: each frame once, windows pool the frames they hold

    def __init__(self, net: models.ResNet):
        super().__init__()
        self.net = net

    def layer4(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (N, 3, H, W) -> (N, 2048, H/32, W/32)."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(frames))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def layer_maps(self, x: torch.Tensor, wanted: frozenset[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """x: (B, 3, T, H, W) -> yields layer4, pool, logits as (B, D, T, H', W') in turn, each
        from the one before (see Backbone.forward_layers)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected clips (B, 3, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape

        def unfold(y: torch.Tensor) -> torch.Tensor:                     # (B*T, D, h', w') ->
            return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)         # (B, D, T, h', w')

        y = self.layer4(x.transpose(1, 2).reshape(b * t, c, h, w))       # (B*T, 2048, h', w')
        yield "layer4", unfold(y)
        y = self.net.avgpool(y)                                          # (B*T, 2048, 1, 1)
        yield "pool", unfold(y)
        yield "logits", unfold(self.net.fc(y.flatten(1))[:, :, None, None])   # (B*T, 1000, 1, 1)


def build_resnet(name: str, *, weights: str, seed: int) -> tuple[Backbone, WeightsInfo]:
    """ResNet `name` with weights "none" | "hub" (torchvision IMAGENET1K_V2) | a path to a
    torchvision state dict (or one wrapped as {"model_state": ...})."""
    builder, hub_weights = RESNETS[name]
    torch.manual_seed(seed)      # random initialisation (weights=none) is reproducible
    net: nn.Module = builder(weights=None)
    info = load_weights(net, weights, url=hub_weights.url, seed=seed, name=name)
    return FrameResNet(net), info


def identify_resnet(name: str, *, weights: str, seed: int) -> WeightsInfo:
    return identify_weights(weights, url=RESNETS[name][1].url, seed=seed, name=name)[0]


for _name in RESNETS:
    register(_name, functools.partial(identify_resnet, _name), trunk=FrameResNet.trunk_kind,
             trunk_default=True)(functools.partial(build_resnet, _name))   # exact per frame
