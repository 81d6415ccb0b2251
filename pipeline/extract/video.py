"""Decoding and window sampling: the index arithmetic of docs/method.md (pure functions) and a
streaming cutter that decodes each video once and yields every (L, s) window from those frames.

Memory is bounded by the longest window span, not by the video's length; files from outside are
bounded too (frame size, frame count) and images are refused as "not a video".
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

log = logging.getLogger(__name__)

MAX_FRAME_PIXELS = 7680 * 4320   # 8K UHD: a larger frame (before or after resizing) is refused
MAX_FRAMES = 2_000_000           # ~9 h at 60 fps: decoding stops with an error past this
# still-image formats FFmpeg would open as a 1-frame "video" (animated GIF is left as a video)
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
                    b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}

_shortfalls: dict[str, tuple[int, int]] = {}   # real path -> (claimed, decoded), this process
_shortfalls_lock = threading.Lock()


class VideoError(RuntimeError):
    """A video cannot be decoded as asked; the message names the file."""


def image_format(path: str | Path) -> str | None:
    """The still-image format of the file at `path` by its first bytes ("PNG", ...), or None."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)


def record_shortfall(path: str | Path, claimed: int, decoded: int) -> None:
    """Note that the video at `path` decoded `decoded` of the `claimed` frames (see
    take_shortfall); the item writer turns it into a warning or, strictly, a failure."""
    with _shortfalls_lock:
        _shortfalls[os.path.realpath(path)] = (int(claimed), int(decoded))


def peek_shortfall(path: str | Path) -> tuple[int, int] | None:
    with _shortfalls_lock:
        return _shortfalls.get(os.path.realpath(path))


def take_shortfall(path: str | Path) -> tuple[int, int] | None:
    """(claimed, decoded) frames of the last complete decode of `path` in this process if it
    came up short, else None; forgotten once taken."""
    with _shortfalls_lock:
        return _shortfalls.pop(os.path.realpath(path), None)


def shortfalls_pending() -> bool:
    return bool(_shortfalls)


def check_frame_size(path: Path, height: int, width: int, size: int, crop: bool) -> None:
    """Refuse frames (as decoded, and as resized to short side `size`) above MAX_FRAME_PIXELS:
    an untrusted file cannot make one frame, or the ring of frames, exhaust memory."""
    if height <= 0 or width <= 0:
        raise VideoError(f"{path}: not a video (no video stream)")
    out = (height, width) if not size else (size, size) if crop else (
        max(size, round(height * size / min(height, width))),
        max(size, round(width * size / min(height, width))))
    for what, (h, w) in (("frames", (height, width)), ("resized frames", out)):
        if h * w > MAX_FRAME_PIXELS:
            raise VideoError(f"{path}: {what} of {w}x{h} px exceed the limit of "
                             f"{MAX_FRAME_PIXELS} px (pipeline.extract.video.MAX_FRAME_PIXELS); refused")


@dataclasses.dataclass(frozen=True)
class WindowGroup:
    """Windows of `length` frames taken every `step` frames, starting every `stride` frames."""

    length: int
    stride: int
    step: int

    @property
    def span(self) -> int:
        """Frames covered by one window: (L - 1) * s + 1."""
        return (self.length - 1) * self.step + 1

    @property
    def name(self) -> str:
        return f"L{self.length}_s{self.step}"


def window_starts(num_frames: int, group: WindowGroup) -> np.ndarray:
    """Start frames (W,) of the windows of a video of `num_frames` frames (docs/method.md, Stage 1).

    Starts are 0, S, 2S, ... while start + span <= F; if the last window does not reach the final
    frame, one more starts at F - span. A video shorter than one span has one window at 0.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: a video needs at least one frame")
    if num_frames < group.span:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_frames - group.span + 1, group.stride, dtype=np.int64)
    if starts[-1] + group.span < num_frames:
        starts = np.append(starts, num_frames - group.span)
    return starts


def window_frames(num_frames: int, group: WindowGroup, start: int) -> np.ndarray:
    """Frame indices (L,) of the window at `start`.

    A video shorter than one span uses all its frames, evenly spaced over L positions
    (repeating frames when F < L; deterministic, where the authors repeat at random) (ours).
    """
    if num_frames < group.span:
        return np.round(np.linspace(0, num_frames - 1, group.length)).astype(np.int64)
    return start + group.step * np.arange(group.length, dtype=np.int64)


def window_indices(num_frames: int, group: WindowGroup) -> tuple[np.ndarray, np.ndarray]:
    """(starts (W,), frame indices (W, L)) of every window of a group."""
    starts = window_starts(num_frames, group)
    return starts, np.stack([window_frames(num_frames, group, int(s)) for s in starts])


class WindowCutter:
    """Cuts every window of every group from frames pushed one at a time (in order, once).

    `push(frame)` returns the regular windows that end on that frame; `finish()` returns the tail
    and short-video windows, known only once the true frame count is (so a container whose
    frame-count metadata lies cannot shift them). Windows are (group index, start, clip (L, ...)).
    Frames are kept in a ring of the longest span: memory does not grow with the video.
    Together they yield exactly the windows of `window_indices`.
    """

    def __init__(self, groups: list[WindowGroup]):
        self.groups = groups
        self.max_span = max(g.span for g in groups)
        self.ring: dict[int, np.ndarray] = {}
        self.next_start = [0] * len(groups)
        self.count = 0

    def push(self, frame: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        f, ring = self.count, self.ring
        ring[f] = frame
        ring.pop(f - self.max_span, None)
        self.count += 1
        out = []
        for gi, g in enumerate(self.groups):
            start = self.next_start[gi]
            if start + g.span - 1 == f:
                out.append((gi, start, np.stack([ring[start + j * g.step] for j in range(g.length)])))
                self.next_start[gi] = start + g.stride
        return out

    def finish(self) -> list[tuple[int, int, np.ndarray]]:
        if self.count == 0:
            raise VideoError("no frames could be decoded")
        out = []
        for gi, g in enumerate(self.groups):
            emitted = self.next_start[gi] // g.stride if self.count >= g.span else 0
            for start in window_starts(self.count, g)[emitted:]:
                idx = window_frames(self.count, g, int(start))
                out.append((gi, int(start), np.stack([self.ring[int(i)] for i in idx])))
        return out


def cut_windows(frames: Iterable[np.ndarray], groups: list[WindowGroup]
                ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream (group index, start, clip (L, H, W, C)) for every window of every group,
    consuming `frames` once (a `WindowCutter` over an iterable)."""
    cutter = WindowCutter(groups)
    for frame in frames:
        yield from cutter.push(frame)
    yield from cutter.finish()


def resize_short_side(frame: np.ndarray, size: int, crop: bool) -> np.ndarray:
    """Resize so the short side is `size` px (area filter when shrinking); centre-crop if asked."""
    h, w = frame.shape[:2]
    if size and min(h, w) != size:
        scale = size / min(h, w)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, new, interpolation=interp)
        h, w = frame.shape[:2]
    if size and crop:
        y, x = (h - size) // 2, (w - size) // 2
        frame = frame[y:y + size, x:x + size]
    return frame


class VideoReader:
    """Sequential RGB frames of a video (or of its [start, end) range) via OpenCV.

    `decoded` counts frames pulled from the decoder, for the decode-once benchmark. A whole video
    that decodes fewer frames than its container claims is recorded (`take_shortfall`). Images
    ("not a video"), frames above MAX_FRAME_PIXELS and videos past MAX_FRAMES raise VideoError.
    """

    def __init__(self, path: str | Path, *, frames: tuple[int, int] | None = None,
                 size: int = 0, crop: bool = False):
        self.path, self.range, self.size, self.crop = Path(path), frames, size, crop
        self.decoded = 0

    def _open(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file (0 bytes)")
        image = image_format(self.path)
        if image is not None:
            raise VideoError(f"{self.path}: not a video (a {image} image)")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise VideoError(f"{self.path}: cannot be opened as a video (corrupt, not a video, "
                             f"or a codec this OpenCV build lacks)")
        try:
            check_frame_size(self.path, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                             int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), self.size, self.crop)
        except VideoError:
            cap.release()
            raise
        return cap

    def metadata(self) -> dict:
        cap = self._open()
        try:
            return {"frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                    "fps": float(cap.get(cv2.CAP_PROP_FPS)),
                    "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
        finally:
            cap.release()

    def _seek(self, cap: cv2.VideoCapture, start: int) -> cv2.VideoCapture:
        """Position `cap` at frame `start`: a frame-accurate seek (FFmpeg seeks to the keyframe
        before and decodes forward) when the container reports it, else grabbing from the start."""
        if cap.set(cv2.CAP_PROP_POS_FRAMES, start) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == start:
            return cap
        cap.release()
        cap = self._open()
        for skipped in range(start):
            if not cap.grab():
                raise VideoError(f"{self.path}: frame range starts at {start} but the video ends "
                                 f"after {skipped} frames")
        return cap

    def __iter__(self) -> Iterator[np.ndarray]:
        cap = self._open()
        try:
            claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            start, end = self.range if self.range is not None else (0, None)
            if start:
                cap = self._seek(cap, start)
            f, shape = start, None
            while end is None or f < end:
                ok, frame = cap.read()
                if not ok:
                    if end is not None:
                        raise VideoError(f"{self.path}: frame range [{start}, {end}) passes the "
                                         f"end of the video ({f} frames)")
                    if self.range is None and 0 < f < claimed:
                        log.warning("%s: decoded %d of the %d frames its container claims",
                                    self.path, f, claimed)
                        record_shortfall(self.path, claimed, f)
                    elif self.range is None:
                        take_shortfall(self.path)    # an earlier short decode no longer holds
                    break
                if frame.shape != shape:             # the header may lie about the size
                    check_frame_size(self.path, frame.shape[0], frame.shape[1], self.size, self.crop)
                    shape = frame.shape
                if f - start >= MAX_FRAMES:
                    raise VideoError(f"{self.path}: more than {MAX_FRAMES} frames "
                                     f"(pipeline.extract.video.MAX_FRAMES); refused")
                self.decoded += 1
                f += 1
                yield resize_short_side(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.size, self.crop)
        finally:
            cap.release()
