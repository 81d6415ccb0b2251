"""trunk=on (docs/method.md, Stage 1, trunk): one backbone pass per stream and sampling rate over
the whole subsampled video, stored as a temporal map per video; windows pooled from stored maps.

Trunk item file (stage "trunk"): per stream, stored map and rate a dataset
"<stream>/<source>/r{s}" (T_cells, D) float32, the map averaged over space per temporal cell, with
attrs stride (subsampled frames per cell) and frames (length of the subsampled video); with
spatial maps asked (pool "map") also "<stream>/<source>/r{s}_map" (T_cells, D, H', W').
"frames" backbones store rate 1 only (one cell per frame). Rates are stored as the windows ask
for them (window_rate): a video shorter than every window of a rate never runs that rate; a new
windowing that needs a rate an item lacks computes that rate alone and keeps the rest. The
windowing (lengths, strides) is not in the trunk's key: a new window configuration is a pooling
over these files.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
import torch

from pipeline.core.devices import resolve_device, trim_host_memory
from pipeline.core.cache import (StageResult, digest, h5_valid, item_path, stage_dir, stage_key,
                                 stage_lock, up_to_date)
from pipeline.core.parallel import worker_state
from pipeline.core.runner import run_items
from pipeline.datasets import Dataset, Item
from pipeline.extract.backbones import TRUNK_KINDS, Backbone, TrunkLayer, build_backbone, builder_module
from pipeline.extract.settings import ExtractConfig
from pipeline.extract.video import VideoError, WindowGroup, window_frames, window_starts

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "trunk", 1
MARGIN = 32     # context frames on each side of a chunk whose cells another chunk keeps


def trunk_backbones() -> list[str]:
    """Names of the registered backbones that support trunk=on (as registered, nothing built)."""
    return sorted(name for name, kind in TRUNK_KINDS.items() if kind is not None)


def check_trunk(model: Backbone, name: str) -> None:
    """Raise ValueError naming the backbones that can, when `model` cannot run trunk=on."""
    if model.trunk_kind not in ("temporal", "frames"):
        raise ValueError(f"backbone={name!r} does not support trunk=on (it is not convolutional "
                         f"in time or per frame); use trunk=off, or one of {trunk_backbones()}")


def rates(model: Backbone, cfg: ExtractConfig) -> tuple[int, ...]:
    """The sampling rates whose maps are stored: every step of the windowing for "temporal"
    backbones, rate 1 alone for "frames" backbones (any step picks stored frames)."""
    if model.trunk_kind == "frames":
        return (1,)
    return tuple(sorted({s for _, _, s in cfg.groups()}))


def window_rate(num_frames: int, group: WindowGroup, rates: tuple[int, ...]) -> int:
    """The stored rate the windows of `group` are pooled from in a video of `num_frames`: its
    step when the video holds one span. A shorter video has one window of L frames evenly spaced
    over the whole video (window_frames, spacing (F - 1) / (L - 1) < step): it is pooled from the
    whole map of the rate in `rates` nearest that spacing, ties to the lower (docs/method.md,
    Stage 1, trunk)."""
    if num_frames >= group.span:
        return group.step
    spacing = (num_frames - 1) / max(group.length - 1, 1)
    return min(rates, key=lambda r: (abs(r - spacing), r))


def item_rates(model: Backbone, num_frames: int, groups: list[WindowGroup],
               rates: tuple[int, ...]) -> set[int]:
    """The rates whose maps the windows of `groups` need in a video of `num_frames`."""
    if model.trunk_kind == "frames":
        return {1}
    return {window_rate(num_frames, g, rates) for g in groups}


def sources(model: Backbone, layers: tuple[str, ...]) -> tuple[str, ...]:
    """The stored maps `layers` need, in a fixed order."""
    return tuple(sorted({model.trunk_layer(layer).source for layer in layers}))


class TrunkEncoder:
    """Runs a backbone's trunk on a whole (chunk of a) subsampled video."""

    def __init__(self, model: Backbone, *, device: torch.device, precision: str = "fp32"):
        self.model, self.device = model.to(device).eval(), device
        self.bf16 = precision == "bf16"
        spec = model.spec
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1, 1)

    @torch.inference_mode()
    def __call__(self, frames: list[np.ndarray], wanted: tuple[str, ...], spatial: bool
                 ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """frames: T x (H, W, C) -> per source (cells (T', D) averaged over space,
        spatial map (T', D, H', W') or None)."""
        x = torch.from_numpy(np.stack(frames)[None]).to(self.device)
        x = x.permute(0, 4, 1, 2, 3).float()
        if frames[0].dtype == np.uint8:
            x = x.div_(255)
        x = x.sub_(self.mean).div_(self.std)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            maps = self.model.trunk_sources(x, wanted)               # each (1, D, T', H', W')
        out = []
        for y in maps:
            y = y[0].float().transpose(0, 1)                        # (T', D, H', W')
            out.append((y.mean(dim=(2, 3)).cpu().numpy(),
                        y.cpu().numpy() if spatial else None))
        return out


class RateTrunk:
    """The trunk's maps of one stream at one rate, built from frames pushed one at a time.

    Frames f = 0, s, 2s, ... form the subsampled video; it goes through the trunk in chunks of
    `chunk` frames overlapping by 2 * MARGIN, each chunk keeping the cells away from its cut
    (the first and last keep their outer ends): memory is bounded by the chunk, not the video.
    """

    def __init__(self, encoder: TrunkEncoder, rate: int, wanted: tuple[str, ...], strides: dict[str, int],
                 *, chunk: int, spatial: bool):
        self.encoder, self.rate, self.wanted, self.spatial = encoder, rate, wanted, spatial
        self.align = max(strides.values())
        if chunk % self.align or chunk <= 2 * MARGIN or MARGIN % self.align:
            raise ValueError(f"trunk_chunk={chunk}: must be a multiple of {self.align} (the "
                             f"trunk's temporal stride) and above {2 * MARGIN}")
        self.strides, self.chunk = strides, chunk
        self.buffer: list[np.ndarray] = []
        self.offset = 0        # subsampled index of buffer[0] (a multiple of self.align)
        self.seen = 0          # frames pushed (all rates)
        self.cells: dict[str, list] = {s: [] for s in wanted}
        self.maps: dict[str, list] = {s: [] for s in wanted}
        self.forwards = 0

    def push(self, frame: np.ndarray) -> None:
        if self.seen % self.rate == 0:
            self.buffer.append(frame)
            if len(self.buffer) == self.chunk:
                self._run(last=False)
        self.seen += 1

    def _run(self, *, last: bool) -> None:
        frames = self.buffer
        need = self.encoder.model.spec.min_frames
        if len(frames) < need:                # a very short video: repeat its last frame (ours)
            frames = frames + [frames[-1]] * (need - len(frames))
        self.forwards += 1
        outputs = self.encoder(frames, self.wanted, self.spatial)
        trim_host_memory()                    # the chunk's freed activations: back to the OS
        for source, (cells, spatial) in zip(self.wanted, outputs):
            st = self.strides[source]
            done = sum(len(c) for c in self.cells[source])
            lo = done - self.offset // st
            hi = len(cells) if last else (self.chunk - MARGIN) // st
            self.cells[source].append(cells[lo:hi])
            if spatial is not None:
                self.maps[source].append(spatial[lo:hi])
        if not last:
            keep = 2 * MARGIN
            self.offset += len(self.buffer) - keep
            self.buffer = self.buffer[-keep:]

    def finish(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """source -> (cells (T_cells, D), spatial (T_cells, D, H', W') or None)."""
        if self.buffer:        # the cells after the last chunk's kept part (all, if only one)
            self._run(last=True)
        return {s: (np.concatenate(self.cells[s]).astype(np.float32),
                    np.concatenate(self.maps[s]).astype(np.float32) if self.spatial else None)
                for s in self.wanted}

    @property
    def frames(self) -> int:
        """Length of the subsampled video."""
        return -(-self.seen // self.rate)


def write_trunk_item(out: Path, *, item: Item, num_frames: int,
                     maps: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray | None]],
                     strides: dict[tuple[str, str], int], frames: dict[int, int]) -> None:
    """Write an item's trunk maps (see the module docstring) to the HDF5 file `out`."""
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item.id, num_frames=num_frames, path=str(item.path), source=item.source())
        if item.frames is not None:
            f.attrs["frame_range"] = np.asarray(item.frames, np.int64)
        for (stream, source, rate), (cells, spatial) in maps.items():
            ds = f.create_dataset(f"{stream}/{source}/r{rate}", data=cells)
            ds.attrs.update(stride=strides[stream, source], frames=frames[rate])
            if spatial is not None:
                f.create_dataset(f"{stream}/{source}/r{rate}_map", data=spatial)
        f.attrs["complete"] = True


def stored_trunks(path: Path, item: Item) -> tuple[dict, dict[int, int]]:
    """What an earlier trunk file of `item` at `path` holds, to keep when the item gains a rate:
    ({(stream, source, rate): (cells, spatial map or None)}, {rate: subsampled frames}); empty
    when there is no such file, or it is damaged or from another source."""
    if not h5_valid(path, source=item.source()):
        return {}, {}
    maps, frames = {}, {}
    with h5py.File(path, "r") as f:
        for stream, group in f.items():
            for source, rates_ in group.items():
                for name, ds in rates_.items():
                    if name[1:].isdigit():
                        spatial = rates_.get(f"{name}_map")
                        maps[stream, source, int(name[1:])] = (
                            ds[()], None if spatial is None else spatial[()])
                        frames[int(name[1:])] = int(ds.attrs["frames"])
    return maps, frames


def item_trunks(item: Item, encoders: dict[str, TrunkEncoder], plan: dict[str, dict], *,
                needs: dict[str, Callable[[int], set[int]]], size: int, crop: bool, flow: str,
                flow_cache, chunk: int, spatial: bool, stored: tuple[dict, dict] = ({}, {})):
    """Decode `item` once and run every stream's trunk at the rates its windows need: a
    write(path) callable. plan: stream -> {"rates": (s, ...), "sources": (name, ...),
    "strides": {name: frames per cell}}; needs: stream -> the rates needed by a video of F frames
    (item_rates); stored: stored_trunks of an earlier file, kept rather than recomputed. A rate
    is known to be unneeded only once the video's length is: its frames wait in its first chunk,
    and it runs only if needed (or if the video filled that chunk)."""
    from pipeline.extract.features import ItemWindows
    kept, kept_frames = stored
    source = ItemWindows(item, [], tuple(encoders), size=size, crop=crop, flow=flow,
                         flow_cache=flow_cache)
    trunks = {(stream, r): RateTrunk(encoders[stream], r, plan[stream]["sources"],
                                     plan[stream]["strides"], chunk=chunk, spatial=spatial)
              for stream in encoders for r in plan[stream]["rates"]
              if not any((stream, name, r) in kept for name in plan[stream]["sources"])}
    for rgb, fl in source.pairs():
        for (stream, _), trunk in trunks.items():
            trunk.push(rgb if stream == "rgb" else fl)
    if not source.num_frames:
        raise VideoError(f"{item.path}: no frames could be decoded")
    maps, frames = dict(kept), dict(kept_frames)
    for (stream, r), trunk in trunks.items():
        if trunk.forwards or r in needs[stream](source.num_frames):
            for name, value in trunk.finish().items():
                maps[stream, name, r] = value
            frames[r] = trunk.frames
    strides = {(stream, name): plan[stream]["strides"][name] for stream, name, _ in maps}
    return functools.partial(write_trunk_item, item=item, num_frames=source.num_frames, maps=maps,
                             strides=strides, frames=frames)


# ---------------------------------------------------------------- windows from stored maps

def position_weights(num_cells: int, kernel: int, a: float, b: float) -> np.ndarray:
    """Weights (P,) of the P = num_cells - kernel + 1 positions of a `kernel`-cell average pool
    (stride 1) for a window covering cells [a, b) (fractional where the window's ends do not fall
    on the map's stride): a position counts in full when its `kernel` cells lie inside the
    window, in part by the overlap beyond kernel - 1 cells (docs/method.md, Stage 1, trunk). A
    window shorter than the kernel falls back to plain overlap."""
    positions = max(num_cells - kernel + 1, 1)
    t = np.arange(positions, dtype=np.float64)
    overlap = np.clip(np.minimum(t + kernel, b) - np.maximum(t, a), 0, None)
    p = np.clip(overlap - (kernel - 1), 0, 1)
    if p.sum() <= 0:
        p = overlap
    if p.sum() <= 0:                       # nothing overlaps (cannot happen for a real window)
        p = np.zeros(positions)
        p[min(int(a), positions - 1)] = 1
    return p


def kernel_average(x: np.ndarray, kernel: int) -> np.ndarray:
    """x: (T, ...) -> (max(T - kernel + 1, 1), ...): means of `kernel` consecutive cells."""
    if kernel <= 1 or len(x) <= kernel:
        return x if kernel <= 1 else x.mean(axis=0, keepdims=True)
    c = np.cumsum(np.concatenate([np.zeros_like(x[:1]), x]), axis=0, dtype=np.float64)
    return ((c[kernel:] - c[:-kernel]) / kernel).astype(np.float32)


def pool_item(f: h5py.File, model: Backbone, stream: str, layers: tuple[str, ...],
              pools: tuple[str, ...], groups: list[WindowGroup], rates: tuple[int, ...]
              ) -> tuple[dict[tuple[str, int], np.ndarray], dict[int, np.ndarray]]:
    """Windows of every group pooled from the stored maps of one stream of an open trunk file.

    Returns ({("<layer>/<pool>", group index): (W, D) or (W, D, H', W')}, {group index: starts}).
    "frames" backbones pool exactly the window's frames (window_frames); "temporal" ones weight
    the positions of the map at window_rate (among the trunk's `rates`) by position_weights; max
    takes the positions weighted >= 1/2.
    """
    num_frames = int(f.attrs["num_frames"])
    frames_kind = model.trunk_kind == "frames"
    feats, starts_of = {}, {}
    for gi, g in enumerate(groups):
        starts = window_starts(num_frames, g)
        starts_of[gi] = starts
        rate = 1 if frames_kind else window_rate(num_frames, g, rates)
        for layer in layers:
            plan: TrunkLayer = model.trunk_layer(layer)
            ds = f[f"{stream}/{plan.source}/r{rate}"]
            cells, stride, sub = ds[()], int(ds.attrs["stride"]), int(ds.attrs["frames"])
            positions = kernel_average(cells, plan.kernel)
            if plan.head:
                with torch.inference_mode():
                    positions = model.trunk_head(layer, torch.from_numpy(positions)).float().numpy()
            spatial = None
            if "map" in pools and plan.kernel == 1 and not plan.head:
                key = f"{stream}/{plan.source}/r{rate}_map"
                if key not in f:
                    raise ValueError(f"{f.filename}: no spatial map {key}; the trunk was stored "
                                     f"without pool 'map' (delete that trunk folder to redo it)")
                spatial = kernel_average(f[key][()], plan.kernel)
            rows = {p: [] for p in pools}
            for start in starts:
                if frames_kind:
                    idx = window_frames(num_frames, g, int(start))
                    w = np.bincount(idx, minlength=len(positions)).astype(np.float64)
                else:
                    if num_frames < g.span:
                        a, b = 0.0, float(sub)
                    else:
                        a = start / g.step
                        b = min(a + g.length, float(sub))
                    w = position_weights(len(cells), plan.kernel, a / stride, b / stride)
                for p in pools:
                    rows[p].append(_pool(p, w, positions, spatial, layer))
            for p in pools:
                feats[f"{layer}/{p}", gi] = np.stack(rows[p]).astype(np.float32)
    return feats, starts_of


def _pool(kind: str, w: np.ndarray, positions: np.ndarray, spatial: np.ndarray | None,
          layer: str) -> np.ndarray:
    if kind == "mean":
        return w @ positions / w.sum()
    if kind == "max":
        chosen = w >= 0.5 * w.max()
        return positions[chosen].max(axis=0)
    if spatial is None:          # a layer after the trunk: (D, 1, 1), as trunk=off gives it
        return (w @ positions / w.sum())[:, None, None]
    return np.tensordot(w / w.sum(), spatial, axes=1)


# ---------------------------------------------------------------- the two stages

def build_trunk_models(cfg: ExtractConfig) -> dict[str, tuple[Backbone, dict]]:
    """stream -> (model, plan) for `cfg`, every layer checked (see item_trunks for the plan)."""
    out = {}
    for stream, (name, weights) in cfg.stream_backbones().items():
        model, _ = build_backbone(name, weights=weights, seed=cfg.seed)
        check_trunk(model, name)
        names = sources(model, cfg.layer)
        strides = {}
        for layer in cfg.layer:
            tl = model.trunk_layer(layer)
            strides[tl.source] = tl.stride
        out[stream] = (model, {"rates": rates(model, cfg), "sources": names, "strides": strides})
    return out


def trunk_params(cfg: ExtractConfig, plans: dict[str, dict]) -> dict:
    """What changes a trunk item: the trunk (backbones, sources, rates, input size), never the
    windowing (lengths, strides)."""
    return {"streams": cfg.streams, "backbones": {s: n for s, (n, _) in cfg.stream_backbones().items()},
            "plans": plans, "size": cfg.size, "crop": cfg.crop, "seed": cfg.seed,
            "flow": cfg.flow if "flow" in cfg.streams else None, "precision": cfg.precision,
            "spatial": "map" in cfg.pool, "chunk": cfg.trunk_chunk, "margin": MARGIN}


def trunk_dir(cfg: ExtractConfig, dataset: Dataset, weights: dict, plans: dict) -> Path:
    key = stage_key(STAGE, STAGE_VERSION, trunk_params(cfg, plans), weights=weights)
    names = "+".join(name for name, _ in cfg.stream_backbones().values())
    return stage_dir(cfg.cache_root, STAGE, dataset.identity, names, key)


def _worker_models(cfg: ExtractConfig, modules: tuple[str, ...]):
    """(dataset, stream -> (trunk model, plan)) as a worker process builds them once: the modules
    that register the backbones imported first (plugins, test doubles)."""
    from pipeline.extract.features import load_dataset
    for module in modules:
        importlib.import_module(module)
    return load_dataset(cfg), build_trunk_models(cfg)


@dataclasses.dataclass(frozen=True)
class TrunkJob:
    """Stage "trunk" as a picklable job: each worker builds the dataset and the models once."""

    cfg: ExtractConfig
    folder: str
    modules: tuple[str, ...] = ()
    listing: str = ""

    def state(self):
        def build():
            dataset, built = _worker_models(self.cfg, self.modules)
            device = resolve_device(self.cfg.device)
            encoders = {s: TrunkEncoder(m, device=device, precision=self.cfg.precision)
                        for s, (m, _) in built.items()}
            return dataset, encoders, {s: p for s, (_, p) in built.items()}
        return worker_state(f"{self.folder}:{self.listing}", build)

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        from pipeline.extract.features import flow_cache_of, input_size, window_groups
        dataset, encoders, plans = self.state()
        items = {item.id: item for item in dataset.items()}
        size = input_size(self.cfg, {s: e.model for s, e in encoders.items()})
        cache = flow_cache_of(self.cfg, dataset, size)
        groups = window_groups(self.cfg)
        needs = {s: functools.partial(item_rates, e.model, groups=groups, rates=plans[s]["rates"])
                 for s, e in encoders.items()}
        for i in ids:
            try:
                yield i, item_trunks(items[i], encoders, plans, needs=needs, size=size,
                                     crop=self.cfg.crop, flow=self.cfg.flow, flow_cache=cache,
                                     chunk=self.cfg.trunk_chunk, spatial="map" in self.cfg.pool,
                                     stored=stored_trunks(item_path(Path(self.folder), i), items[i]))
            except Exception as exc:  # noqa: BLE001 - one bad video never stops a run
                yield i, exc


def extract_trunk(cfg: ExtractConfig, dataset: Dataset, weights: dict,
                  built: dict[str, tuple[Backbone, dict]] | None = None) -> StageResult:
    """Stage "trunk" for `cfg`: every video's trunk maps (resumable; a no-op when complete).
    built: build_trunk_models(cfg) when the caller has it (serial runs reuse it)."""
    from pipeline.extract.features import resolve_device, window_groups
    built = build_trunk_models(cfg) if built is None else built
    plans = {s: p for s, (_, p) in built.items()}
    folder = trunk_dir(cfg, dataset, weights, plans)
    srcs = dataset.sources()
    groups = window_groups(cfg)
    maps = ("", "_map") if "map" in cfg.pool else ("",)

    def required(f: h5py.File) -> bool:         # the rates this windowing needs of this video
        frames = int(f.attrs["num_frames"])
        return all(f"{s}/{src}/r{r}{m}" in f for s, (model, p) in built.items()
                   for r in item_rates(model, frames, groups, p["rates"])
                   for src in p["sources"] for m in maps)

    if up_to_date(folder, srcs, strict=cfg.strict_frames, required=required):
        log.info("trunk maps already complete: %s", folder)
        return StageResult(folder, len(srcs), 0, {}, skipped_run=True)
    portable = dataclasses.replace(cfg, cache_root=str(Path(cfg.cache_root).resolve()),
                                   root=None if cfg.root is None else str(Path(cfg.root).resolve()))
    job = TrunkJob(portable, str(folder.resolve()),
                   tuple(builder_module(n) for n, _ in cfg.stream_backbones().values()), digest(srcs))
    if cfg.backend == "serial":       # this process runs the items: reuse what is built
        device = resolve_device(cfg.device)
        encoders = {s: TrunkEncoder(m, device=device, precision=cfg.precision) for s, (m, _) in built.items()}
        worker_state(f"{job.folder}:{job.listing}", lambda: (dataset, encoders, plans))
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "weights": weights,
                "plans": plans}
    with stage_lock(folder, cfg.shard_tuple()):
        return run_items(folder, list(srcs), job, manifest=manifest, sources=srcs,
                         shard=cfg.shard_tuple(), backend=cfg.backend, workers=cfg.workers,
                         scheduler=cfg.scheduler, required=required, progress=_progress("trunk"))


def _progress(desc: str):
    from tqdm import tqdm
    return lambda n: tqdm(total=n, desc=desc, unit="video", disable=None)


@dataclasses.dataclass(frozen=True)
class WindowsJob:
    """Windows pooled from stored trunk maps: no backbone forward pass (the heads after the
    trunk are applied to pooled vectors)."""

    cfg: ExtractConfig
    folder: str
    trunk: str
    modules: tuple[str, ...] = ()
    listing: str = ""

    def state(self):
        def build():
            dataset, built = _worker_models(self.cfg, self.modules)
            return dataset, {s: m for s, (m, _) in built.items()}
        return worker_state(f"{self.folder}:{self.listing}", build)

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        from pipeline.extract.features import ItemFeatures, window_groups, write_item
        dataset, models = self.state()
        items = {item.id: item for item in dataset.items()}
        groups = window_groups(self.cfg)
        rates_of = {s: rates(m, self.cfg) for s, m in models.items()}
        outputs = {s: [f"{layer}/{p}" for layer in self.cfg.layer for p in self.cfg.pool]
                   for s in models}
        for i in ids:
            path = item_path(Path(self.trunk), i)
            try:
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: no trunk maps for item {i} (its trunk "
                                            f"failed; see {Path(self.trunk) / 'manifest.json'})")
                done = ItemFeatures(items[i])
                with h5py.File(path, "r") as f:
                    done.num_frames = int(f.attrs["num_frames"])
                    for stream, model in models.items():
                        feats, starts = pool_item(f, model, stream, self.cfg.layer, self.cfg.pool, groups,
                                                  rates_of[stream])
                        for (name, gi), rows in feats.items():
                            done.feats[stream, name, gi] = list(rows)
                        for gi, s in starts.items():
                            done.starts[stream, gi] = list(s)
                yield i, functools.partial(write_item, done=done, groups=groups, outputs=outputs)
            except Exception as exc:  # noqa: BLE001 - fails this item, not the run
                yield i, exc


def windows_from_trunk(cfg: ExtractConfig, dataset: Dataset, weights: dict, folder: Path,
                       manifest: dict, required) -> StageResult:
    """trunk=on: the trunk stage (only what is missing), then every window pooled from it into
    the features folder `folder` (same item files as trunk=off)."""
    built = build_trunk_models(cfg)                    # once: the trunk and the heads after it
    trunk = extract_trunk(cfg, dataset, weights, built)
    srcs = dataset.sources()
    job = WindowsJob(cfg, str(folder.resolve()), str(trunk.folder.resolve()),
                     tuple(builder_module(n) for n, _ in cfg.stream_backbones().values()), digest(srcs))
    if cfg.backend == "serial":
        worker_state(f"{job.folder}:{job.listing}", lambda: (dataset, {s: m for s, (m, _) in built.items()}))
    with stage_lock(folder, cfg.shard_tuple()):
        return run_items(folder, list(srcs), job, manifest={**manifest, "trunk": str(trunk.folder)},
                         sources=srcs, shard=cfg.shard_tuple(), backend=cfg.backend,
                         workers=cfg.workers, scheduler=cfg.scheduler, required=required,
                         progress=_progress("windows"))
