"""Improved dense trajectories as a resumable stage: one HDF5 file per video under
`<cache_root>/idt/<dataset>/idt-<key12>/`, extracted here or imported from DenseTrackStab's text
output (`import-<key12>/`), with the loop, locks, shards and backends of stage 1 (pipeline.core.cache).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.core.cache import StageResult, digest, stage_dir, stage_key, stage_lock, up_to_date
from pipeline.core.digests import file_digest
from pipeline.core.runner import run_items
from pipeline.extract.settings import ExtractConfig
from pipeline.datasets import Dataset, get_dataset
from pipeline.idt.descriptors import OUTPUT_KEYS
from pipeline.idt.settings import IDTConfig
from pipeline.idt.textformat import read_idt_text
from pipeline.idt.trajectories import extract_idt_video
from pipeline.core.parallel import worker_state

log = logging.getLogger(__name__)
STAGE, IDT_STAGE_VERSION = "idt", 1
ENCODING_KEYS = ("idt_gmm_components", "idt_pca_ratio", "idt_gmm_samples", "idt_seed")
NOT_KEYS = ENCODING_KEYS + ("idt_import",)     # encoding (keys the fisher/ folders) and location
TEXT_SUFFIXES = (".txt", ".txt.gz")


def load_dataset(ecfg: ExtractConfig) -> Dataset:
    return get_dataset(ecfg.dataset, ecfg.root, cache_root=ecfg.cache_root, **ecfg.dataset_options)


def extraction_params(icfg: IDTConfig) -> dict:
    """The IDTConfig fields that change an extracted item (cache-key material)."""
    return {f.name: getattr(icfg, f.name) for f in dataclasses.fields(icfg) if f.name not in NOT_KEYS}


def idt_dir(ecfg: ExtractConfig, icfg: IDTConfig, dataset: Dataset) -> Path:
    """The folder of extracted IDT: keyed by the stage, its version and the extraction settings,
    never by the set of videos or the splits."""
    key = stage_key(STAGE, IDT_STAGE_VERSION, {"source": "extract", **extraction_params(icfg)})
    return stage_dir(ecfg.cache_root, STAGE, dataset.identity, "idt", key)


def import_dir(ecfg: ExtractConfig, icfg: IDTConfig, dataset: Dataset) -> Path:
    """The folder of imported DenseTrackStab output: keyed by the text layout only (the files'
    identities are per item, so where they lie keys nothing)."""
    key = stage_key(STAGE, IDT_STAGE_VERSION, {"source": "import", "dims": icfg.dims()})
    return stage_dir(ecfg.cache_root, STAGE, dataset.identity, "import", key)


def text_candidates(folder: Path, item_id: str) -> list[Path]:
    return [folder / f"{item_id}{suffix}" for suffix in TEXT_SUFFIXES]


def text_sources(dataset: Dataset, folder: str | Path) -> dict[str, str]:
    """id -> identity of its text file (name, size, content digest; None when absent), like
    Item.source."""
    folder, out = Path(folder), {}
    for item in dataset.items():
        found = [p for p in text_candidates(folder, item.id) if p.is_file()]
        one = found[0] if len(found) == 1 else None
        out[item.id] = json.dumps({"id": item.id, "file": one and one.name,
                                   "size": one and one.stat().st_size,
                                   "blake2b": one and file_digest(one)},
                                  sort_keys=True, separators=(",", ":"))
    return out


def idt_folder(ecfg: ExtractConfig, icfg: IDTConfig, dataset: Dataset) -> tuple[Path, dict[str, str]]:
    """(the IDT folder `icfg` reads: imported when idt_import is set, else extracted; id -> the
    source its item files must carry)."""
    if icfg.idt_import:
        return import_dir(ecfg, icfg, dataset), text_sources(dataset, icfg.idt_import)
    return idt_dir(ecfg, icfg, dataset), dataset.sources()


def write_idt_item(out: Path, *, item_id: str, source: str, features: Mapping[str, np.ndarray],
                   **attrs) -> None:
    """One video's trajectories: datasets header/traj/hog/hof/mbhx/mbhy (n, d) float32."""
    with h5py.File(out, "w") as f:
        f.attrs.update(id=item_id, source=source, **attrs)
        for key in OUTPUT_KEYS:
            f.create_dataset(key, data=np.asarray(features[key], dtype=np.float32))
        f.attrs["complete"] = True


def required(icfg: IDTConfig):
    """An item file is complete when every output has the layout of `icfg`."""
    dims = icfg.dims()
    return lambda f: all(k in f and f[k].ndim == 2 and f[k].shape[1] == dims[k] for k in OUTPUT_KEYS)


@dataclasses.dataclass(frozen=True)
class IDTJob:
    """IDT extraction as a picklable job (pipeline.core.parallel): each worker indexes the dataset once."""

    ecfg: ExtractConfig
    icfg: IDTConfig
    folder: str
    listing: str = ""             # digest of the sources: a kept worker re-indexes when they change

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        items = worker_state(f"{self.folder}:{self.listing}",
                             lambda: {item.id: item for item in load_dataset(self.ecfg).items()})
        for item_id in ids:
            item = items[item_id]
            try:
                source = item.source()
                features = extract_idt_video(item.path, self.icfg, frames=item.frames)
            except Exception as exc:  # noqa: BLE001 - one bad video never stops a run
                yield item_id, exc
                continue
            attrs = {} if item.frames is None else {"frame_range": np.asarray(item.frames, np.int64)}
            yield item_id, functools.partial(write_idt_item, item_id=item_id, source=source,
                                             features=features, path=str(item.path), **attrs)


@dataclasses.dataclass(frozen=True)
class ImportJob:
    """DenseTrackStab text files as a picklable job: `<text>/<item id>.txt[.gz]` per item."""

    icfg: IDTConfig
    text: str
    sources: dict

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, object]]:
        for item_id in ids:
            candidates = text_candidates(Path(self.text), item_id)
            found = [p for p in candidates if p.is_file()]
            try:
                if len(found) != 1:
                    raise FileNotFoundError(
                        f"{' and '.join(map(str, found))} both exist; keep one" if found else
                        f"no DenseTrackStab output for {item_id}: expected {candidates[0]} or "
                        f"{candidates[1].name}")
                features = read_idt_text(found[0], self.icfg)
            except Exception as exc:  # noqa: BLE001 - one bad file never stops a run
                yield item_id, exc
                continue
            yield item_id, functools.partial(write_idt_item, item_id=item_id,
                                             source=self.sources[item_id], features=features,
                                             text=found[0].name)


def _run(ecfg: ExtractConfig, icfg: IDTConfig, dataset: Dataset, folder: Path,
         sources: dict[str, str], job, manifest: dict, what: str) -> StageResult:
    if up_to_date(folder, sources):
        log.info("IDT already complete: %s", folder)
        return StageResult(folder, len(sources), 0, {}, skipped_run=True)
    manifest = {"stage": STAGE, "version": IDT_STAGE_VERSION, "dataset": dataset.identity,
                "idt": icfg, "dims": icfg.dims(), **manifest}
    with stage_lock(folder, ecfg.shard_tuple()):
        return run_items(folder, list(sources), job, manifest=manifest, sources=sources,
                         shard=ecfg.shard_tuple(), backend=ecfg.backend, workers=ecfg.workers,
                         scheduler=ecfg.scheduler, required=required(icfg),
                         progress=lambda n: tqdm(total=n, desc=what, unit="video", disable=None))


def _portable(ecfg: ExtractConfig) -> ExtractConfig:
    """Absolute paths: workers may run with another cwd or on another machine."""
    return dataclasses.replace(ecfg, cache_root=str(Path(ecfg.cache_root).resolve()),
                               root=None if ecfg.root is None else str(Path(ecfg.root).resolve()))


def extract_idt(ecfg: ExtractConfig, icfg: IDTConfig) -> StageResult:
    """Extract IDT for every item of the dataset (each its segment when it has one), resuming
    what an earlier run left; a failed video is recorded and the rest go on; a no-op when
    complete."""
    dataset = load_dataset(ecfg)
    log.info("%s", dataset.describe())
    folder, sources = idt_dir(ecfg, icfg, dataset), dataset.sources()
    job = IDTJob(_portable(ecfg), icfg, str(folder.resolve()), digest(sources))
    return _run(ecfg, icfg, dataset, folder, sources, job, {"source": "extract"}, "idt")


def import_idt_text(ecfg: ExtractConfig, icfg: IDTConfig, text_folder: str | Path) -> StageResult:
    """Import DenseTrackStab's text output, `<text_folder>/<item id>.txt` or `.txt.gz` per item,
    into item files like extract_idt's (layout of `icfg`: idt_length, cells). A missing or
    malformed file fails its item with a reason naming the file (and line)."""
    text_folder = Path(text_folder).expanduser().resolve()
    if not text_folder.is_dir():
        raise FileNotFoundError(f"idt_import={text_folder}: no such folder")
    dataset = load_dataset(ecfg)
    log.info("%s; importing IDT text from %s", dataset.describe(), text_folder)
    folder, sources = import_dir(ecfg, icfg, dataset), text_sources(dataset, text_folder)
    job = ImportJob(icfg, str(text_folder), sources)
    return _run(ecfg, icfg, dataset, folder, sources, job,
                {"source": "import", "text_folder": str(text_folder)}, "idt import")
