"""A synthetic action dataset the project generates itself: textured sprites whose classes differ
only in motion (direction, speed, rotation, zoom) over varied textured backgrounds.

Layout written under root: `<class>/<class>_<k>.<ext>` videos and `dataset.json` (generation
parameters and the fixed train/test split "sp1"). Deterministic from `seed`; generated once,
atomically (a temporary folder renamed into place), and reused while the parameters match.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Motion:
    """Per-frame motion of the sprite: translation (px), rotation (deg), log-scale change."""

    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0
    zoom: float = 0.0


# Speeds are per frame at 128 px; they scale with the frame size.
MOTIONS = {
    "move_right": Motion(vx=1.2),
    "move_left": Motion(vx=-1.2),
    "move_up": Motion(vy=-1.2),
    "move_down": Motion(vy=1.2),
    "move_right_fast": Motion(vx=3.0),
    "move_left_fast": Motion(vx=-3.0),
    "rotate_cw": Motion(spin=4.0),
    "rotate_ccw": Motion(spin=-4.0),
    "zoom_in": Motion(zoom=0.025),
    "zoom_out": Motion(zoom=-0.025),
}
CODECS = {"mp4v": ".mp4", "FFV1": ".avi"}   # lossy like real data; lossless for exact tests


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """(size, size, 3) float in [0, 1]: colour noise blurred at `scale` px, contrast-stretched."""
    img = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), scale)
    img -= img.min(axis=(0, 1))
    return img / np.maximum(img.max(axis=(0, 1)), 1e-6)


def _grating(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 24) * size / 128
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    colours = rng.random((2, 3)).astype(np.float32)
    return colours[0] * wave[..., None] + colours[1] * (1 - wave[..., None])


def _checker(rng: np.random.Generator, size: int) -> np.ndarray:
    cell = int(rng.integers(4, 16) * size / 128) or 1
    yy, xx = np.mgrid[0:size, 0:size] // cell
    colours = rng.random((2, 3)).astype(np.float32)
    return np.where(((xx + yy) % 2)[..., None] == 0, colours[0], colours[1])


TEXTURES = {
    "noise": lambda rng, size: _smooth_noise(rng, size, rng.uniform(1.0, 4.0) * size / 128),
    "grating": _grating,
    "checker": _checker,
}


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    name = list(TEXTURES)[rng.integers(len(TEXTURES))]
    return TEXTURES[name](rng, size)


def render_video(motion: Motion, rng: np.random.Generator, *, frames: int, size: int) -> np.ndarray:
    """(frames, size, size, 3) uint8 BGR: a textured sprite moving by `motion` over a texture."""
    background = 0.25 + 0.5 * _texture(rng, size)               # keep the sprite visible
    sprite_size = int(size * rng.uniform(0.3, 0.42))
    sprite = _texture(rng, sprite_size)
    sprite = np.clip(sprite * 1.3 - 0.15, 0, 1)
    mask = np.zeros((sprite_size, sprite_size), np.float32)
    shape = rng.integers(3)
    c = sprite_size / 2
    if shape == 0:
        cv2.circle(mask, (int(c), int(c)), int(c * 0.95), 1.0, -1)
    elif shape == 1:
        cv2.rectangle(mask, (int(c * 0.2), int(c * 0.2)), (int(c * 1.8), int(c * 1.8)), 1.0, -1)
    else:
        pts = np.array([[c, c * 0.1], [c * 1.9, c * 1.8], [c * 0.1, c * 1.8]], np.int32)
        cv2.fillPoly(mask, [pts], 1.0)
    scale_px = size / 128
    speed = rng.uniform(0.8, 1.2)
    vx, vy = motion.vx * scale_px * speed, motion.vy * scale_px * speed
    # start so that the path is centred in the frame
    x0 = size / 2 - vx * (frames - 1) / 2 + rng.uniform(-0.1, 0.1) * size
    y0 = size / 2 - vy * (frames - 1) / 2 + rng.uniform(-0.1, 0.1) * size
    angle0 = rng.uniform(0, 360)
    log_scale0 = rng.uniform(-0.1, 0.1) - motion.zoom * speed * (frames - 1) / 2
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        scale = math.exp(log_scale0 + motion.zoom * speed * t)
        m = cv2.getRotationMatrix2D((c, c), angle0 + motion.spin * speed * t, scale)
        m[:, 2] += (x0 + vx * t - c, y0 + vy * t - c)
        warped = cv2.warpAffine(sprite, m, (size, size), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR)[..., None]
        frame = alpha * warped + (1 - alpha) * background
        frame += rng.normal(0, 0.01, frame.shape).astype(np.float32)   # sensor noise
        video[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return video


def write_video(path: Path, video: np.ndarray, *, fps: float, codec: str) -> None:
    """Write (T, H, W, 3) uint8 BGR frames with OpenCV; raises if the codec is unavailable."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, video.shape[2:0:-1])
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write codec {codec!r} to {path}")
    for frame in video:
        writer.write(frame)
    writer.release()


@register_dataset("synthetic")
class SyntheticDataset(Dataset):
    """The demo set. Options: classes (count, from MOTIONS), videos_per_class, train_per_class,
    frames, size (px), fps, codec ("mp4v" or lossless "FFV1"), seed."""

    name = "synthetic"
    layout = "<class>/<class>_<k>.mp4 and dataset.json (generated by the project)"
    generated = True

    def __init__(self, root: Path, *, classes: int = len(MOTIONS), videos_per_class: int = 12,
                 train_per_class: int = 8, frames: int = 48, size: int = 128, fps: float = 25.0,
                 codec: str = "mp4v", seed: int = 0):
        if not 2 <= classes <= len(MOTIONS):
            raise DatasetError(f"classes={classes}: synthetic needs 2 <= classes <= {len(MOTIONS)}")
        if not 1 <= train_per_class < videos_per_class:
            raise DatasetError(f"train_per_class={train_per_class}: needs 1 <= train_per_class "
                               f"< videos_per_class={videos_per_class}")
        if codec not in CODECS:
            raise DatasetError(f"codec={codec!r}: choose one of {sorted(CODECS)}")
        if frames < 1 or size < 16:
            raise DatasetError(f"frames={frames}, size={size}: need frames >= 1 and size >= 16")
        self.root = Path(root)
        self.params = dict(classes=list(MOTIONS)[:classes], videos_per_class=videos_per_class,
                           train_per_class=train_per_class, frames=frames, size=size, fps=fps,
                           codec=codec, seed=seed)
        self._ensure_generated()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.params["classes"])

    def _video_ids(self) -> list[tuple[str, int, int]]:
        ext = CODECS[self.params["codec"]]
        return [(f"{name}/{name}_{k:03d}{ext}", label, k)
                for label, name in enumerate(self.classes)
                for k in range(self.params["videos_per_class"])]

    def items(self) -> list[Item]:
        return [Item(vid, self.root / vid, (label,)) for vid, label, _ in self._video_ids()]

    def splits(self) -> dict[str, dict[str, str]]:
        n_train = self.params["train_per_class"]
        return {"sp1": {vid: TRAIN if k < n_train else TEST for vid, _, k in self._video_ids()}}

    def _ensure_generated(self) -> None:
        meta = self.root / "dataset.json"
        if meta.is_file():
            found = json.loads(meta.read_text())
            if found != self.params:
                raise DatasetError(
                    f"{meta}: this synthetic dataset was generated with other parameters "
                    f"({found}); delete {self.root} or pass another root= to generate anew")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise DatasetError(f"{self.root} exists but holds no dataset.json; it is not a "
                               f"synthetic dataset: pass another root=")
        log.info("generating synthetic dataset in %s (%s)", self.root, self.params)
        tmp = self.root.with_name(f".{self.root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            p = self.params
            for vid, label, k in self._video_ids():
                rng = np.random.default_rng([p["seed"], label, k])
                video = render_video(MOTIONS[self.classes[label]], rng,
                                     frames=p["frames"], size=p["size"])
                (tmp / vid).parent.mkdir(parents=True, exist_ok=True)
                write_video(tmp / vid, video, fps=p["fps"], codec=p["codec"])
            (tmp / "dataset.json").write_text(json.dumps(self.params, indent=1))
            if self.root.exists():
                self.root.rmdir()
            self.root.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
