"""A cache of aligned "unit" optical flow (pipeline.extract.flow.AlignedFlow), so slow TV-L1 is computed
once per video and reused by every later feature run (other flow backbone, weights or layer).

Layout: `<cache_root>/flow/<dataset>/<method>-<size>[-crop]-<key12>/items/<item id>.h5`, plus
`flow_cache.json` (parameters, key, format). An item file holds dataset "flow" (T, H, W, 2) uint8,
q = round(u * 254) clipped to [0, 254] (zero motion u = 0.5 is exactly 127; read back as q / 254
float32, error <= 0.5/254), one frame per chunk, gzip level 1 (measured at 224x224: lzf writes
~2x faster, 0.8 vs 1.6 ms a frame, both < 0.5% of TV-L1's ~500 ms, but gzip 1 is 20-35% smaller),
and attrs id, path, [frame_range], source_size, source_blake2b, num_frames, method, size, crop,
complete, [claimed_frames, decoded_frames] (a video shorter than its container claims). Items are
written frame by frame to a temporary file and renamed into place; one that a killed writer left is
removed when the item is next written.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from pipeline.extract import video
from pipeline.core.cache import (atomic_path, h5_valid, item_path, seal, stage_dir, stage_key, sweep_temporary,
                            write_json)
from pipeline.core.digests import file_digest
from pipeline.extract.flow import FLOW_BOUND, FLOW_METHODS

log = logging.getLogger(__name__)

FLOW_CACHE_VERSION = 1     # bump when the stored flow changes for the same parameters
LEVELS = 254               # even, so that zero motion (0.5) is a level: 127
READ_BLOCK = 64            # frames read per HDF5 call by FlowCache.reader
COMPRESSION = {"compression": "gzip", "compression_opts": 1}
DESCRIPTION = "flow_cache.json"

_DEQUANTISED = (np.arange(256, dtype=np.float64) / LEVELS).astype(np.float32)   # q -> q / 254


def quantise(unit: np.ndarray) -> np.ndarray:
    """unit: (...) float in [0, 1] (values outside are clipped) -> (...) uint8 round(u * 254)."""
    unit = np.asarray(unit)
    if not np.issubdtype(unit.dtype, np.floating):
        raise ValueError(f"unit flow must be floating point in [0, 1], got dtype {unit.dtype}")
    if not np.isfinite(unit).all():
        raise ValueError("unit flow contains NaN or inf; cannot quantise it")
    return np.clip(np.rint(unit.astype(np.float64) * LEVELS), 0, LEVELS).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    """q: (...) uint8 levels -> (...) float32 q / 254."""
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise ValueError(f"quantised flow must be uint8, got dtype {q.dtype}")
    return _DEQUANTISED[q]


def _source(path: str | os.PathLike, frames: tuple[int, int] | None) -> dict:
    """The attrs that identify an item's source: resolved path, size, content digest
    (pipeline.core.digests), frame range."""
    p = Path(path).resolve()
    try:
        src = {"path": str(p), "source_size": p.stat().st_size, "source_blake2b": file_digest(p)}
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: the item's video does not exist") from None
    if frames is not None:
        start, end = (int(v) for v in frames)
        if not 0 <= start < end:
            raise ValueError(f"frames={tuple(frames)}: a frame range [start, end) needs 0 <= start < end")
        src["frame_range"] = np.asarray([start, end], np.int64)
    return src


def _well_formed(f: h5py.File) -> bool:
    ds = f.get("flow")
    return (isinstance(ds, h5py.Dataset) and ds.dtype == np.uint8 and ds.ndim == 4
            and ds.shape[3] == 2 and ds.shape[0] == int(f.attrs["num_frames"]) >= 1)


def _same_source(f: h5py.File, src: dict) -> bool:
    a = f.attrs
    if ("frame_range" in a) != ("frame_range" in src):
        return False
    if "frame_range" in src and np.asarray(a["frame_range"]).tolist() != src["frame_range"].tolist():
        return False
    return (str(a["path"]) == src["path"] and int(a["source_size"]) == src["source_size"]
            and str(a.get("source_blake2b", "")) == src["source_blake2b"])


class FlowWriter:
    """Appends quantised flow frames to an open item file; made by `FlowCache.writer`.
    Holds no frames: each push is compressed and written at once."""

    def __init__(self, file: h5py.File):
        self._file = file
        self._ds: h5py.Dataset | None = None

    @property
    def num_frames(self) -> int:
        return 0 if self._ds is None else self._ds.shape[0]

    def push(self, unit: np.ndarray) -> np.ndarray:
        """unit: (H, W, 2) float in [0, 1] -> the (H, W, 2) float32 frame a reader will return
        (dequantise(quantise(unit))): feed this to the backbone so that cached and uncached runs
        give identical features."""
        q = quantise(unit)
        if q.ndim != 3 or q.shape[2] != 2:
            raise ValueError(f"a unit flow frame must be (H, W, 2), got {q.shape}")
        if self._ds is None:
            h, w = q.shape[:2]
            self._ds = self._file.create_dataset("flow", (0, h, w, 2), np.uint8, maxshape=(None, h, w, 2),
                                                 chunks=(1, h, w, 2), **COMPRESSION)
        elif q.shape != self._ds.shape[1:]:
            raise ValueError(f"flow frame {self.num_frames} is {q.shape}, the earlier ones "
                             f"{self._ds.shape[1:]}; all frames of an item must have one size")
        n = self.num_frames
        self._ds.resize(n + 1, axis=0)
        self._ds[n] = q
        return dequantise(q)


class FlowCache:
    """Unit flow frames per item, keyed by the flow method and the decoding (size, crop).

    cache_root, dataset: where (`<cache_root>/flow/<dataset>/...`).
    method: a pipeline.extract.flow method ("tvl1", "dis", ...); size: short side in px the frames were
    resized to (0 = native); crop: whether they were centre-cropped to size x size.
    An item is valid only for the source it was computed from: same resolved path, file size,
    content digest and frame range (a regenerated dataset never reuses stale flow).
    """

    def __init__(self, cache_root: str | os.PathLike, dataset: str, *, method: str, size: int,
                 crop: bool):
        if method not in FLOW_METHODS:
            raise ValueError(f"flow method={method!r} is unknown; choose one of {sorted(FLOW_METHODS)}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"size={size!r} must be an int >= 0 (0 = native resolution)")
        if not isinstance(crop, (bool, np.bool_)):
            raise ValueError(f"crop={crop!r} must be True or False")
        self.cache_root, self.dataset = Path(cache_root), dataset
        self.method, self.size, self.crop = method, int(size), bool(crop)
        self.params = {"method": self.method, "size": self.size, "crop": self.crop,
                       "bound": FLOW_BOUND, "levels": LEVELS}
        self.key = stage_key("flow", FLOW_CACHE_VERSION, self.params)
        slug = f"{self.method}-{self.size}{'-crop' if self.crop else ''}"
        self.folder = stage_dir(self.cache_root, "flow", dataset, slug, self.key)

    def item_file(self, item_id: str) -> Path:
        return item_path(self.folder, item_id)

    def has(self, item_id: str, path: str | os.PathLike, frames: tuple[int, int] | None) -> bool:
        """True iff item_id's file opens, is complete and was computed from this source
        (path, its current size and content digest, and frame range `frames` or None)."""
        try:
            src = _source(path, frames)
        except OSError:
            return False
        return h5_valid(self.item_file(item_id), lambda f: _well_formed(f) and _same_source(f, src))

    @contextlib.contextmanager
    def writer(self, item_id: str, path: str | os.PathLike,
               frames: tuple[int, int] | None) -> Iterator[FlowWriter]:
        """Write item_id's flow frame by frame: `with cache.writer(...) as w: u = w.push(unit)`.

        The source is identified (stat) on entry, and temporary files of this item that killed
        writers left are removed. On normal exit the file is completed and renamed into place (a
        concurrent writer of the same item: the last rename wins, whole); on an exception, or if
        no frame was pushed, no file and no temporary file is left.
        """
        src = _source(path, frames)
        target = self.item_file(item_id)
        if target.parent.is_dir():
            sweep_temporary(target.parent, pattern=f".{target.name}.tmp-*")
        if not (self.folder / DESCRIPTION).is_file():
            write_json(self.folder / DESCRIPTION, {
                "stage": "flow", "version": FLOW_CACHE_VERSION, "key": self.key, "params": self.params,
                "dataset": self.dataset, "format": "items/<id>.h5: flow (T, H, W, 2) uint8, q = "
                "round(u * 254), u = q / 254 in [0, 1] (0.5 = zero motion, 1 = +bound px)"})
        with atomic_path(target) as tmp:
            with h5py.File(tmp, "w") as f:
                w = FlowWriter(f)
                yield w
                n = w.num_frames
                if n == 0:
                    raise ValueError(f"item {item_id!r}: no flow frames were pushed; nothing is cached")
                f.attrs.update(id=item_id, num_frames=n, method=self.method, size=self.size,
                               crop=self.crop, **src)
                shortfall = video.peek_shortfall(path) if frames is None else None
                if shortfall is not None:
                    f.attrs.update(claimed_frames=shortfall[0], decoded_frames=shortfall[1])
                f.attrs["complete"] = True
            seal(tmp)                      # the checksum of its data, verified by h5_valid
        log.debug("cached %d flow frames of %s", n, item_id)

    def _checked(self, item_id: str) -> Path:
        path = self.item_file(item_id)
        if not path.is_file():
            raise FileNotFoundError(f"no cached flow for item {item_id!r} ({path}); "
                                    f"check FlowCache.has and compute it with FlowCache.writer")
        if not h5_valid(path, _well_formed):
            raise ValueError(f"{path}: cached flow of item {item_id!r} is incomplete or unreadable; "
                             f"delete it to recompute")
        return path

    def num_frames(self, item_id: str) -> int:
        """T, the number of cached flow frames of item_id."""
        with h5py.File(self._checked(item_id), "r") as f:
            return int(f.attrs["num_frames"])

    def reader(self, item_id: str, *, block: int = READ_BLOCK) -> Iterator[np.ndarray]:
        """The cached frames of item_id in order, each (H, W, 2) float32 in [0, 1] and its own
        array; reads `block` frames at a time. Raises at once if the item is missing or invalid."""
        if block < 1:
            raise ValueError(f"block={block} must be >= 1")
        path = self._checked(item_id)

        def frames() -> Iterator[np.ndarray]:
            with h5py.File(path, "r") as f:
                ds = f["flow"]
                for start in range(0, ds.shape[0], block):
                    for q in ds[start:start + block]:
                        yield dequantise(q)
                if "claimed_frames" in f.attrs:      # as if the video had been decoded again
                    video.record_shortfall(str(f.attrs["path"]), int(f.attrs["claimed_frames"]),
                                           int(f.attrs["decoded_frames"]))
        return frames()
