"""Improved dense trajectories (Wang & Schmid, ICCV 2013): dense sampling on a spatial pyramid,
tracking by median-filtered dense flow, camera motion removed by a RANSAC homography, static and
erratic tracks pruned. All trajectories of a scale advance together (numpy arrays, no per-track
loop); descriptors are sampled along them as they go (pipeline.idt.descriptors).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from pipeline.extract.flow import dis, to_gray
from pipeline.idt.descriptors import assemble, frame_descriptors, frame_slices
from pipeline.idt.settings import IDTConfig
from pipeline.extract.video import VideoReader

log = logging.getLogger(__name__)

# Camera motion, as DenseTrackStab: goodFeaturesToTrack points carried by the flow, merged with
# descriptor matches searched within 25 px; RANSAC with a 1 px threshold; the homography is used
# only with > 50 correspondences and > 25 inliers, else the identity.
FLOW_MATCHES, MATCH_WINDOW, RANSAC_PX, MIN_MATCHES, MIN_INLIERS = 1000, 25, 1.0, 50, 25

Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def farneback(config: IDTConfig, levels: int) -> Estimator:
    """Farneback (2003) with DenseTrackStab's parameters: a pyramid of the trajectory scales
    (factor 1/sqrt(2)), window 10, 2 iterations, polynomial neighbourhood 7, sigma 1.5."""
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(
        prev, nxt, None, config.idt_scale_factor, levels, 10, 2, 7, 1.5, 0)


FLOW_ESTIMATORS: dict[str, Callable[[IDTConfig, int], Estimator]] = {
    "farneback": farneback,
    "dis": lambda config, levels: dis(),   # pipeline.extract.flow's DIS (MEDIUM preset): ~3x faster
}


def pyramid_scales(width: int, height: int, config: IDTConfig) -> list[tuple[float, int, int]]:
    """(scale, width, height) of each pyramid level: scale = (1/factor)^i, sizes rounded, as
    many levels as keep the short side >= idt_patch (at most idt_scales, at least one)."""
    short, levels = float(min(width, height)), 0
    while short >= config.idt_patch:
        short *= config.idt_scale_factor
        levels += 1
    levels = max(1, min(levels, config.idt_scales))
    out = []
    for i in range(levels):
        s = (1.0 / config.idt_scale_factor) ** i
        out.append((s, int(round(width / s)), int(round(height / s))))
    return out


def dense_sample(grey: np.ndarray, occupied: np.ndarray, config: IDTConfig) -> np.ndarray:
    """New points (m, 2) float32 at the centres of the grid cells (idt_stride px) that hold no
    tracked point and whose min eigenvalue exceeds idt_quality * the frame's maximum.

    grey: (H, W) uint8; occupied: (n, 2) x, y of the points being tracked (DenseSample).
    """
    step = config.idt_stride
    eig = cv2.cornerMinEigenVal(grey, 3, 3)
    gh, gw = grey.shape[0] // step, grey.shape[1] // step
    free = np.ones((gh, gw), dtype=bool)
    if len(occupied):
        cell = np.floor(occupied).astype(np.int64) // step
        inside = (cell[:, 0] >= 0) & (cell[:, 0] < gw) & (cell[:, 1] >= 0) & (cell[:, 1] < gh)
        free[cell[inside, 1], cell[inside, 0]] = False
    ys = np.arange(gh) * step + step // 2
    xs = np.arange(gw) * step + step // 2
    keep = free & (eig[ys[:, None], xs[None, :]] > eig.max() * config.idt_quality)
    iy, ix = np.nonzero(keep)
    return np.stack([xs[ix], ys[iy]], axis=1).astype(np.float32)


def sample_flow(flow: np.ndarray, points: np.ndarray, median: int) -> np.ndarray:
    """Flow (H, W, 2) at the nearest pixel of each point (n, 2), median-filtered over the
    median x median neighbourhood (border pixels repeated) -> (n, 2) float32."""
    h, w = flow.shape[:2]
    x = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, w - 1)
    y = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, h - 1)
    if median == 1:
        return flow[y, x]
    r = np.arange(-(median // 2), median // 2 + 1)
    yy = np.clip(y[:, None, None] + r[None, :, None], 0, h - 1)
    xx = np.clip(x[:, None, None] + r[None, None, :], 0, w - 1)
    return np.median(flow[yy, xx].reshape(len(points), -1, 2), axis=1).astype(np.float32)


def compensate_flow(flow: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) from frame t to t+1 with the camera motion `homography` (t -> t+1 pixel
    coordinates) removed: the flow to frame t+1 warped back by the homography's inverse,
    w(x) = H^-1 (x + f(x)) - x, what DenseTrackStab obtains by recomputing the flow to the
    warped frame (ours: composing is exact for the same flow and costs no second flow)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    X, Y = xs + flow[..., 0], ys + flow[..., 1]
    m = np.linalg.inv(homography).astype(np.float32)
    d = m[2, 0] * X + m[2, 1] * Y + m[2, 2]
    out = np.empty_like(flow)
    out[..., 0] = (m[0, 0] * X + m[0, 1] * Y + m[0, 2]) / d - xs
    out[..., 1] = (m[1, 0] * X + m[1, 1] * Y + m[1, 2]) / d - ys
    return out


class CameraMotion:
    """Homography between consecutive frames from feature correspondences (RANSAC).

    Correspondences: up to 1000 goodFeaturesToTrack corners moved by the flow, plus ORB matches
    (idt_orb_features; the original uses SURF) searched within 25 px. Keeps the previous frame's
    ORB keypoints, so frames must come in order.
    """

    def __init__(self, config: IDTConfig):
        self.orb = cv2.ORB_create(config.idt_orb_features) if config.idt_orb_features else None
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._prev: tuple[np.ndarray, np.ndarray | None] | None = None

    def _keypoints(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kps, desc = self.orb.detectAndCompute(grey, None)
        return np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2), desc

    def _orb_matches(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prev = self._prev if self._prev is not None else (np.zeros((0, 2), np.float32), None)
        cur = self._keypoints(grey)
        self._prev = cur
        (p0, d0), (p1, d1) = prev, cur
        if d0 is None or d1 is None or not len(p0) or not len(p1):
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        near = np.all(np.abs(p1[:, None, :] - p0[None, :, :]) <= MATCH_WINDOW, axis=2)
        matches = self.matcher.match(d1, d0, near.astype(np.uint8))
        qi = np.array([m.queryIdx for m in matches], dtype=np.int64)
        ti = np.array([m.trainIdx for m in matches], dtype=np.int64)
        return p0[ti].reshape(-1, 2), p1[qi].reshape(-1, 2)

    def start(self, grey: np.ndarray) -> None:
        """The first frame of a sequence."""
        self._prev = self._keypoints(grey) if self.orb is not None else None

    def __call__(self, prev_grey: np.ndarray, grey: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """prev_grey, grey: (H, W) uint8 frames t, t+1; flow: (H, W, 2) t -> t+1 -> (3, 3)."""
        corners = cv2.goodFeaturesToTrack(prev_grey, FLOW_MATCHES, 0.001, 3)
        src = corners.reshape(-1, 2) if corners is not None else np.zeros((0, 2), np.float32)
        dst = src + sample_flow(flow, src, 1)
        if self.orb is not None:
            s, d = self._orb_matches(grey)
            src, dst = np.concatenate([src, s]), np.concatenate([dst, d])
        if len(src) > MIN_MATCHES:
            H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX)
            if H is not None and int(inliers.sum()) > MIN_INLIERS:
                return H
        return np.eye(3)


class _Tracks:
    """The live trajectories of one scale, as arrays: pos (n, L+1, 2), disp (n, L, 2) compensated
    steps, acc (n, t_cells, 132) per-frame descriptor sums per temporal cell, age (n,) steps."""

    def __init__(self, config: IDTConfig, dim: int):
        L = config.idt_length
        self.pos = np.zeros((0, L + 1, 2), np.float32)
        self.disp = np.zeros((0, L, 2), np.float32)
        self.acc = np.zeros((0, config.idt_t_cells, dim), np.float32)
        self.age = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.age)

    def current(self) -> np.ndarray:
        return self.pos[np.arange(len(self)), self.age]

    def update(self, keep: np.ndarray, points: np.ndarray) -> None:
        """Keep the rows where `keep` (n,) bool and append new tracks at points (m, 2), with one
        copy of each array."""
        k, m = int(keep.sum()), len(points)
        for name in ("pos", "disp", "acc", "age"):
            old = getattr(self, name)
            new = np.empty((k + m,) + old.shape[1:], old.dtype)
            np.compress(keep, old, axis=0, out=new[:k])
            new[k:] = 0
            setattr(self, name, new)
        self.pos[k:, 0] = points


def valid_trajectories(points: np.ndarray, disp: np.ndarray, config: IDTConfig) -> np.ndarray:
    """Which finished trajectories to keep, (n,) bool (DenseTrackStab's IsValid, IsCameraMotion).

    points: (n, L+1, 2) and disp: (n, L, 2) compensated steps, in full-frame pixels. Dropped:
    static (std of x and of y < idt_min_var), erratic (std of x or y > idt_max_var, or one step
    > idt_max_dis and > 70% of the length), and camera motion (every compensated step <=
    idt_min_motion px).
    """
    std = points.std(axis=1)
    steps = np.linalg.norm(np.diff(points, axis=1), axis=2)
    largest = steps.max(axis=1)
    static = np.all(std < config.idt_min_var, axis=1)
    erratic = (np.any(std > config.idt_max_var, axis=1)
               | ((largest > config.idt_max_dis) & (largest > 0.7 * steps.sum(axis=1))))
    moving = np.linalg.norm(disp, axis=2).max(axis=1) > config.idt_min_motion
    return ~static & ~erratic & moving


class DenseTracker:
    """Improved dense trajectories over a stream of frames, pushed one at a time.

    `push(frame)` ((H, W, 3) uint8 RGB or (H, W) grey) returns the trajectories that end on that
    frame: a list of batches (one per scale with any) for descriptors.assemble. `timings` adds up
    seconds per phase: flow, camera (homography + compensation), descriptors, tracking.
    """

    def __init__(self, config: IDTConfig = IDTConfig(), *, start_frame: int = 0,
                 timings: dict[str, float] | None = None):
        self.config = config
        self.start_frame = start_frame
        self.count = 0
        self.timings = timings if timings is not None else {}
        self.size: tuple[int, int] | None = None
        self.slices = frame_slices(config)
        self._dim = sum(s.stop - s.start for s in self.slices.values())
        self._prev_pyr: list[np.ndarray] = []

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0

    def _pyramid(self, grey: np.ndarray) -> list[np.ndarray]:
        pyr = [grey]
        for _, w, h in self.scales[1:]:    # each level from the previous one, as the original
            pyr.append(cv2.resize(pyr[-1], (w, h), interpolation=cv2.INTER_LINEAR))
        return pyr

    def _start(self, grey: np.ndarray) -> None:
        h, w = grey.shape
        if min(h, w) < self.config.idt_patch:
            raise ValueError(f"a {w}x{h} frame is smaller than the descriptor tube: "
                             f"idt_patch={self.config.idt_patch}")
        self.size = (w, h)
        self.scales = pyramid_scales(w, h, self.config)
        self.flow = FLOW_ESTIMATORS[self.config.idt_flow](self.config, len(self.scales))
        self.camera = CameraMotion(self.config) if self.config.idt_camera_motion else None
        self.tracks = [_Tracks(self.config, self._dim) for _ in self.scales]
        with self._timed("tracking"):
            self._prev_pyr = self._pyramid(grey)
            for tracks, level in zip(self.tracks, self._prev_pyr):
                tracks.update(np.zeros(0, dtype=bool), dense_sample(level, tracks.current(),
                                                                    self.config))
        if self.camera is not None:
            with self._timed("camera"):
                self.camera.start(grey)

    def _advance(self, tracks: _Tracks, flow: np.ndarray, warped: np.ndarray,
                 prev_level: np.ndarray, scale: float, w: int, h: int, t: int,
                 finished: list[dict]) -> np.ndarray:
        """Move one scale's tracks by a frame (flow, warped: (h, w, 2) raw and compensated, in the
        scale's pixels), add their descriptors on prev_level, hand the finished valid ones to
        `finished`; returns which rows live on, (n,) bool."""
        cfg = self.config
        with self._timed("tracking"):
            prev_points = tracks.current()
            points = prev_points + sample_flow(flow, prev_points, cfg.idt_median)
            inside = ((points[:, 0] > 0) & (points[:, 0] < w)
                      & (points[:, 1] > 0) & (points[:, 1] < h))
            live = np.flatnonzero(inside)
            age = tracks.age[live]
            tracks.disp[live, age] = sample_flow(warped, prev_points[live], cfg.idt_median)
        with self._timed("descriptors"):
            cell = age // cfg.t_stride
            use = cell < cfg.idt_t_cells
            if use.any():
                desc = frame_descriptors(prev_level, warped, prev_points[live[use]], cfg)
                tracks.acc[live[use], cell[use]] += desc
        with self._timed("tracking"):
            tracks.age[live] = age + 1
            tracks.pos[live, age + 1] = points[live]
            done = inside & (tracks.age >= cfg.idt_length)
            if done.any():
                pts, disp = tracks.pos[done] * scale, tracks.disp[done] * scale
                ok = valid_trajectories(pts, disp, cfg)
                if ok.any():
                    finished.append({"frame": self.start_frame + t, "scale": scale,
                                     "points": pts[ok], "disp": disp[ok],
                                     "acc": tracks.acc[done][ok]})
        return inside & ~done

    def push(self, frame: np.ndarray) -> list[dict]:
        grey = to_gray(np.asarray(frame))
        t, self.count = self.count, self.count + 1
        if t == 0:
            self._start(grey)
            return []
        if (grey.shape[1], grey.shape[0]) != self.size:
            raise ValueError(f"frame {self.start_frame + t} is {grey.shape[1]}x{grey.shape[0]}, "
                             f"the first was {self.size[0]}x{self.size[1]}")
        cfg = self.config
        prev_pyr = self._prev_pyr
        with self._timed("flow"):
            flow = self.flow(prev_pyr[0], grey)
        with self._timed("camera"):
            if self.camera is not None:
                warped = compensate_flow(flow, self.camera(prev_pyr[0], grey, flow))
            else:
                warped = flow
        with self._timed("tracking"):
            pyr = self._pyramid(grey)
        finished = []
        levels = zip(self.scales, self.tracks, prev_pyr, pyr)
        for (scale, w, h), tracks, prev_level, level in levels:
            if len(tracks):
                with self._timed("flow"):
                    if scale == 1.0:
                        f, fw = flow, warped
                    else:   # the full-resolution flow on this level, in its pixels
                        f = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale
                        fw = cv2.resize(warped, (w, h), interpolation=cv2.INTER_AREA) / scale
                alive = self._advance(tracks, f, fw, prev_level, scale, w, h, t, finished)
            else:
                alive = np.zeros(0, dtype=bool)
            with self._timed("tracking"):
                tracks.update(alive, dense_sample(level, tracks.current()[alive], cfg))
        self._prev_pyr = pyr
        return finished


def extract_idt(frames: Iterable[np.ndarray], config: IDTConfig = IDTConfig(), *,
                start_frame: int = 0, return_points: bool = False,
                timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Improved dense trajectories and their descriptors for a sequence of frames.

    frames: (H, W, 3) uint8 RGB (or (H, W) grey), in order; start_frame: absolute index of the
    first (for the header's frame numbers). Returns float32 arrays, one row per trajectory:
    {"header": (n, 10), "traj": (n, 2L), "hog": (n, 96), "hof": (n, 108), "mbhx": (n, 96),
    "mbhy": (n, 96)} in DenseTrackStab's conventions (header: frameNum, mean_x, mean_y, var_x,
    var_y, length, scale, x_pos, y_pos, t_pos), plus "points": (n, L+1, 2) (x, y in full-frame
    pixels, first to last) if asked.
    """
    tracker = DenseTracker(config, start_frame=start_frame, timings=timings)
    batches = []
    for frame in frames:
        batches.extend(tracker.push(frame))
    if tracker.size is None:
        raise ValueError("no frames: improved dense trajectories need at least one frame")
    w, h = tracker.size
    return assemble(batches, config, width=w, height=h, start_frame=start_frame,
                    num_frames=tracker.count, return_points=return_points)


def extract_idt_video(path: str | Path, config: IDTConfig = IDTConfig(), *,
                      frames: tuple[int, int] | None = None, return_points: bool = False,
                      timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """extract_idt on a video file decoded by pipeline.extract.video.VideoReader, on its frames
    [start, end) when `frames` is given (a segment; VideoError if it passes the end)."""
    reader = VideoReader(path, frames=frames)
    start = frames[0] if frames is not None else 0
    return extract_idt(reader, config, start_frame=start, return_points=return_points,
                       timings=timings)
