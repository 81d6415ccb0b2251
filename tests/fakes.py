"""Test doubles: counting fake backbones registered as "fake_counting" (RGB) and
"fake_counting_flow" (2-channel flow), cheap and deterministic.

Importing this module registers it; with FAKE_KILL_AT=k in the environment the k-th extracted
item SIGKILLs the process after writing its temporary file (a crash mid-run).
"""
from __future__ import annotations

import os
import signal

import torch

from pipeline import features
from pipeline.backbones import BACKBONES, Backbone, InputSpec, WeightsInfo, register


class CountingBackbone(Backbone):
    """Layer "stats": per-channel mean and std of each quadrant of each frame (B, 2C, T, 2, 2);
    "means": per-channel frame means (B, C, T, 1, 1)."""

    spec = InputSpec(channels=3, size=32, min_frames=1)
    layers = {"stats": "per-quadrant channel means and standard deviations",
              "means": "per-frame channel means"}
    calls = 0          # forward passes, over all instances
    windows = 0        # windows seen

    def forward(self, x: torch.Tensor, layer: str = "stats") -> torch.Tensor:
        self.check_layer(layer)
        type(self).calls += 1
        type(self).windows += x.shape[0]
        if layer == "means":
            return x.mean(dim=(3, 4), keepdim=True)
        b, c, t, h, w = x.shape
        q = x.reshape(b, c, t, 2, h // 2, 2, w // 2)
        return torch.cat([q.mean(dim=(4, 6)), q.std(dim=(4, 6))], dim=1)


class CountingFlowBackbone(CountingBackbone):
    """The same on 2-channel flow frames: (B, 4, T, 1, 1)."""

    spec = InputSpec(channels=2, size=32, min_frames=1, mean=(0.5, 0.5), std=(0.5, 0.5))


if "fake_counting" not in BACKBONES:
    register("fake_counting")(lambda *, weights, seed: (CountingBackbone(), WeightsInfo("none", seed=seed)))
    register("fake_counting_flow")(
        lambda *, weights, seed: (CountingFlowBackbone(), WeightsInfo("none", seed=seed)))

if os.environ.get("FAKE_KILL_AT"):
    _kill_at, _seen = int(os.environ["FAKE_KILL_AT"]), [0]
    _original = features.write_item

    def _killing_write_item(*args, **kwargs):
        _original(*args, **kwargs)
        _seen[0] += 1
        if _seen[0] == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    features.write_item = _killing_write_item
