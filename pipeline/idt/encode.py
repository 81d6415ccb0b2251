"""Fisher vectors of the IDT stage's items, fitted on one split's training videos only and cached
under `<idt folder>/fisher/<key12>/` (encoder.h5 + one vector file per video), plus the linear
IDT kernels for fusion with HoT (pipeline.idt.fusion).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import h5py
import numpy as np

from pipeline.core.cache import (StageError, atomic_path, h5_valid, item_path, seal, stage_key, stage_lock,
                            up_to_date)
from pipeline.core.runner import run_items
from pipeline.extract.settings import ExtractConfig
from pipeline.idt.fisher import FisherVectorEncoder
from pipeline.idt.settings import IDTConfig
from pipeline.idt.stage import idt_folder, load_dataset, required
from pipeline.core.parallel import worker_state

log = logging.getLogger(__name__)
FISHER, FISHER_VERSION = "fisher", 1
ENCODER = "encoder.h5"


class StoredVideo(Mapping):
    """One IDT item file as the mapping kind -> descriptors that FisherVectorEncoder.fit reads,
    loaded on access: fitting samples rows of every training video without holding them all."""

    def __init__(self, path: Path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.lengths = {k: len(f[k]) for k in f}

    def __getitem__(self, kind: str) -> "StoredColumn":
        if kind not in self.lengths:
            raise KeyError(kind)
        return StoredColumn(self.path, kind, self.lengths[kind])

    def __iter__(self):
        return iter(self.lengths)

    def __len__(self) -> int:
        return len(self.lengths)


@dataclasses.dataclass(frozen=True)
class StoredColumn:
    path: Path
    kind: str
    n: int

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return f[self.kind][()][rows]


def save_encoder(path: Path, encoder: FisherVectorEncoder, **attrs) -> None:
    """encoder.state() as HDF5 datasets ("<kind>/<array>" become groups), written atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in encoder.state().items():
                f.create_dataset(name, data=value)
            f.attrs.update(attrs)
            f.attrs["complete"] = True
        seal(tmp)                          # the checksum of its data, verified by h5_valid


def load_encoder(path: Path) -> FisherVectorEncoder:
    state: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: state.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return FisherVectorEncoder.from_state(state)


def write_vector(out: Path, *, item_id: str, source: str, vector: np.ndarray) -> None:
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item_id, source=source)
        f.create_dataset("fisher", data=vector.astype(np.float32))
        f.attrs["complete"] = True


@dataclasses.dataclass(frozen=True)
class EncodeJob:
    """Fisher vectors of IDT items as a picklable job (pipeline.core.parallel): each worker loads the
    fitted encoder once; a vector file carries its IDT item's source."""

    idt: str          # the IDT folder (items/<id>.h5)
    fisher: str       # the fisher folder (encoder.h5)
    stamp: int = 0    # encoder.h5's mtime_ns: a kept worker reloads a refitted encoder

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        encoder = worker_state(f"{self.fisher}:{self.stamp}",
                               lambda: load_encoder(Path(self.fisher) / ENCODER))
        for item_id in ids:
            try:
                with h5py.File(item_path(Path(self.idt), item_id), "r") as f:
                    source = str(f.attrs["source"])
                    video = {kind: f[kind][()] for kind in encoder.kinds}
                vector = encoder.encode(video)
            except Exception as exc:  # noqa: BLE001 - fails this item only
                yield item_id, exc
                continue
            yield item_id, functools.partial(write_vector, item_id=item_id, source=source,
                                             vector=vector)


def encoding_params(icfg: IDTConfig) -> dict:
    return {"n_components": icfg.idt_gmm_components, "pca_ratio": icfg.idt_pca_ratio,
            "n_samples": icfg.idt_gmm_samples, "seed": icfg.idt_seed}


def fisher_dir(folder: Path, icfg: IDTConfig, train_sources: Mapping[str, str]) -> Path:
    """`<idt folder>/fisher/<key12>/`: keyed by the encoding parameters and the training videos
    (sorted ids with their sources), so another split's training part fits its own encoder."""
    train = {i: train_sources[i] for i in sorted(train_sources)}
    key = stage_key(FISHER, FISHER_VERSION, {"encoding": encoding_params(icfg), "train": train},
                    upstream=[folder.name])
    return folder / FISHER / key[:12]


def idt_fisher_vectors(ecfg: ExtractConfig, icfg: IDTConfig, ids: Sequence[str],
                       train_ids: Sequence[str]) -> np.ndarray:
    """Fisher vectors (len(ids), D) float32 of the videos `ids`, with the encoder (PCA + GMM per
    descriptor type) fitted on a seeded sample of the descriptors of `train_ids` only (one split's
    training part). The encoder and the vectors are cached and reused; every video of `ids` and
    `train_ids` must have its IDT item (run stages.idt first)."""
    dataset = load_dataset(ecfg)
    folder, sources = idt_folder(ecfg, icfg, dataset)
    unknown = sorted((set(ids) | set(train_ids)) - set(sources))
    if unknown:
        raise ValueError(f"{len(unknown)} ids are not items of {dataset.identity}: {unknown[:5]}")
    if not train_ids:
        raise ValueError("train_ids is empty: the encoder is fitted on training videos")
    check = required(icfg)
    missing = [i for i in dict.fromkeys([*train_ids, *ids])
               if not h5_valid(item_path(folder, i), check, sources[i])]
    if missing:
        raise StageError(f"{len(missing)} videos have no IDT item in {folder} (e.g. "
                         f"{missing[:5]}); run `python -m stages.idt` with the same settings "
                         f"(failed videos are listed in its manifest.json)")
    train = sorted(set(train_ids))
    fisher = fisher_dir(folder, icfg, {i: sources[i] for i in train})
    wanted = {i: sources[i] for i in dict.fromkeys(ids)}
    with stage_lock(fisher):
        encoder_path = fisher / ENCODER
        if not h5_valid(encoder_path):
            log.info("fitting the IDT Fisher-vector encoder on %d training videos", len(train))
            encoder = FisherVectorEncoder.from_config(icfg)
            encoder.fit([StoredVideo(item_path(folder, i)) for i in train])
            save_encoder(encoder_path, encoder, train=len(train))
        if not up_to_date(fisher, wanted):
            job = EncodeJob(str(folder.resolve()), str(fisher.resolve()),
                            encoder_path.stat().st_mtime_ns)
            manifest = {"stage": FISHER, "version": FISHER_VERSION, "idt": folder.name,
                        "encoding": encoding_params(icfg), "train": len(train)}
            result = run_items(fisher, list(wanted), job, manifest=manifest, sources=wanted,
                               backend=ecfg.backend, workers=ecfg.workers, scheduler=ecfg.scheduler,
                               required=lambda f: "fisher" in f)
            if result.failures:
                raise StageError(f"Fisher vectors failed for {len(result.failures)} videos: "
                                 f"{dict(list(result.failures.items())[:5])}")
    out = []
    for item_id in ids:
        with h5py.File(item_path(fisher, item_id), "r") as f:
            out.append(f["fisher"][()])
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def idt_kernel(ecfg: ExtractConfig, icfg: IDTConfig, train_ids: Sequence[str],
               test_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Linear IDT kernels of one split for pipeline.idt.fusion: (K_train (n_train, n_train),
    K_test (n_test, n_train)) of the Fisher vectors l2-normalised as a whole (each descriptor type
    is already unit norm), so a video with trajectories has K(x, x) = 1, comparable to HoT's."""
    x = idt_fisher_vectors(ecfg, icfg, [*train_ids, *test_ids], train_ids).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.where(norm > 0, norm, 1.0)
    train, test = x[:len(train_ids)], x[len(train_ids):]
    return train @ train.T, test @ train.T
