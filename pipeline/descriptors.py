"""The stage-2 engine: per video, stack the window features of all (L, s) groups, count-sketch
each part (stream x layer x temporal pooling) separately and concatenate (d = P * d'),
l2-normalise each window, weight it (per group, or by a learned hook), pool into an SO/TO tensor
with EPN and store its unique entries. Videos are computed in batches, on the stage-1 backend.

Output: `items/<id>.h5` (dataset "descriptor" (n_unique,)), `sketch.h5` (h, s of the sketch) and
the consolidated view `descriptors.h5` (ids (n,), descriptors (n, n_unique)), built last.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Iterator, Protocol

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.cache import (StageError, StageResult, atomic_path, canonical, complete_manifest, item_path,
                            read_manifest, run_items, stage_dir, stage_key, stage_lock)
from pipeline.config import DescriptorConfig, ExtractConfig, key_params
from pipeline.sketch import CountSketch, make_sketches
from pipeline.parallel import worker_state
from pipeline.tensor_pool import hot_descriptors, n_unique

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "descriptors", 4
VIEW = "descriptors.h5"


def find_features(ecfg: ExtractConfig) -> Path:
    """The complete stage-1 folder for `ecfg` (without rebuilding the backbone or hashing weights).

    Looked up by the configuration recorded in the manifests of the dataset's feature folders.
    """
    wanted = canonical(key_params(ecfg))
    base = Path(ecfg.cache_root) / "features" / ecfg.dataset
    matches = []
    for manifest_path in sorted(base.glob("*/manifest.json")):
        manifest = read_manifest(manifest_path.parent)
        recorded = {k: manifest["config"].get(k) for k in wanted}
        if recorded == wanted:
            matches.append(manifest_path.parent)
    complete = [m for m in matches if complete_manifest(m)]
    if not complete:
        state = "incomplete (failures listed in its manifest)" if matches else "not found"
        raise StageError(f"stage-1 features for this configuration are {state} under {base}; "
                         f"run `make extract` with the same settings first")
    if len(complete) > 1:
        log.warning("several feature folders match (different weights files?): using %s", complete[-1])
    return complete[-1]


def descriptors_dir(ecfg: ExtractConfig, cfg: DescriptorConfig, weigher: "Weigher | None" = None
                    ) -> tuple[Path, Path, list[str]]:
    """(this stage's folder, the stage-1 folder it reads, the item ids)."""
    upstream = find_features(ecfg)
    ids = sorted(read_ids(upstream))
    params = {**key_params(cfg), **({"weigher": weigher.key} if weigher is not None else {})}
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name], ids=ids)
    slug = f"{'so' if cfg.order == 2 else 'to'}-{cfg.epn}-d{cfg.sketch_dim}"
    return stage_dir(ecfg.cache_root, STAGE, ecfg.dataset, slug, key), upstream, ids


def read_parts(path: Path, parts: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Window features of an item: one (N, D_p) float64 array per part ("<stream>/<layer>/<pool>"),
    window groups stacked in file order, and each window's group name ("L24_s2") (N,).
    All parts have the same N windows, in the same order."""
    with h5py.File(path, "r") as f:
        names = list(f[parts[0]].keys())
        groups = [g for g in names for _ in range(f[parts[0]][g].shape[0])]
        return [np.concatenate([f[part][g][()] for g in names]).astype(np.float64)
                for part in parts], groups


def unit_rows(x: np.ndarray) -> np.ndarray:
    """x (N, d) with each row divided by its l2 norm (rows of zeros stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sketched(parts: list[np.ndarray], sketches: list[CountSketch]) -> np.ndarray:
    """parts: P x (N, D_p) -> phi (N, P d').

    HoT: each part is count-sketched on its own and the sketches concatenated, phi_n in R^{P d'};
    each part's sketch is l2-normalised (so no stream dominates by scale) and then the whole
    phi_n, as the derivation assumes ||phi_n|| = 1 (ours: the per-part step).
    """
    return unit_rows(np.concatenate([unit_rows(sk.transform(p)) for sk, p in zip(sketches, parts)],
                                    axis=1))


def window_weights(groups: list[str], cfg: DescriptorConfig) -> np.ndarray | None:
    """Per-window weights w_n from cfg.group_weights (group name -> weight, default 1), or None
    when no group is weighted. HoT weights each window's tensor by w_n^r (tensor_pool.pool)."""
    if not cfg.group_weights:
        return None
    return np.array([float(cfg.group_weights.get(g, 1.0)) for g in groups])


class Weigher(Protocol):
    """The per-window weights hook (filled by a learned attention network): picklable, with a
    `key` naming it and its parameters (it enters the cache key)."""

    key: str

    def __call__(self, item_id: str, phi: np.ndarray, groups: list[str]) -> np.ndarray:
        """phi (N, d) sketched windows, their group names -> weights (N,) >= 0."""


def write_descriptor(out: Path, *, item_id: str, descriptor: np.ndarray) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("descriptor", data=descriptor)
        f.attrs.update(id=item_id, complete=True)


@dataclasses.dataclass(frozen=True)
class DescriptorJob:
    """Stage 2 as a picklable job (pipeline.parallel): reads stage-1 items, computes their
    descriptors `batch` videos at a time (memory bounded by the batch)."""

    cfg: DescriptorConfig
    upstream: str
    parts: tuple[str, ...]
    dims: tuple[int, ...]
    weigher: Weigher | None = None
    batch: int = 16

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        cfg = self.cfg
        sketches = worker_state(f"sketch:{self.dims}:{cfg.sketch_dim}:{cfg.sketch_seed}",
                                lambda: make_sketches(list(self.dims), cfg.sketch_dim, cfg.sketch_seed))
        for first in range(0, len(ids), self.batch):
            ready, phis, weights = [], [], []
            for item_id in ids[first:first + self.batch]:
                try:
                    parts, groups = read_parts(item_path(Path(self.upstream), item_id), list(self.parts))
                    phi = sketched(parts, sketches)
                    w = (self.weigher(item_id, phi, groups) if self.weigher is not None
                         else window_weights(groups, cfg))
                except Exception as exc:  # noqa: BLE001 - one bad item never stops a run
                    yield item_id, exc
                    continue
                ready.append(item_id)
                phis.append(phi)
                weights.append(np.ones(len(phi)) if w is None else np.asarray(w, np.float64))
            if not ready:
                continue
            try:
                descs = hot_descriptors(phis, order=cfg.order, epn=cfg.epn, epn_params=cfg.epn_params,
                                        spectrum_norm=cfg.spectrum_norm, weights=weights,
                                        center=cfg.center).astype(np.float32)
            except Exception as exc:  # noqa: BLE001 - the batch's items fail, the run goes on
                yield from ((item_id, exc) for item_id in ready)
                continue
            for item_id, desc in zip(ready, descs):
                yield item_id, functools.partial(write_descriptor, item_id=item_id, descriptor=desc)


def compute_descriptors(ecfg: ExtractConfig, cfg: DescriptorConfig, *,
                        weigher: Weigher | None = None) -> StageResult:
    """Run stage 2 over the complete stage-1 cache of `ecfg`; resumable, a no-op when complete.
    Items run on ecfg's backend (serial, processes or dask), as in stage 1."""
    folder, upstream, ids = descriptors_dir(ecfg, cfg, weigher)
    up_manifest = read_manifest(upstream)
    if complete_manifest(folder) and (folder / VIEW).is_file():
        log.info("descriptors already complete: %s", folder)
        return StageResult(folder, len(ids), 0, {}, skipped_run=True)
    parts = up_manifest["parts"]
    dims = [p.shape[1] for p in read_parts(item_path(upstream, ids[0]), parts)[0]]
    sketches = make_sketches(dims, cfg.sketch_dim, cfg.sketch_seed)
    d = cfg.sketch_dim * len(dims)
    job = DescriptorJob(cfg, str(upstream.resolve()), tuple(parts), tuple(dims), weigher)
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "upstream": str(upstream),
                "upstream_config": up_manifest["config"], "parts": parts, "part_dims": dims,
                "d": d, "n_unique": n_unique(d, cfg.order),
                "weigher": weigher.key if weigher is not None else None}
    with stage_lock(folder):
        with atomic_path(folder / "sketch.h5") as tmp, h5py.File(tmp, "w") as f:
            for part, sketch in zip(parts, sketches):
                for name, value in sketch.state().items():
                    f.create_dataset(f"{part}/{name}", data=value)
        result = run_items(folder, ids, job, manifest=manifest, required=lambda f: "descriptor" in f,
                           backend=ecfg.backend, workers=ecfg.workers, scheduler=ecfg.scheduler,
                           progress=lambda n: tqdm(total=n, desc="descriptors", unit="video",
                                                   disable=None))
        if result.ok:
            write_view(folder, ids, d=d, order=cfg.order)
    return result


def read_ids(folder: Path) -> list[str]:
    """Ids of the items a stage folder holds (from its item files)."""
    items = folder / "items"
    return [str(p.relative_to(items))[: -len(".h5")] for p in items.rglob("*.h5")]


def write_view(folder: Path, ids: list[str], *, d: int, order: int) -> None:
    """Consolidate the item files into one `descriptors.h5`, atomically."""
    with atomic_path(folder / VIEW) as tmp, h5py.File(tmp, "w") as out:
        data = out.create_dataset("descriptors", (len(ids), n_unique(d, order)), dtype=np.float32)
        for row, item_id in enumerate(ids):
            with h5py.File(item_path(folder, item_id), "r") as f:
                data[row] = f["descriptor"][()]
        out.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        out.attrs.update(order=order, d=d,
                         packing="unique entries i<=j(<=k), raw (see tensor_pool.pack)")


def load_view(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """(ids, descriptors (n, n_unique), attrs) of a complete descriptors folder."""
    with h5py.File(folder / VIEW, "r") as f:
        return [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]], \
            f["descriptors"][()], dict(f.attrs)
