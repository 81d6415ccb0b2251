"""Test doubles: counting fake backbones registered as "fake_counting" (RGB) and
"fake_counting_flow" (2-channel flow), cheap and deterministic.

Importing this module registers it; with FAKE_KILL_AT=k in the environment the k-th extracted
item SIGKILLs the process after writing its temporary file (a crash mid-run); with CHAOS_KILL_AT=k
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
from pipeline.extract.backbones import BACKBONES, Backbone, InputSpec, WeightsInfo, register


class CountingBackbone(Backbone):
    """Layer "stats": per-channel mean and std of each quadrant of each frame (B, 2C, T, 2, 2);
    "means": per-channel frame means (B, C, T, 1, 1)."""

    spec = InputSpec(channels=3, size=32, min_frames=1)
    layers = {"stats": "per-quadrant channel means and standard deviations",
              "means": "per-frame channel means"}
    calls = 0          # forward passes, over all instances
    windows = 0        # windows seen
    delay = float(os.environ.get("FAKE_DELAY") or 0)     # seconds per forward pass

    def forward(self, x: torch.Tensor, layer: str = "stats") -> torch.Tensor:
        self.check_layer(layer)
        type(self).calls += 1
        type(self).windows += x.shape[0]
        if self.delay:
            time.sleep(self.delay)
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
