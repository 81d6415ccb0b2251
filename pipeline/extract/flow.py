"""Dense optical flow between consecutive frames (OpenCV TV-L1, DIS, Farneback) and its scaling to
the input of I3D's flow stream; `FlowStream` computes it frame by frame while decoding.
"""
from __future__ import annotations

import logging
from typing import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

# A flow estimator: (previous gray (H, W) uint8, next gray (H, W) uint8) -> (H, W, 2) float32 (dx, dy),
# such that prev[y, x] ~ next[y + dy, x + dx]. Estimators may hold OpenCV state; one per stream.
Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
FLOW_METHODS: dict[str, Callable[[], Estimator]] = {}

FLOW_BOUND = 20.0   # I3D flow stream: flow clipped to [-20, 20] px, then divided by 20


def register_method(name: str) -> Callable[[Callable[[], Estimator]], Callable[[], Estimator]]:
    """Decorator: add an estimator factory to FLOW_METHODS under `name`."""
    def add(factory: Callable[[], Estimator]) -> Callable[[], Estimator]:
        if name in FLOW_METHODS:
            raise ValueError(f"flow method {name!r} is registered twice")
        FLOW_METHODS[name] = factory
        return factory
    return add


@register_method("tvl1")
def tvl1() -> Estimator:
    """Dual TV-L1 (Zach et al. 2007) with OpenCV's default parameters, the flow the I3D authors
    (Carreira & Zisserman 2017) fed their flow stream. Accurate and slow."""
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda prev, nxt: algo.calc(prev, nxt, None)


@register_method("dis")
def dis() -> Estimator:
    """Dense Inverse Search (Kroeger et al. 2016), MEDIUM preset (ours): far faster than TV-L1."""
    algo = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return lambda prev, nxt: algo.calc(prev, nxt, None)


@register_method("farneback")
def farneback() -> Estimator:
    """Farneback (2003) polynomial expansion; parameters of OpenCV's tutorial (ours): pyramid
    scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2."""
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def make_estimator(method: str) -> Estimator:
    if method not in FLOW_METHODS:
        raise ValueError(f"flow method={method!r} is unknown; choose one of {sorted(FLOW_METHODS)}")
    return FLOW_METHODS[method]()


def to_gray(frame: np.ndarray) -> np.ndarray:
    """frame: (H, W, 3) uint8 RGB or (H, W) uint8 gray -> (H, W) uint8 gray (contiguous)."""
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    raise ValueError(f"a frame must be (H, W, 3) RGB or (H, W) gray, got {frame.shape}")


def compute_flow(frames: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """frames: (T, H, W, 3) uint8 RGB or (T, H, W) uint8 gray -> flow (T-1, H, W, 2) float32 in
    pixels, channel 0 = x (right), 1 = y (down); flow[t] carries frame t to frame t+1."""
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got {frames.shape}")
    estimate = make_estimator(method)
    h, w = frames.shape[1:3]
    out = np.empty((max(len(frames) - 1, 0), h, w, 2), dtype=np.float32)
    prev = to_gray(frames[0]) if len(frames) else None
    for t in range(1, len(frames)):
        nxt = to_gray(frames[t])
        out[t - 1] = estimate(prev, nxt)
        prev = nxt
    return out


class FlowStream:
    """Flow on a stream of frames: push(frame) returns the flow from the previous frame
    ((H, W, 2) float32) or None for the first frame. Keeps only the previous frame."""

    def __init__(self, method: str = "tvl1"):
        self.method = method
        self._estimate = make_estimator(method)
        self._prev: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """frame: (H, W, 3) uint8 RGB or (H, W) uint8 gray -> (H, W, 2) float32 or None."""
        gray = to_gray(np.asarray(frame))
        prev, self._prev = self._prev, gray
        if prev is None:
            return None
        if prev.shape != gray.shape:
            raise ValueError(f"frame size changed from {prev.shape} to {gray.shape}")
        return np.asarray(self._estimate(prev, gray), dtype=np.float32)

    def reset(self) -> None:
        """Forget the previous frame (start of a new video)."""
        self._prev = None


def flow_to_input(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """flow: (..., 2) pixels -> float32 in [-1, 1]: clipped to [-bound, bound], divided by bound
    (bound = 20 as for I3D's flow stream)."""
    return (np.clip(flow, -bound, bound) / bound).astype(np.float32)


def flow_to_unit(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """flow: (..., 2) pixels -> float32 in [0, 1], i.e. flow_to_input mapped so that the flow
    backbones' InputSpec (mean 0.5, std 0.5) normalises it back to flow_to_input."""
    return ((flow_to_input(flow, bound) + 1.0) / 2.0).astype(np.float32)


class AlignedFlow:
    """Flow frames aligned with the RGB frames, so both streams have the same windows.

    Flow frame i is the motion from frame i to i + 1, scaled by `flow_to_unit` to [0, 1] (a flow
    backbone's mean = std = 0.5 maps it to I3D's [-1, 1]); the last frame repeats the one before
    (a one-frame video has zero flow) (ours). `push(frame)` returns flow frame i - 1 when frame i
    arrives (None for the first); `finish()` returns the last one.
    """

    def __init__(self, method: str = "tvl1"):
        self._stream = FlowStream(method)
        self._last: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        self._shape = frame.shape[:2]
        flow = self._stream.push(frame)
        if flow is not None:
            self._last = flow_to_unit(flow)
        return self._last if flow is not None else None

    def finish(self) -> np.ndarray:
        if self._last is None:
            if self._shape is None:
                raise ValueError("no frames were pushed")
            return np.full((*self._shape, 2), 0.5, np.float32)      # zero flow
        return self._last
