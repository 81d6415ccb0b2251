"""The "sketched" stage: per video, its windows count-sketched and l2-normalised once (phi (N, d)
float32, each window's group index and the group names), so that learned pooling (pipeline.learn.train)
trains many times without touching stage 1. Resumable and keyed like pipeline.pooling.descriptors.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.core.cache import (StageError, StageResult, done_ids, item_path, stage_dir, stage_key,
                            stage_lock, up_to_date)
from pipeline.core.runner import run_items
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.pooling.descriptors import FeatureInput, find_features, read_parts, sketched
from pipeline.core.parallel import worker_state
from pipeline.pooling.sketch import make_sketches

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "sketched", 1
REQUIRED = ("phi", "group")


def _complete(f: h5py.File) -> bool:
    return all(name in f for name in REQUIRED)


def sketched_dir(ecfg: ExtractConfig, dcfg: DescriptorConfig, inp: FeatureInput | None = None
                 ) -> tuple[Path, FeatureInput]:
    """(this stage's folder, its input). Keyed by sketch_dim, sketch_seed, the parts, the groups
    and the stage-1 folder, never by the set of videos. inp: the stage-1 input (default: the
    dataset's, `find_features`); predict passes one over its own videos."""
    inp = find_features(ecfg, dcfg) if inp is None else inp
    params = {"sketch_dim": dcfg.sketch_dim, "sketch_seed": dcfg.sketch_seed,
              "parts": inp.parts, "groups": inp.groups}
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[inp.folder.name])
    slug = f"d{dcfg.sketch_dim}" if dcfg.sketch_dim else "raw"
    return stage_dir(ecfg.cache_root, STAGE, inp.dataset.identity, slug, key), inp


def write_sketched(out: Path, *, item_id: str, source: str, phi: np.ndarray, group: np.ndarray,
                   group_names: list[str]) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("phi", data=phi)
        f.create_dataset("group", data=group)
        f.attrs.update(id=item_id, source=source, group_names=group_names, complete=True)


@dataclasses.dataclass(frozen=True)
class SketchJob:
    """The stage as a picklable job (pipeline.core.parallel): reads a stage-1 item, sketches its
    windows part by part (descriptors.sketched) and stores phi (N, d) float32 with group (N,)."""

    upstream: str
    parts: tuple[str, ...]
    groups: tuple[str, ...]
    dims: tuple[int, ...]
    sketch_dim: int
    sketch_seed: int

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        def build():
            return make_sketches(list(self.dims), self.sketch_dim, self.sketch_seed) \
                if self.sketch_dim else None
        sketches = worker_state(f"sketch:{self.dims}:{self.sketch_dim}:{self.sketch_seed}", build)
        index = {g: i for i, g in enumerate(self.groups)}
        for item_id in ids:
            try:
                path = item_path(Path(self.upstream), item_id)
                parts, names = read_parts(path, list(self.parts), list(self.groups))
                if not all(np.isfinite(p).all() for p in parts):
                    raise ValueError(f"stage-1 features of {item_id} contain NaN or Inf ({path})")
                with h5py.File(path, "r") as f:
                    source = str(f.attrs["source"])
                phi = sketched(parts, sketches).astype(np.float32)
                group = np.array([index[g] for g in names], dtype=np.int64)
            except Exception as exc:  # noqa: BLE001 - one bad item never stops a run
                yield item_id, exc
                continue
            yield item_id, functools.partial(write_sketched, item_id=item_id, source=source,
                                             phi=phi, group=group, group_names=list(self.groups))


def compute_sketched(ecfg: ExtractConfig, dcfg: DescriptorConfig, *,
                     inp: FeatureInput | None = None) -> tuple[StageResult, FeatureInput]:
    """Sketch the windows of every video whose stage-1 features are done; resumable, a no-op
    when complete; never runs a backbone. Returns (result, the stage-1 input)."""
    folder, inp = sketched_dir(ecfg, dcfg, inp)
    ids, sources = inp.ids, inp.sources
    if not ids:
        raise StageError(f"no video of {inp.dataset.identity} has stage-1 features in "
                         f"{inp.folder}; run `make extract` first")
    if up_to_date(folder, sources):
        log.info("sketched windows already complete: %s", folder)
        return StageResult(folder, len(ids), 0, {}, skipped_run=True), inp
    first = read_parts(item_path(inp.folder, ids[0]), inp.parts, inp.groups)[0]
    dims = [p.shape[1] for p in first]
    d = dcfg.sketch_dim * len(dims) if dcfg.sketch_dim else sum(dims)
    job = SketchJob(str(inp.folder.resolve()), tuple(inp.parts), tuple(inp.groups), tuple(dims),
                    dcfg.sketch_dim, dcfg.sketch_seed)
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "sketch_dim": dcfg.sketch_dim,
                "sketch_seed": dcfg.sketch_seed, "upstream": str(inp.folder),
                "upstream_config": inp.manifest["config"], "parts": inp.parts,
                "groups": inp.groups, "part_dims": dims, "d": d,
                "missing_upstream": inp.missing}
    with stage_lock(folder):
        result = run_items(folder, ids, job, manifest=manifest, sources=sources,
                           required=_complete, backend=ecfg.backend, workers=ecfg.workers,
                           scheduler=ecfg.scheduler,
                           progress=lambda n: tqdm(total=n, desc="sketched", unit="video",
                                                   disable=None))
    return result, inp


def sketched_ids(folder: Path, sources: dict[str, str]) -> list[str]:
    """The ids (in the order of `sources`) whose sketched item is valid for its source."""
    return done_ids(folder, sources, _complete)


def load_sketched(folder: Path, ids: list[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                         list[str]]:
    """([(phi (N_i, d) float32, group (N_i,) int64)] of `ids`, the group names the indices
    refer to (the same for every item of a folder))."""
    videos, names = [], None
    for item_id in ids:
        with h5py.File(item_path(folder, item_id), "r") as f:
            videos.append((f["phi"][()], f["group"][()]))
            names = [str(g) for g in f.attrs["group_names"]] if names is None else names
    if names is None:
        raise StageError(f"no sketched item to load from {folder}")
    return videos, names
