"""The stage-1 engine: decode each video once, cut every (L, s) window, run the backbone, pool
the chosen layer over space and time, and write one HDF5 file per video.

Item file: one dataset per group "L{L}_s{s}" of shape (W, D) float32 with attrs length,
stride, step and starts (W,) (the window start frames, relative to the item's first frame).
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
from pipeline.flow import flow_frames
from pipeline.video import VideoReader, WindowGroup, cut_windows

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "features", 1


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
    return stage_dir(cfg.cache_root, STAGE, cfg.dataset, f"{cfg.backbone}-{cfg.stream}-{cfg.layer}", key)


class WindowEncoder:
    """Turns uint8 RGB clips into pooled feature vectors with a backbone, in batches."""

    def __init__(self, model: Backbone, *, layer: str, pool: str, device: torch.device):
        model.check_layer(layer)
        self.model, self.layer, self.pool, self.device = model.to(device), layer, pool, device
        spec = model.spec
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1, 1)

    @torch.inference_mode()
    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: B x (L, H, W, C), uint8 or float in [0, 1] -> (B, D) float32."""
        batch = np.stack(clips)
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        if batch.dtype == np.uint8:
            x = x.div_(255)
        x = x.sub_(self.mean).div_(self.std)
        y = self.model(x, self.layer).float()          # (B, D, T', H', W')
        y = y.mean(dim=(3, 4))                          # space
        y = y.amax(dim=2) if self.pool == "max" else y.mean(dim=2)
        return y.cpu().numpy()


def extract_item(item: Item, groups: list[WindowGroup], encoder: WindowEncoder, *,
                 size: int, crop: bool, batch_size: int, out: Path, flow: str | None = None) -> None:
    """Decode `item` once and write its windows' features to the HDF5 file `out`.

    flow: None for RGB windows, else the optical-flow method whose flow frames are windowed.
    """
    reader = VideoReader(item.path, frames=item.frames, size=size, crop=crop)
    frames = reader if flow is None else flow_frames(reader, flow)
    starts: list[list[int]] = [[] for _ in groups]
    feats: list[list[np.ndarray]] = [[] for _ in groups]
    pending: list[list[np.ndarray]] = [[] for _ in groups]

    def flush(gi: int) -> None:
        if pending[gi]:
            feats[gi].append(encoder(pending[gi]))
            pending[gi] = []

    for gi, start, clip in cut_windows(frames, groups):
        starts[gi].append(start)
        pending[gi].append(clip)
        if len(pending[gi]) == batch_size:
            flush(gi)
    for gi in range(len(groups)):
        flush(gi)
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item.id, labels=np.asarray(item.labels, np.int64),
                       num_frames=reader.decoded, path=str(item.path))
        if item.frames is not None:
            f.attrs["frame_range"] = np.asarray(item.frames, np.int64)
        for gi, g in enumerate(groups):
            ds = f.create_dataset(g.name, data=np.concatenate(feats[gi]).astype(np.float32))
            ds.attrs.update(length=g.length, stride=g.stride, step=g.step,
                            starts=np.asarray(starts[gi], np.int64))
        f.attrs["complete"] = True


def extract_features(cfg: ExtractConfig) -> StageResult:
    """Run stage 1 for `cfg`, resuming whatever an earlier run left; a no-op when complete."""
    dataset = load_dataset(cfg)
    log.info("%s", dataset.describe())
    model, weights = build_backbone(cfg.backbone, weights=cfg.weights, seed=cfg.seed)
    spec = model.spec
    if spec.channels != (2 if cfg.stream == "flow" else 3):
        raise ValueError(f"backbone={cfg.backbone} takes {spec.channels}-channel input, which does "
                         f"not fit stream={cfg.stream}; use a flow backbone (e.g. "
                         f"inception_i3d_flow) for flow and an RGB one for rgb")
    if min(cfg.lengths) < spec.min_frames:
        raise ValueError(f"lengths={cfg.lengths}: backbone {cfg.backbone} needs windows of at "
                         f"least {spec.min_frames} frames; raise the shortest length")
    folder = features_dir(cfg, dataset, weights.as_dict())
    if complete_manifest(folder):
        log.info("features already complete: %s", folder)
        return StageResult(folder, len(dataset.items()), 0, {}, skipped_run=True)
    groups = window_groups(cfg)
    encoder = WindowEncoder(model, layer=cfg.layer, pool=cfg.pool, device=resolve_device(cfg.device))
    items = {item.id: item for item in dataset.items()}
    size = cfg.size or spec.size

    def process(item_id: str, out: Path) -> None:
        extract_item(items[item_id], groups, encoder, size=size, crop=cfg.crop,
                     batch_size=cfg.batch_size, out=out,
                     flow=cfg.flow if cfg.stream == "flow" else None)

    manifest = {"stage": STAGE, "version": STAGE_VERSION, "config": cfg, "weights": weights.as_dict(),
                "groups": [g.name for g in groups], "input_size": size}
    with stage_lock(folder, cfg.shard_tuple()):
        return run_items(folder, list(items), process, manifest=manifest, shard=cfg.shard_tuple(),
                         required=lambda f: all(g.name in f for g in groups),
                         progress=lambda xs: tqdm(xs, desc="extract", unit="video", disable=None))
