"""The stage-1 engine: decode each video once, cut every (L, s) window of every stream (RGB
frames, and optical flow from the same decoded frames or from the flow cache), run each stream's
backbone once per batch for all requested layers, pool, and write one HDF5 file per video.

Decoding (and flow) runs in a background thread while the backbone runs; windows of consecutive
videos are batched together per (stream, window group), so short videos still fill batches.

Item file: per stream, layer and pooling a group "<stream>/<layer>/<pool>" holding one dataset per
window group "L{L}_s{s}", with attrs length, stride, step and starts (W,) (window start frames,
relative to the item's first frame). Pools "mean"/"max" pool time and space: (W, D) float32;
"map" averages time only: (W, D, H', W') float16 (for spatial attention; half the bytes, and
attention reads them in float32; docs/method.md, "Spatial maps"). All streams have the same windows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import queue
import threading
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
from tqdm import tqdm

from pipeline.extract.backbones import Backbone, build_backbone, builder_module, weights_identity
from pipeline.core.cache import StageResult, digest, stage_dir, stage_key, stage_lock, up_to_date
from pipeline.core.runner import run_items
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params
from pipeline.datasets import Dataset, Item, get_dataset
from pipeline.extract.flow import AlignedFlow
from pipeline.extract.flow_cache import FlowCache
from pipeline.core.devices import resolve_device
from pipeline.core.parallel import worker_state
from pipeline.extract.video import VideoError, VideoReader, WindowCutter, WindowGroup

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "features", 5
QUEUE_WINDOWS = 64          # decoded windows waiting for the backbone (bounds memory)


def load_dataset(cfg: ExtractConfig) -> Dataset:
    return get_dataset(cfg.dataset, cfg.root, cache_root=cfg.cache_root, **cfg.dataset_options)


def window_groups(cfg: ExtractConfig) -> list[WindowGroup]:
    return [WindowGroup(L, S, s) for L, S, s in cfg.groups()]


class WindowEncoder:
    """Turns a batch of clips into features of every (layer, pool) with one forward pass."""

    def __init__(self, model: Backbone, *, layers: tuple[str, ...], pool: tuple[str, ...],
                 device: torch.device, precision: str = "fp32"):
        for layer in layers:
            model.check_layer(layer)
        self.model, self.layers, self.pool, self.device = model.to(device).eval(), layers, pool, device
        self.bf16 = precision == "bf16"
        spec = model.spec
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1, 1)

    @property
    def outputs(self) -> list[str]:
        """"<layer>/<pool>" in the order __call__ returns them."""
        return [f"{layer}/{pool}" for layer in self.layers for pool in self.pool]

    @torch.inference_mode()
    def __call__(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """clips: B x (L, H, W, C), uint8 or float in [0, 1] -> one array per output:
        (B, D) for mean/max over time and space, (B, D, H', W') for "map"."""
        # (B, L, H, W, C) permuted to (B, C, L, H, W) keeps channels-last-3d strides through
        # .float(): the faster layout (x3d_xs, 8 x 16 x 112^2 on CPU: 0.51 s vs 0.88 s contiguous;
        # converting the weights too gained nothing)
        x = torch.from_numpy(np.stack(clips))
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        if clips[0].dtype == np.uint8:
            x = x.div_(255)
        x = x.sub_(self.mean).div_(self.std)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            maps = self.model.forward_layers(x, self.layers)       # each (B, D, T', H', W')
        pooled = {"mean": lambda y: y.mean(dim=(2, 3, 4)), "max": lambda y: y.mean(dim=(3, 4)).amax(dim=2),
                  "map": lambda y: y.mean(dim=2)}
        return [pooled[p](y.float()).cpu().numpy() for y in maps for p in self.pool]


class ItemWindows:
    """The windows of one item for each stream, from one decode: iterate for
    (stream, group index, start, clip); `num_frames` is set once iteration ends.

    Flow comes from the flow cache when it holds the item (then only RGB, if asked, is decoded),
    else it is computed from the decoded frames and written to the cache as it goes.
    """

    def __init__(self, item: Item, groups: list[WindowGroup], streams: tuple[str, ...], *,
                 size: int, crop: bool, flow: str, flow_cache: FlowCache | None):
        self.item, self.groups, self.streams = item, groups, streams
        self.reader = VideoReader(item.path, frames=item.frames, size=size, crop=crop)
        self.flow, self.flow_cache = flow, flow_cache
        self.num_frames: int | None = None

    def pairs(self) -> Iterator[tuple[np.ndarray | None, np.ndarray | None]]:
        """(RGB frame or None, flow frame or None) for every frame, from one decode (flow from the
        cache when it holds the item); `num_frames` is set once they end."""
        item, cache = self.item, self.flow_cache
        count = 0
        if "flow" not in self.streams:
            frames = ((f, None) for f in self.reader)
        elif cache is not None and cache.has(item.id, item.path, item.frames):
            flows = cache.reader(item.id)
            frames = zip(self.reader, flows) if "rgb" in self.streams else ((None, f) for f in flows)
        else:
            frames = self._computed_flow()
        for pair in frames:
            count += 1
            yield pair
        self.num_frames = count
        if ("flow" in self.streams and "rgb" in self.streams and cache is not None
                and cache.has(item.id, item.path, item.frames) and count != cache.num_frames(item.id)):
            raise RuntimeError(f"{item.path}: decoded {count} frames but the flow "
                               f"cache holds {cache.num_frames(item.id)}; clear {cache.folder}")

    def __iter__(self) -> Iterator[tuple[str, int, int, np.ndarray]]:
        cutters = {s: WindowCutter(self.groups) for s in self.streams}
        for rgb, flow in self.pairs():
            for stream, frame in (("rgb", rgb), ("flow", flow)):
                if frame is not None and stream in cutters:
                    for gi, start, clip in cutters[stream].push(frame):
                        yield stream, gi, start, clip
        for stream, cutter in cutters.items():
            for gi, start, clip in cutter.finish():
                yield stream, gi, start, clip

    def _computed_flow(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(frame, flow frame) pairs: flow frame i (motion i -> i+1) is ready with frame i + 1.
        Each flow frame passes through the cache's quantisation, cached run or not."""
        item, aligned, previous = self.item, AlignedFlow(self.flow), None
        cache = self.flow_cache
        with cache.writer(item.id, item.path, item.frames) if cache else contextlib.nullcontext() as store:
            keep = store.push if store is not None else (lambda unit: unit)
            for frame in self.reader:
                unit = aligned.push(frame)
                if unit is not None:
                    yield previous, keep(unit)
                previous = frame
            if previous is None:
                raise VideoError(f"{item.path}: no frames could be decoded")
            yield previous, keep(aligned.finish())


@dataclasses.dataclass
class ItemFeatures:
    """What has been computed of one item while its windows are in flight."""

    item: Item
    outstanding: int = 0                      # windows sent to the backbone, not yet back
    num_frames: int | None = None             # set when decoding ended
    failure: BaseException | None = None
    sent: bool = False                        # yielded to the caller
    feats: dict = dataclasses.field(default_factory=lambda: defaultdict(list))  # (stream, output, gi) -> rows
    starts: dict = dataclasses.field(default_factory=lambda: defaultdict(list))  # (stream, gi) -> starts

    @property
    def finished(self) -> bool:
        return self.outstanding == 0 and (self.num_frames is not None or self.failure is not None)


def write_item(out: Path, *, done: ItemFeatures, groups: list[WindowGroup],
               outputs: dict[str, list[str]]) -> None:
    """Write an item's features (see the module docstring) to the HDF5 file `out`."""
    item = done.item
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item.id, num_frames=done.num_frames, path=str(item.path),
                       source=item.source())
        if item.frames is not None:
            f.attrs["frame_range"] = np.asarray(item.frames, np.int64)
        for stream, names in outputs.items():
            for name in names:
                for gi, g in enumerate(groups):
                    dtype = np.float16 if name.endswith("/map") else np.float32
                    ds = f.create_dataset(f"{stream}/{name}/{g.name}",
                                          data=np.stack(done.feats[stream, name, gi]).astype(dtype))
                    ds.attrs.update(length=g.length, stride=g.stride, step=g.step,
                                    starts=np.asarray(done.starts[stream, gi], np.int64))
        f.attrs["complete"] = True


def _decode(items: list[Item], sources, out: queue.Queue, stop: threading.Event) -> None:
    """Producer thread: ("window", i, stream, gi, start, clip), then ("end", i, num_frames) or
    ("fail", i, exception) per item; None when all are done."""
    def put(message) -> bool:
        while not stop.is_set():
            try:
                out.put(message, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    try:
        for i, item in enumerate(items):
            try:
                source = sources(item)
                for stream, gi, start, clip in source:
                    if not put(("window", i, stream, gi, start, clip)):
                        return
                message = ("end", i, source.num_frames)
            except Exception as exc:  # noqa: BLE001 - one bad video never stops a run
                message = ("fail", i, exc)
            if not put(message):
                return
    finally:
        put(None)


def extract_items(items: list[Item], groups: list[WindowGroup], encoders: dict[str, WindowEncoder],
                  *, size: int, crop: bool, batch_size: int, flow: str = "tvl1",
                  flow_cache: FlowCache | None = None) -> Iterator[tuple[str, object]]:
    """Stage 1 over `items`: yields (item id, write(path)) for each item as its features are
    complete, or (item id, exception) for an item that failed.

    encoders: stream ("rgb", "flow") -> its encoder. A background thread decodes the videos in
    order (one decode per video for all streams and groups); this thread batches windows of the
    same (stream, group) across videos and runs the backbones.
    """
    streams = tuple(encoders)
    outputs = {s: enc.outputs for s, enc in encoders.items()}
    states = [ItemFeatures(item) for item in items]
    pending: dict[tuple[str, int], list[tuple[int, int, np.ndarray]]] = defaultdict(list)
    windows: queue.Queue = queue.Queue(maxsize=QUEUE_WINDOWS)
    stop = threading.Event()
    sources = lambda item: ItemWindows(item, groups, streams, size=size, crop=crop,  # noqa: E731
                                       flow=flow, flow_cache=flow_cache)
    producer = threading.Thread(target=_decode, args=(items, sources, windows, stop), daemon=True,
                                name="stage1-decode")

    def encode(key: tuple[str, int]) -> None:
        stream, gi = key
        batch = pending.pop(key)
        touched.update(i for i, _, _ in batch)
        try:
            feats = encoders[stream]([clip for _, _, clip in batch])
        except Exception as exc:  # noqa: BLE001 - fails the batch's items, not the run
            feats = None
            for i, _, _ in batch:
                states[i].failure = states[i].failure or exc
        for row, (i, start, _) in enumerate(batch):
            state = states[i]
            state.outstanding -= 1
            if feats is not None and state.failure is None:
                state.starts[stream, gi].append(start)
                for name, values in zip(outputs[stream], feats):
                    state.feats[stream, name, gi].append(values[row])

    def drop(i: int) -> None:
        """Take a failed item's windows out of the batches."""
        for key, batch in pending.items():
            kept = [w for w in batch if w[0] != i]
            states[i].outstanding -= len(batch) - len(kept)
            pending[key] = kept

    def ready() -> Iterator[tuple[str, object]]:
        for i in sorted(touched):
            state = states[i]
            if state.finished and not state.sent:
                state.sent = True
                if state.failure is not None:
                    yield state.item.id, state.failure
                else:
                    yield state.item.id, functools.partial(write_item, done=state, groups=groups,
                                                           outputs=outputs)
                state.feats = state.starts = None        # written: free the rows
        touched.clear()

    touched: set[int] = set()
    producer.start()
    try:
        for message in iter(windows.get, None):
            kind, i = message[:2]
            if kind == "window":
                stream, gi, start, clip = message[2:]
                states[i].outstanding += 1
                pending[stream, gi].append((i, start, clip))
                if len(pending[stream, gi]) == batch_size:
                    encode((stream, gi))
            elif kind == "end":
                states[i].num_frames = message[2]
            else:
                states[i].failure = message[2]
                drop(i)
            touched.add(i)
            yield from ready()
        for key in list(pending):
            if pending[key]:
                encode(key)
        yield from ready()
    finally:
        stop.set()
        producer.join()


def input_size(cfg: ExtractConfig, models: dict[str, Backbone]) -> int:
    """The one frame size every stream's backbone gets (size=, else their training size)."""
    sizes = {cfg.size or m.spec.size for m in models.values()}
    if len(sizes) > 1:
        raise ValueError(f"the streams' backbones expect different input sizes {sorted(sizes)}; "
                         f"set size= to decode once at one size")
    return sizes.pop()


def build_encoders(cfg: ExtractConfig) -> tuple[dict[str, WindowEncoder], dict[str, dict], int]:
    """(stream -> encoder, stream -> weights identity, input size) for `cfg`, validated."""
    device = resolve_device(cfg.device)
    encoders, weights, sizes = {}, {}, set()
    for stream, (name, stream_weights) in cfg.stream_backbones().items():
        model, info = build_backbone(name, weights=stream_weights, seed=cfg.seed)
        spec = model.spec
        if spec.channels != (2 if stream == "flow" else 3):
            raise ValueError(f"backbone {name} takes {spec.channels}-channel input, which does not "
                             f"fit the {stream} stream; use a flow backbone (e.g. inception_i3d_flow) "
                             f"for flow and an RGB one for rgb")
        if min(cfg.lengths) < spec.min_frames:
            raise ValueError(f"lengths={cfg.lengths}: backbone {name} needs windows of at least "
                             f"{spec.min_frames} frames; raise the shortest length")
        encoders[stream] = WindowEncoder(model, layers=cfg.layer, pool=cfg.pool, device=device,
                                         precision=cfg.precision)
        weights[stream] = info.as_dict()
        sizes.add(cfg.size or spec.size)
    if len(sizes) > 1:
        raise ValueError(f"the streams' backbones expect different input sizes {sorted(sizes)}; "
                         f"set size= to decode once at one size")
    return encoders, weights, sizes.pop()


@dataclasses.dataclass(frozen=True)
class ExtractJob:
    """Stage 1 as a picklable job (pipeline.core.parallel): the config travels, each worker process
    builds the dataset index and the models once."""

    cfg: ExtractConfig
    folder: str
    modules: tuple[str, ...] = ()     # modules registering the backbones (imported in workers)
    listing: str = ""                 # digest of the dataset's item sources: a worker kept from
                                      # an earlier run rebuilds its index when videos came or went
    dataset: Dataset | None = None    # carried when the registry cannot rebuild it (predict's
                                      # VideoSet); None: load_dataset(cfg) in each worker

    def state(self) -> tuple[Dataset, dict[str, WindowEncoder], int]:
        """(dataset, stream -> encoder, input size), built once per process."""
        def build():
            for module in self.modules:
                importlib.import_module(module)
            encoders, _, size = build_encoders(self.cfg)
            return self.dataset or load_dataset(self.cfg), encoders, size
        return worker_state(f"{self.folder}:{self.listing}", build)

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        dataset, encoders, size = self.state()
        items = {item.id: item for item in dataset.items()}
        yield from extract_items([items[i] for i in ids], window_groups(self.cfg), encoders,
                                 size=size, crop=self.cfg.crop, batch_size=self.cfg.batch_size,
                                 flow=self.cfg.flow, flow_cache=flow_cache_of(self.cfg, dataset, size))


def flow_cache_of(cfg: ExtractConfig, dataset: Dataset, size: int) -> FlowCache | None:
    if "flow" not in cfg.streams:
        return None
    return FlowCache(cfg.cache_root, dataset.identity, method=cfg.flow, size=size, crop=cfg.crop)


def stream_weights(cfg: ExtractConfig) -> dict[str, dict]:
    """stream -> identity of its backbone's weights, without building the models."""
    return {stream: weights_identity(name, weights=w, seed=cfg.seed).as_dict()
            for stream, (name, w) in cfg.stream_backbones().items()}


def features_dir(cfg: ExtractConfig, dataset: Dataset, weights: dict[str, dict] | None = None) -> Path:
    """The stage-1 folder of `cfg` on `dataset`: keyed by the settings that change a video's
    features and the weights' identity, never by the set of videos or the splits."""
    weights = stream_weights(cfg) if weights is None else weights
    params = key_params(cfg)
    if cfg.trunk == "off":            # exact windows: keyed as before trunk= existed
        params.pop("trunk"), params.pop("trunk_chunk")
    else:                             # windows longer than the video: from the nearest rate
        params["short_videos"] = "nearest_rate"   # (trunk.window_rate; earlier: their step's)
    if "map" in cfg.pool:             # maps are stored as float16 since then: a new key for them,
        params["map_dtype"] = "float16"   # every other stage-1 key unchanged
    key = stage_key(STAGE, STAGE_VERSION, params, weights=weights)
    names = "+".join(name for name, _ in cfg.stream_backbones().values())
    return stage_dir(cfg.cache_root, STAGE, dataset.identity, f"{names}-{'+'.join(cfg.layer)}", key)


def extract_features(cfg: ExtractConfig, dataset: Dataset | None = None) -> StageResult:
    """Run stage 1 for `cfg`, resuming whatever an earlier run left; a no-op when complete.
    Items already computed from the same source are kept: a new video computes one item.
    dataset: the videos, when not cfg's dataset of the registry (predict's new videos)."""
    carried = dataset
    dataset = dataset or load_dataset(cfg)
    log.info("%s", dataset.describe())
    weights = stream_weights(cfg)
    folder = features_dir(cfg, dataset, weights)
    sources = dataset.sources()
    if up_to_date(folder, sources, strict=cfg.strict_frames):
        log.info("features already complete: %s", folder)
        return StageResult(folder, len(sources), 0, {}, skipped_run=True)
    groups = window_groups(cfg)
    required = lambda f: all(f"{o}/{g.name}" in f for o in cfg.outputs() for g in groups)  # noqa: E731
    if cfg.trunk == "on":
        from pipeline.extract.trunk import windows_from_trunk
        if carried is not None and cfg.backend != "serial":   # workers rebuild datasets by name
            log.info("trunk=on for videos outside a registered dataset: backend=serial")
            cfg = dataclasses.replace(cfg, backend="serial")
        manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "weights": weights,
                    "streams": list(cfg.streams), "outputs": cfg.outputs(), "parts": cfg.parts(),
                    "groups": [g.name for g in groups]}
        return windows_from_trunk(cfg, dataset, weights, folder, manifest, required)
    encoders, built, size = build_encoders(cfg)
    if built != weights:
        raise RuntimeError(f"the weights loaded ({built}) are not those identified ({weights})")
    items = {item.id: item for item in dataset.items()}
    # workers may run elsewhere (another cwd, another machine sharing the filesystem): absolute paths
    portable = dataclasses.replace(cfg, cache_root=str(Path(cfg.cache_root).resolve()),
                                   root=None if cfg.root is None else str(Path(cfg.root).resolve()))
    job = ExtractJob(portable, str(folder.resolve()),
                     tuple(builder_module(n) for n, _ in cfg.stream_backbones().values()),
                     digest(sources), carried)
    if cfg.backend == "serial":       # this process runs the items: reuse what is built
        worker_state(f"{job.folder}:{job.listing}", lambda: (dataset, encoders, size))
    else:
        del encoders                  # the workers build their own
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "weights": weights,
                "streams": list(cfg.streams), "outputs": cfg.outputs(), "parts": cfg.parts(),
                "groups": [g.name for g in groups], "input_size": size}
    with stage_lock(folder, cfg.shard_tuple()):
        return run_items(folder, list(items), job, manifest=manifest, sources=sources,
                         shard=cfg.shard_tuple(),
                         backend=cfg.backend, workers=cfg.workers, scheduler=cfg.scheduler,
                         required=required,
                         progress=lambda n: tqdm(total=n, desc="extract", unit="video", disable=None))
