"""The stage-1 engine: decode each video once, cut every (L, s) window of every stream (RGB
frames, and optical flow computed from the same decoded frames), run each stream's backbone,
pool the chosen layer over space and time, and write one HDF5 file per video.

Item file: per stream ("rgb", "flow") and temporal pooling ("mean", "max") a group
"<stream>/<pool>" holding one dataset per window group "L{L}_s{s}" of shape (W, D) float32 with
attrs length, stride, step and starts (W,) (window start frames, relative to the item's first
frame). All streams have the same windows.
"""
from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from pipeline.backbones import Backbone, build_backbone
from pipeline.cache import StageResult, complete_manifest, run_items, stage_dir, stage_key, stage_lock
from pipeline.config import ExtractConfig, key_params
from pipeline.datasets import Dataset, Item, get_dataset
from pipeline.flow import AlignedFlow
from pipeline.video import VideoReader, WindowCutter, WindowGroup

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "features", 3


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_dataset(cfg: ExtractConfig) -> Dataset:
    return get_dataset(cfg.dataset, cfg.root, cache_root=cfg.cache_root, **cfg.dataset_options)


def window_groups(cfg: ExtractConfig) -> list[WindowGroup]:
    return [WindowGroup(L, S, s) for L, S, s in cfg.groups()]


def features_dir(cfg: ExtractConfig, dataset: Dataset, weights: dict) -> Path:
    """The content-keyed folder of this configuration's features."""
    key = stage_key(STAGE, STAGE_VERSION, key_params(cfg), ids=[i.id for i in dataset.items()],
                    weights=weights)
    names = "+".join(name for name, _ in cfg.stream_backbones().values())
    return stage_dir(cfg.cache_root, STAGE, cfg.dataset, f"{names}-{cfg.layer}", key)


class WindowEncoder:
    """Turns uint8 RGB clips into pooled feature vectors with a backbone, in batches."""

    def __init__(self, model: Backbone, *, layer: str, pool: tuple[str, ...], device: torch.device):
        model.check_layer(layer)
        self.model, self.layer, self.pool, self.device = model.to(device), layer, pool, device
        spec = model.spec
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1, 1)

    @torch.inference_mode()
    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: B x (L, H, W, C), uint8 or float in [0, 1] -> (B, P, D) float32, one row per
        temporal pooling in `pool`."""
        batch = np.stack(clips)
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        if batch.dtype == np.uint8:
            x = x.div_(255)
        x = x.sub_(self.mean).div_(self.std)
        y = self.model(x, self.layer).float()          # (B, D, T', H', W')
        y = y.mean(dim=(3, 4))                          # space
        pooled = {"mean": lambda: y.mean(dim=2), "max": lambda: y.amax(dim=2)}
        return np.stack([pooled[p]().cpu().numpy() for p in self.pool], axis=1)   # (B, P, D)


class Windows:
    """Collects one stream's windows, encodes them in batches per group, keeps their starts."""

    def __init__(self, groups: list[WindowGroup], encoder: "WindowEncoder", batch_size: int):
        self.groups, self.encoder, self.batch_size = groups, encoder, batch_size
        self.cutter = WindowCutter(groups)
        self.starts: list[list[int]] = [[] for _ in groups]
        self.feats: list[list[np.ndarray]] = [[] for _ in groups]
        self.pending: list[list[np.ndarray]] = [[] for _ in groups]

    def add(self, windows: list[tuple[int, int, np.ndarray]]) -> None:
        for gi, start, clip in windows:
            self.starts[gi].append(start)
            self.pending[gi].append(clip)
            if len(self.pending[gi]) == self.batch_size:
                self._flush(gi)

    def _flush(self, gi: int) -> None:
        if self.pending[gi]:
            self.feats[gi].append(self.encoder(self.pending[gi]))
            self.pending[gi] = []

    def finish(self) -> None:
        self.add(self.cutter.finish())
        for gi in range(len(self.groups)):
            self._flush(gi)

    def write(self, group: h5py.Group) -> None:
        for pi, pool in enumerate(self.encoder.pool):
            for gi, g in enumerate(self.groups):
                data = np.concatenate(self.feats[gi])[:, pi].astype(np.float32)
                ds = group.create_dataset(f"{pool}/{g.name}", data=data)
                ds.attrs.update(length=g.length, stride=g.stride, step=g.step,
                                starts=np.asarray(self.starts[gi], np.int64))


def extract_item(item: Item, groups: list[WindowGroup], encoders: dict[str, "WindowEncoder"], *,
                 size: int, crop: bool, batch_size: int, out: Path, flow: str = "tvl1") -> None:
    """Decode `item` once and write the windows' features of every stream to the HDF5 file `out`.

    encoders: stream ("rgb", "flow") -> its encoder; flow frames come from the decoded frames
    by `flow` (a pipeline.flow method), aligned so both streams share their windows.
    """
    reader = VideoReader(item.path, frames=item.frames, size=size, crop=crop)
    streams = {name: Windows(groups, enc, batch_size) for name, enc in encoders.items()}
    rgb, flows = streams.get("rgb"), streams.get("flow")
    aligned = AlignedFlow(flow) if flows is not None else None
    for frame in reader:
        if rgb is not None:
            rgb.add(rgb.cutter.push(frame))
        if flows is not None and (flow_frame := aligned.push(frame)) is not None:
            flows.add(flows.cutter.push(flow_frame))
    if flows is not None and reader.decoded:
        flows.add(flows.cutter.push(aligned.finish()))
    for windows in streams.values():
        windows.finish()
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item.id, labels=np.asarray(item.labels, np.int64),
                       num_frames=reader.decoded, path=str(item.path))
        if item.frames is not None:
            f.attrs["frame_range"] = np.asarray(item.frames, np.int64)
        for name, windows in streams.items():
            windows.write(f.create_group(name))
        f.attrs["complete"] = True


def extract_features(cfg: ExtractConfig) -> StageResult:
    """Run stage 1 for `cfg`, resuming whatever an earlier run left; a no-op when complete."""
    dataset = load_dataset(cfg)
    log.info("%s", dataset.describe())
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
        encoders[stream] = WindowEncoder(model, layer=cfg.layer, pool=cfg.pool, device=device)
        weights[stream] = info.as_dict()
        sizes.add(cfg.size or spec.size)
    if len(sizes) > 1:
        raise ValueError(f"the streams' backbones expect different input sizes {sorted(sizes)}; "
                         f"set size= to decode once at one size")
    size = sizes.pop()
    folder = features_dir(cfg, dataset, weights)
    if complete_manifest(folder):
        log.info("features already complete: %s", folder)
        return StageResult(folder, len(dataset.items()), 0, {}, skipped_run=True)
    groups = window_groups(cfg)
    items = {item.id: item for item in dataset.items()}

    def process(item_id: str, out: Path) -> None:
        extract_item(items[item_id], groups, encoders, size=size, crop=cfg.crop,
                     batch_size=cfg.batch_size, out=out, flow=cfg.flow)

    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "weights": weights,
                "streams": list(cfg.streams), "parts": cfg.parts(), "groups": [g.name for g in groups],
                "input_size": size}
    with stage_lock(folder, cfg.shard_tuple()):
        return run_items(folder, list(items), process, manifest=manifest, shard=cfg.shard_tuple(),
                         required=lambda f: all(f"{p}/{g.name}" in f for p in cfg.parts() for g in groups),
                         progress=lambda xs: tqdm(xs, desc="extract", unit="video", disable=None))
