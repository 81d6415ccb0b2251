"""Where a video's windows lie in time and a strip of thumbnails of its frames, for the report's
attention figures (decoded once, at most THUMB_HEIGHT px high)."""
from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from pipeline.core.cache import item_path

log = logging.getLogger(__name__)

THUMB_HEIGHT = 96                      # px; the frame strip shows frames about this high


ALL_FRAMES_BYTES = 64 << 20            # keep every decoded thumbnail up to this size, else only


@dataclasses.dataclass
class Windows:
    """Where one video's windows lie: starts, lengths, steps (n_windows,), in the order of the
    trained model's window rows; the video's file, frame range and frame count."""

    starts: np.ndarray
    lengths: np.ndarray
    steps: np.ndarray
    path: Path
    frame_range: tuple[int, int] | None
    num_frames: int


def window_positions(features: Path, item_id: str, groups: list[str],
                     window_group: np.ndarray) -> Windows:
    """The windows of a stage-1 item in the order the sketched windows (and so the trained
    models' weights) list them: window_group (N,) indexes `groups`, and within a group the
    windows are in the order of the group's `starts` attribute (pipeline.pooling.descriptors.read_parts).
    Every stream and layer has the same windows, so the first part holding the groups is read."""
    with h5py.File(item_path(features, item_id), "r") as f:
        part = None

        def find(name, obj):
            nonlocal part
            if part is None and isinstance(obj, h5py.Dataset) and name.endswith("/" + groups[0]):
                part = name[: -len(groups[0]) - 1]
        f.visititems(find)
        if part is None:
            raise KeyError(f"{item_path(features, item_id)} holds no window group {groups[0]}")
        info = {g: (np.asarray(f[part][g].attrs["starts"]), int(f[part][g].attrs["length"]),
                    int(f[part][g].attrs["step"])) for g in groups}
        frame_range = (tuple(int(v) for v in f.attrs["frame_range"])
                       if "frame_range" in f.attrs else None)
        path, num_frames = Path(str(f.attrs["path"])), int(f.attrs["num_frames"])
    seen: dict[int, int] = defaultdict(int)
    starts, lengths, steps = [], [], []
    for g in window_group:
        g_starts, length, step = info[groups[int(g)]]
        starts.append(int(g_starts[seen[int(g)]]))
        lengths.append(length)
        steps.append(step)
        seen[int(g)] += 1
    return Windows(np.array(starts), np.array(lengths), np.array(steps), path, frame_range,
                   num_frames)


def thumbnails(path: Path, frame_range: tuple[int, int] | None, num_frames: int) -> np.ndarray:
    """(T, h, w, 3) uint8 frames of the video, each resized to about THUMB_HEIGHT px high, decoded
    once. A long video keeps only the frames that plots' frame strip shows (12 bin centres); the
    others stay zeros that are never touched, so they take no memory."""
    import cv2

    from pipeline.extract.video import VideoReader
    frames, keep = None, None
    count = 0
    for i, frame in enumerate(VideoReader(path, frames=frame_range)):
        if i >= num_frames:
            break
        if frames is None:
            h = min(THUMB_HEIGHT, frame.shape[0])
            w = max(1, round(frame.shape[1] * h / frame.shape[0]))
            frames = np.zeros((num_frames, h, w, 3), np.uint8)
            if frames.nbytes > ALL_FRAMES_BYTES:
                n = min(num_frames, 12)
                keep = set(((np.arange(n) + 0.5) * num_frames / n).astype(int).tolist())
        if keep is None or i in keep:
            frames[i] = cv2.resize(frame, (frames.shape[2], frames.shape[1]),
                                   interpolation=cv2.INTER_AREA)
        count = i + 1
    if frames is None:
        raise ValueError(f"{path}: no frame decoded")
    return frames[:count]
