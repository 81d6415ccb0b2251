"""Test doubles: counting fake backbones registered as "fake_counting" (RGB) and
"fake_counting_flow" (2-channel flow), both per-frame ("frames" under trunk=on), and
"fake_counting_temporal" (convolutional in time, with a linear head after its trunk) and
"fake_no_trunk" (refuses trunk=on); cheap and deterministic.

Importing this module registers it; with FAKE_KILL_AT=k in the environment the k-th extracted
item SIGKILLs the process after writing its temporary file (a crash mid-run); with FAKE_KILL_ONCE=path
the first item written anywhere creates `path` and SIGKILLs its process (a transient worker death,
e.g. the OOM killer); with CHAOS_KILL_AT=k
the k-th call into the project's code SIGKILLs the whole process group (`arm_chaos`, tests/chaos.py);
FAKE_DELAY=seconds makes every forward pass sleep that long (a run slow enough to interrupt).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import h5py
import torch

import pipeline
import stages
from pipeline.extract import features
from pipeline.extract.backbones import BACKBONES, Backbone, InputSpec, TrunkLayer, WeightsInfo, register


class CountingBackbone(Backbone):
    """Layer "stats": per-channel mean and std of each quadrant of each frame (B, 2C, T, 2, 2);
    "means": per-channel frame means (B, C, T, 1, 1)."""

    spec = InputSpec(channels=3, size=32, min_frames=1)
    layers = {"stats": "per-quadrant channel means and standard deviations",
              "means": "per-frame channel means"}
    trunk_kind = "frames"
    calls = 0          # forward passes, over all instances
    windows = 0        # windows (clips) seen
    frames = 0         # frames seen
    delay = float(os.environ.get("FAKE_DELAY") or 0)     # seconds per forward pass

    def count(self, x: torch.Tensor) -> None:
        CountingBackbone.calls += 1
        CountingBackbone.windows += x.shape[0]
        CountingBackbone.frames += x.shape[0] * x.shape[2]
        if self.delay:
            time.sleep(self.delay)

    def forward(self, x: torch.Tensor, layer: str = "stats") -> torch.Tensor:
        self.check_layer(layer)
        self.count(x)
        if layer == "means":
            return x.mean(dim=(3, 4), keepdim=True)
        b, c, t, h, w = x.shape
        q = x.reshape(b, c, t, 2, h // 2, 2, w // 2)
        return torch.cat([q.mean(dim=(4, 6)), q.std(dim=(4, 6))], dim=1)


class CountingFlowBackbone(CountingBackbone):
    """The same on 2-channel flow frames: (B, 4, T, 1, 1)."""

    spec = InputSpec(channels=2, size=32, min_frames=1, mean=(0.5, 0.5), std=(0.5, 0.5))


class CountingTemporalBackbone(CountingBackbone):
    """Convolutional in time: "cells" averages the per-frame channel means over pairs of frames
    (B, 3, ceil(T/2), 1, 1) (an odd last frame is repeated); "logits" averages 2 cells with
    stride 1 and applies a fixed linear map (B, 4, ceil(T/2) - 1, 1, 1): linear after the trunk,
    like Inception I3D's pool and logits. Counts into CountingBackbone's counters."""

    spec = InputSpec(channels=3, size=32, min_frames=4)
    layers = {"cells": "per-frame channel means averaged over frame pairs (stride 2)",
              "logits": "a fixed linear map of 2-cell averages"}
    trunk_kind = "temporal"
    TRUNK = {"cells": TrunkLayer("cells", stride=2), "logits": TrunkLayer("cells", stride=2, kernel=2, head=True)}

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 12).reshape(4, 3), requires_grad=False)

    def forward(self, x: torch.Tensor, layer: str = "cells") -> torch.Tensor:
        self.check_layer(layer)
        self.count(x)
        m = x.mean(dim=(3, 4))                                  # (B, C, T)
        if m.shape[2] % 2:
            m = torch.cat([m, m[:, :, -1:]], dim=2)
        cells = torch.nn.functional.avg_pool1d(m, 2, 2)          # (B, C, ceil(T/2))
        if layer == "cells":
            return cells[..., None, None]
        pairs = torch.nn.functional.avg_pool1d(cells, 2, 1)     # (B, C, P)
        return torch.einsum("dc,bcp->bdp", self.weight, pairs)[..., None, None]

    def trunk_layer(self, layer: str) -> TrunkLayer:
        self.check_layer(layer)
        return self.TRUNK[layer]

    def trunk_head(self, layer: str, v: torch.Tensor) -> torch.Tensor:
        return v @ self.weight.T if self.TRUNK[layer].head else v


class NoTrunkBackbone(CountingBackbone):
    trunk_kind = None


if "fake_counting" not in BACKBONES:
    register("fake_counting", trunk="frames")(
        lambda *, weights, seed: (CountingBackbone(), WeightsInfo("none", seed=seed)))
    register("fake_counting_flow", trunk="frames")(
        lambda *, weights, seed: (CountingFlowBackbone(), WeightsInfo("none", seed=seed)))
    register("fake_counting_temporal", trunk="temporal")(
        lambda *, weights, seed: (CountingTemporalBackbone(), WeightsInfo("none", seed=seed)))
    register("fake_no_trunk")(lambda *, weights, seed: (NoTrunkBackbone(), WeightsInfo("none", seed=seed)))

if os.environ.get("FAKE_KILL_AT"):
    _kill_at, _seen = int(os.environ["FAKE_KILL_AT"]), [0]
    _original = features.write_item

    def _killing_write_item(*args, **kwargs):
        _original(*args, **kwargs)
        _seen[0] += 1
        if _seen[0] == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    features.write_item = _killing_write_item

if os.environ.get("FAKE_KILL_ONCE"):
    _marker, _write_item = os.environ["FAKE_KILL_ONCE"], features.write_item

    def _killing_once(*args, **kwargs):
        _write_item(*args, **kwargs)
        try:
            os.close(os.open(_marker, os.O_CREAT | os.O_EXCL))     # only the first caller
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    features.write_item = _killing_once


def arm_chaos(kill_at: int) -> list[int]:
    """Count this process's calls into pipeline/, stages/ and h5py code (every thread, from now
    on); at the `kill_at`-th (0: never) SIGKILL the whole process group, worker processes
    included: a crash at an arbitrary moment. Returns the counter, [calls so far]."""
    roots = tuple(str(Path(m.__file__).parent) + os.sep for m in (pipeline, stages, h5py))
    calls = [0]

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(roots):
            calls[0] += 1
            if calls[0] == kill_at:
                os.killpg(os.getpgid(0), signal.SIGKILL)

    sys.setprofile(profile)
    threading.setprofile(profile)
    return calls


if os.environ.get("CHAOS_KILL_AT"):          # a worker process of a chaos run: armed on import
    arm_chaos(int(os.environ["CHAOS_KILL_AT"]))
