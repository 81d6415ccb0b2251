"""The stage-2 engine: per video, stack the window features of all (L, s) groups, count-sketch
each part (stream x layer x temporal pooling) separately and concatenate (d = P * d'),
l2-normalise each window, weight it (per group, or by a learned hook), pool into an SO/TO tensor
with EPN and store its unique entries. Videos are computed in batches, on the stage-1 backend.
layout="features" instead sets the groups side by side (d = G * P * d'), their windows aligned
in time (align_groups, side_by_side).

Output: `items/<id>.h5` (dataset "descriptor" (n_unique,)), `sketch.h5` (h, s of the sketch) and
the consolidated view `descriptors.h5` (ids (n,), descriptors (n, n_unique)), built just before
the manifest.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
import logging
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.core.cache import (CorruptFileError, StageError, StageResult, atomic_path, check_sealed,
                                 digest, done_ids, item_path, seal, sealed_intact, verify_file,
                                 warn_damaged,
                            read_manifest, stage_dir, stage_key, stage_lock, up_to_date)
from pipeline.core.runner import run_items
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params
from pipeline.datasets import Dataset
from pipeline.pooling.epn import make_epn
from pipeline.pooling.sketch import CountSketch, make_sketches
from pipeline.core.parallel import worker_state
from pipeline.pooling.packing import n_unique, unit_rows
from pipeline.pooling.tensor_pool import hot_descriptors

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "descriptors", 7
VIEW = "descriptors.h5"


@dataclasses.dataclass(frozen=True)
class FeatureInput:
    """What stage 2 reads: the dataset as listed now, its stage-1 folder, the parts chosen, and
    which items stage 1 has finished (ids, with their sources) or not (missing)."""

    dataset: Dataset
    folder: Path
    manifest: dict
    parts: list[str]
    groups: list[str]                # window groups pooled ("L16_s1", ...)
    sources: dict[str, str]          # id -> source, for the items stage 1 finished
    missing: list[str]               # ids the dataset lists that stage 1 has not (yet) finished

    @property
    def ids(self) -> list[str]:
        return list(self.sources)


def select(stored: list[str], wanted: tuple[str, ...], *, sep: str, what: str) -> list[str]:
    """The stored names chosen by `wanted` (() = all), in stored order. An entry is a full name
    or components, split on `sep`, that a name must all have: parts "rgb/logits/mean",
    "logits" or "rgb/mean"; groups "L16_s1", "L16" or "s2"."""
    if not wanted:
        return list(stored)
    chosen = set()
    for entry in wanted:
        tokens = set(entry.split(sep))
        hits = [name for name in stored if tokens <= set(name.split(sep))]
        if not hits:
            raise ValueError(f"{what}: {entry!r} matches none of the stored {what} {stored}; "
                             f"choose among them (or their components)")
        chosen.update(hits)
    return [name for name in stored if name in chosen]


def find_features(ecfg: ExtractConfig, cfg: DescriptorConfig | None = None) -> FeatureInput:
    """The stage-1 folder of exactly this dataset and configuration (its key is computed, never
    searched for), and the items it holds for the dataset as listed now."""
    from pipeline.extract.features import features_dir, load_dataset, window_groups
    dataset = load_dataset(ecfg)
    folder = features_dir(ecfg, dataset)
    manifest = read_manifest(folder)
    if manifest is None:
        raise StageError(f"no stage-1 features for this dataset and configuration at {folder}; "
                         f"run `make extract` with the same settings first")
    parts = select(manifest["parts"], cfg.parts if cfg is not None else (), sep="/", what="parts")
    groups = select([g.name for g in window_groups(ecfg)], cfg.groups if cfg is not None else (),
                    sep="_", what="groups")
    sources = dataset.sources()
    done = done_ids(folder, sources, lambda f: all(f"{p}/{g}" in f for p in parts for g in groups))
    missing = [i for i in sources if i not in set(done)]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        if cfg is not None and cfg.require_complete:
            raise StageError(f"{len(missing)} of {len(sources)} videos have no stage-1 features "
                             f"in {folder} ({shown}); require_complete=True refuses to go on. "
                             f"Rerun `make extract`, or drop require_complete to use the others")
        log.warning("%d of %d videos have no stage-1 features (failed or not yet extracted: %s); "
                    "going on with the other %d", len(missing), len(sources), shown, len(done))
    return FeatureInput(dataset, folder, manifest, parts, groups, {i: sources[i] for i in done}, missing)


def descriptors_dir(ecfg: ExtractConfig, cfg: DescriptorConfig) -> tuple[Path, FeatureInput]:
    """(this stage's folder, its input). Keyed by the settings, the parts and the stage-1 folder,
    never by the set of videos."""
    inp = find_features(ecfg, cfg)
    params = {**key_params(cfg), "parts": inp.parts, "groups": inp.groups,
              "epn_params": make_epn(cfg.epn, **cfg.epn_params).param_dict}   # defaults resolved
    unused = ("epn", "epn_params", "spectrum_norm", "center") if cfg.order == 1 else ("first_order",)
    if cfg.layout == "windows":      # the default: keyed as before layout= existed
        unused += ("layout",)
    params = {k: v for k, v in params.items() if k not in unused}
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[inp.folder.name])
    slug = (f"fo-{cfg.first_order}" if cfg.order == 1 else
            f"{'so' if cfg.order == 2 else 'to'}-{cfg.epn}") + f"-d{cfg.sketch_dim}" + \
        ("" if cfg.layout == "windows" else f"-{cfg.layout}")
    return stage_dir(ecfg.cache_root, STAGE, inp.dataset.identity, slug, key), inp


def warn_degenerate(parts: list[str], first: list[np.ndarray]) -> None:
    """Say once when a max-pooled part equals its mean-pooled twin (e.g. I3D pool/logits on
    16-frame windows have one time step): the two parts then duplicate each other."""
    for i, part in enumerate(parts):
        twin = part[: -len("/max")] + "/mean" if part.endswith("/max") else None
        if twin in parts and np.allclose(first[i], first[parts.index(twin)]):
            log.warning("parts %s and %s are equal (one time step per window at this layer: max "
                        "= mean); they duplicate each other, parts= can keep one", twin, part)


def read_parts(path: Path, parts: list[str], groups: list[str] | None = None
               ) -> tuple[list[np.ndarray], list[str]]:
    """Window features of an item: one (N, D_p) float64 array per part ("<stream>/<layer>/<pool>"),
    window groups (all, or `groups`) stacked in file order, and each window's group name
    ("L24_s2") (N,). All parts have the same N windows, in the same order."""
    with h5py.File(path, "r") as f:
        names = [g for g in f[parts[0]].keys() if groups is None or g in groups]
        groups = [g for g in names for _ in range(f[parts[0]][g].shape[0])]
        return [np.concatenate([f[part][g][()] for g in names]).astype(np.float64)
                for part in parts], groups


def window_centres(starts: np.ndarray, length: int, step: int, num_frames: int) -> np.ndarray:
    """Centre in frames of each window of a group: start + (length - 1) * step / 2; a window
    longer than the video (span (length - 1) * step + 1 > num_frames) samples the whole video
    evenly (stage 1), so its centre is the video's, (num_frames - 1) / 2."""
    starts = np.asarray(starts, np.float64)
    if (length - 1) * step + 1 > num_frames:
        return np.full(len(starts), (num_frames - 1) / 2)
    return starts + (length - 1) * step / 2


def read_centres(path: Path, part: str, groups: list[str]) -> list[np.ndarray]:
    """The window centres (window_centres) of each of `groups` of an item, from the attrs of
    `part` (every part of an item has the same windows)."""
    with h5py.File(path, "r") as f:
        num_frames = int(f.attrs["num_frames"])
        return [window_centres(a["starts"], int(a["length"]), int(a["step"]), num_frames)
                for a in (f[part][g].attrs for g in groups)]


def align_groups(centres: list[np.ndarray]) -> list[np.ndarray]:
    """layout="features": which window of each group fills each column. The columns are the
    windows of the group with the most windows (ties: the first group); for each column's
    centre every group gives its window with the nearest centre (ties: the earlier window).
    centres: one (n_g,) array per group -> one (N,) index array per group, N = max n_g."""
    centres = [np.asarray(c, np.float64) for c in centres]
    if not centres or any(c.ndim != 1 or not len(c) for c in centres):
        raise ValueError("align_groups needs one non-empty (n_g,) array of centres per group")
    reference = centres[int(np.argmax([len(c) for c in centres]))]    # argmax: the first on ties
    return [np.abs(reference[:, None] - c[None, :]).argmin(axis=1) for c in centres]


def side_by_side(phi: np.ndarray, groups: list[str], centres: list[np.ndarray],
                 weights: dict | None = None) -> np.ndarray:
    """layout="features": phi (N_all, P d') of the stacked windows (`sketched`; `groups` names
    each row's group, in file order) and each group's window centres -> (N, G P d'), each column
    the groups' aligned windows (align_groups) side by side, in group order, each block scaled by
    its group weight (default 1), the whole l2-normalised (the slides' Phi_final)."""
    names = list(dict.fromkeys(groups))
    labels = np.asarray(groups)
    rows = [np.flatnonzero(labels == g) for g in names]
    if len(centres) != len(names) or any(len(c) != len(r) for c, r in zip(centres, rows)):
        raise ValueError(f"window centres {[len(c) for c in centres]} do not match the windows "
                         f"per group {[len(r) for r in rows]} of {names}")
    weights = weights or {}
    blocks = [float(weights.get(g, 1.0)) * phi[r[i]]
              for g, r, i in zip(names, rows, align_groups(centres))]
    return unit_rows(np.concatenate(blocks, axis=1))


def sketched(parts: list[np.ndarray], sketches: list[CountSketch] | None) -> np.ndarray:
    """parts: P x (N, D_p) -> phi (N, P d'), or (N, sum D_p) unsketched when sketches is None.

    HoT: each part is count-sketched on its own and the sketches concatenated, phi_n in R^{P d'};
    each part's sketch is l2-normalised (so no stream dominates by scale) and then the whole
    phi_n, as the derivation assumes ||phi_n|| = 1 (ours: the per-part step).
    """
    if sketches is None:
        return unit_rows(np.concatenate([unit_rows(p) for p in parts], axis=1))
    return unit_rows(np.concatenate([unit_rows(sk.transform(p)) for sk, p in zip(sketches, parts)],
                                    axis=1))


def first_order(phis: list[np.ndarray], weights: list[np.ndarray], how: str) -> np.ndarray:
    """The first-order baseline per video: the (weighted) mean and/or the max over its windows of
    phi (N, d), each l2-normalised -> (B, d) or (B, 2d) for "meanmax". Average pooling is also
    attentional pooling's top-down-only special case (AP)."""
    out = []
    for phi, w in zip(phis, weights):
        pooled = []
        if how in ("mean", "meanmax"):
            pooled.append(unit_rows((w @ phi)[None])[0])           # the mean's direction
        if how in ("max", "meanmax"):
            pooled.append(unit_rows(phi.max(axis=0)[None])[0])
        out.append(np.concatenate(pooled))
    return np.stack(out)


def descriptor_size(d: int, cfg: DescriptorConfig) -> int:
    """Values stored per video: d (2d for meanmax) at first order, else the unique entries."""
    if cfg.order == 1:
        return d * (2 if cfg.first_order == "meanmax" else 1)
    return n_unique(d, cfg.order)


def pooled(phis: list[np.ndarray], weights: list[np.ndarray], cfg: DescriptorConfig,
           names: list[str] | None = None) -> np.ndarray:
    """Descriptors (B, descriptor_size) of a batch of videos' window features (named in
    warnings by `names`)."""
    if cfg.order == 1:
        return first_order(phis, weights, cfg.first_order)
    return hot_descriptors(phis, order=cfg.order, epn=cfg.epn, epn_params=cfg.epn_params,
                           spectrum_norm=cfg.spectrum_norm, weights=weights, center=cfg.center,
                           names=names)


def window_weights(groups: list[str], cfg: DescriptorConfig) -> np.ndarray | None:
    """Per-window weights w_n from cfg.group_weights (group name -> weight, default 1), or None
    when no group is weighted. HoT weights each window's tensor by w_n^r (tensor_pool.pool)."""
    if not cfg.group_weights:
        return None
    return np.array([float(cfg.group_weights.get(g, 1.0)) for g in groups])


def unusable(item_id: str, descriptor: np.ndarray, cfg: DescriptorConfig) -> ValueError | None:
    """Why `descriptor` must not be stored (a NaN or Inf, or all zeros: nothing was pooled, and a
    zero row would pass for a video), or None."""
    if not np.isfinite(descriptor).all():
        return ValueError(f"the descriptor of {item_id} is not finite")
    if not descriptor.any():
        causes = ["all-zero stage-1 features or window weights"]
        if cfg.center and cfg.order > 1:
            causes.append("windows that center=True makes zero (a single window, identical ones)")
        if cfg.order == 3:
            causes.append("third moments that cancel (phi_2 = -phi_1)")
        return ValueError(f"the descriptor of {item_id} is all zero, so it is not stored: nothing "
                          f"to pool ({'; or '.join(causes)})")
    return None


def write_descriptor(out: Path, *, item_id: str, source: str, descriptor: np.ndarray) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("descriptor", data=descriptor)
        f.attrs.update(id=item_id, source=source, complete=True)


@dataclasses.dataclass(frozen=True)
class DescriptorJob:
    """Stage 2 as a picklable job (pipeline.core.parallel): reads stage-1 items, computes their
    descriptors `batch` videos at a time (memory bounded by the batch)."""

    cfg: DescriptorConfig
    upstream: str
    parts: tuple[str, ...]
    groups: tuple[str, ...]
    dims: tuple[int, ...]
    batch: int = 16

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        cfg = self.cfg
        sketches = worker_state(f"sketch:{self.dims}:{cfg.sketch_dim}:{cfg.sketch_seed}",
                                lambda: make_sketches(list(self.dims), cfg.sketch_dim, cfg.sketch_seed)
                                if cfg.sketch_dim else None)
        for first in range(0, len(ids), self.batch):
            ready, phis, weights, sources = [], [], [], []
            for item_id in ids[first:first + self.batch]:
                try:
                    path = item_path(Path(self.upstream), item_id)
                    parts, groups = read_parts(path, list(self.parts), list(self.groups))
                    for part, values in zip(self.parts, parts):
                        if not np.isfinite(values).all():
                            raise ValueError(f"stage-1 features {part} of {item_id} contain NaN "
                                             f"or Inf ({path})")
                    with h5py.File(path, "r") as f:
                        sources.append(str(f.attrs["source"]))
                    phi = sketched(parts, sketches)
                    if cfg.layout == "features":      # the group weights scale the blocks
                        centres = read_centres(path, self.parts[0], list(dict.fromkeys(groups)))
                        phi, w = side_by_side(phi, groups, centres, cfg.group_weights), None
                    else:
                        w = window_weights(groups, cfg)
                except Exception as exc:  # noqa: BLE001 - one bad item never stops a run
                    yield item_id, exc
                    continue
                ready.append(item_id)
                phis.append(phi)
                weights.append(np.ones(len(phi)) if w is None else np.asarray(w, np.float64))
            if not ready:
                continue
            try:
                descs = list(pooled(phis, weights, cfg, ready).astype(np.float32))
            except Exception:  # noqa: BLE001 - find the culprit: each item alone
                descs = []
                for item_id, phi, w in zip(ready, phis, weights):
                    try:
                        descs.append(pooled([phi], [w], cfg, [item_id])[0].astype(np.float32))
                    except Exception as exc:  # noqa: BLE001 - fails this item only
                        descs.append(exc)
            for item_id, source, desc in zip(ready, sources, descs):
                problem = desc if isinstance(desc, Exception) else unusable(item_id, desc, cfg)
                yield item_id, problem or functools.partial(write_descriptor, item_id=item_id,
                                                            source=source, descriptor=desc)


def compute_descriptors(ecfg: ExtractConfig, cfg: DescriptorConfig) -> StageResult:
    """Run stage 2 over the videos whose stage-1 features are done; resumable, a no-op when
    complete. Items run on ecfg's backend (serial, processes or dask), as in stage 1."""
    folder, inp = descriptors_dir(ecfg, cfg)
    ids, sources = inp.ids, inp.sources
    if not ids:
        raise StageError(f"no video of {inp.dataset.identity} has stage-1 features in "
                         f"{inp.folder}; run `make extract` first")
    if (up_to_date(folder, sources) and view_current(folder, sources)
            and sealed_intact(folder / "sketch.h5", "it is written again")):
        log.info("descriptors already complete: %s", folder)
        return StageResult(folder, len(ids), 0, {}, skipped_run=True)
    first = read_parts(item_path(inp.folder, ids[0]), inp.parts, inp.groups)[0]
    warn_degenerate(inp.parts, first)
    dims = [p.shape[1] for p in first]
    sketches = make_sketches(dims, cfg.sketch_dim, cfg.sketch_seed) if cfg.sketch_dim else []
    d = (cfg.sketch_dim * len(dims) if cfg.sketch_dim else sum(dims)) * \
        (len(inp.groups) if cfg.layout == "features" else 1)
    check_size(folder, cfg, d, len(ids), ecfg.workers if ecfg.backend != "serial" else 1)
    job = DescriptorJob(cfg, str(inp.folder.resolve()), tuple(inp.parts), tuple(inp.groups),
                        tuple(dims))
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "upstream": str(inp.folder),
                "upstream_config": inp.manifest["config"], "parts": inp.parts, "groups": inp.groups,
                "part_dims": dims,
                "d": d, "n_unique": descriptor_size(d, cfg), "missing_upstream": inp.missing}
    with stage_lock(folder):
        with atomic_path(folder / "sketch.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                for part, sketch in zip(inp.parts, sketches):
                    for name, value in sketch.state().items():
                        f.create_dataset(f"{part}/{name}", data=value)
            seal(tmp)

        def finish() -> None:       # the view before the manifest: a manifest means both are there
            write_view(folder, done_ids(folder, sources, lambda f: "descriptor" in f), sources,
                       d=d, order=cfg.order, size=descriptor_size(d, cfg))

        return run_items(folder, ids, job, manifest=manifest, sources=sources,
                         required=lambda f: "descriptor" in f, finish=finish,
                         backend=ecfg.backend, workers=ecfg.workers, scheduler=ecfg.scheduler,
                         progress=lambda n: tqdm(total=n, desc="descriptors", unit="video",
                                                 disable=None))


WARN_DISK = 2 ** 30                   # a stage that will write more than this says so first
WORKSPACE = 4                         # float64 copies of the d^order tensor while pooling + EPN


def size_estimate(cfg: DescriptorConfig, d: int, n_videos: int) -> tuple[int, int]:
    """(bytes of memory per video being pooled, bytes on disk for n_videos): the dense d^order
    tensor and its EPN workspace in float64 (WORKSPACE copies; docs/method.md "Pooling"), and
    the stored unique entries in float32, once in the items and once in the view."""
    memory = 8 * WORKSPACE * (d ** cfg.order if cfg.order > 1 else d)
    return memory, 2 * 4 * descriptor_size(d, cfg) * n_videos


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_size(folder: Path, cfg: DescriptorConfig, d: int, n_videos: int, parallel: int) -> None:
    """Refuse before any work when pooling would not fit in memory or the descriptors on disk;
    warn, with the estimate, when they will take more than WARN_DISK."""
    memory, disk = size_estimate(cfg, d, n_videos)
    memory *= max(1, parallel)
    gib = lambda b: f"{b / 2 ** 30:.1f} GiB"  # noqa: E731
    what = f"order={cfg.order} at d={d} (sketch_dim={cfg.sketch_dim}" + \
        (f", layout={cfg.layout}: the groups side by side)" if cfg.layout != "windows" else ")")
    free = available_memory()
    if free is not None and memory > free:
        raise StageError(f"{what} needs about {gib(memory)} of memory per video being pooled "
                         f"({gib(free)} available); lower sketch_dim (or order, or workers)")
    root = folder
    while not root.exists():
        root = root.parent
    free_disk = shutil.disk_usage(root).free
    if disk > free_disk:
        raise StageError(f"{what} would write about {gib(disk)} for {n_videos} videos under "
                         f"{folder} ({gib(free_disk)} free); lower sketch_dim or free space")
    if disk > WARN_DISK:
        log.warning("%s will write about %s for %d videos under %s (%s free)", what, gib(disk),
                    n_videos, folder, gib(free_disk))


def view_current(folder: Path, sources: dict[str, str]) -> bool:
    """The consolidated view exists, holds exactly the items of `sources` and its data still
    matches its checksum (one pass over it; a damaged view is named in the log and rebuilt from
    its items by the next run of the stage)."""
    try:
        with h5py.File(folder / VIEW, "r") as f:
            if f.attrs.get("sources") != digest(sources):
                return False
        recorded = ((read_manifest(folder) or {}).get("checksums") or {}).get(VIEW)
        if recorded is not None:         # every byte (a fast hash), as the manifest recorded it
            verify_file(folder / VIEW, recorded, REBUILD)
        else:                            # before the manifest: the checksum of its data
            check_sealed(folder / VIEW, REBUILD)
        return True
    except CorruptFileError as exc:
        warn_damaged(folder / VIEW, str(exc).split(": ", 1)[1].split("; ")[0], REBUILD)
        return False
    except (OSError, KeyError) as exc:
        if (folder / VIEW).is_file():
            warn_damaged(folder / VIEW, f"cannot be read: {exc}", REBUILD)
        return False


REBUILD = "`make descriptors` with the same settings rebuilds it from its items"


def write_view(folder: Path, ids: list[str], sources: dict[str, str], *, d: int, order: int,
               size: int) -> None:
    """Consolidate the item files of `ids` into one `descriptors.h5`, atomically; its attribute
    "sources" tells whether it is current (the digest of `sources`, all items wanted)."""
    with atomic_path(folder / VIEW) as tmp:
        with h5py.File(tmp, "w") as out:
            data = out.create_dataset("descriptors", (len(ids), size), dtype=np.float32)
            for row, item_id in enumerate(ids):
                with h5py.File(item_path(folder, item_id), "r") as f:
                    data[row] = f["descriptor"][()]
            out.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            out.attrs.update(order=order, d=d, sources=digest(sources),
                             packing="order 1: pooled vector; else unique entries i<=j(<=k), raw "
                                     "(see tensor_pool.pack)")
        seal(tmp)                  # the checksum of its data, verified by view_current


def load_view(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """(ids, descriptors (n, n_unique), attrs) of a complete descriptors folder."""
    with h5py.File(folder / VIEW, "r") as f:
        return [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]], \
            f["descriptors"][()], dict(f.attrs)
