"""Content-keyed stage folders, atomic per-item writes, manifests, locks and the resumable loop.

A stage's output lives in `<cache_root>/<stage>/<dataset>/<slug>-<key12>/`: `items/<id>.h5`
(one file per video, written to a temporary name and renamed into place) and `manifest.json`
(written last). The key is a sha256 over everything that changes the output (DVC's run cache).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import h5py
import numpy as np

if TYPE_CHECKING:
    from pipeline.parallel import Job

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class StageError(RuntimeError):
    """A stage cannot run (missing upstream output, a held lock, ...); says what to do."""


def canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj`."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_key(stage: str, version: int, params: dict, *, upstream: Iterable[str] = (),
              weights: dict | None = None) -> str:
    """sha256 hex of a canonical JSON of what determines an item's output: never the set of
    items, nor what only selects or labels them (splits); each item file carries its source."""
    return digest({"stage": stage, "version": version, "params": params,
                   "upstream": sorted(upstream), "weights": weights})


def stage_dir(cache_root: str | os.PathLike, stage: str, dataset: str, slug: str, key: str) -> Path:
    return Path(cache_root) / stage / dataset / f"{slug}-{key[:12]}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(canonical(obj), indent=1) + "\n")


def read_manifest(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    names = ["torch", "torchvision", "pytorchvideo", "numpy", "h5py", "scikit-learn",
             "opencv-contrib-python-headless"]
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


@contextlib.contextmanager
def stage_lock(folder: Path, shard: tuple[int, int] = (1, 1)) -> Iterator[None]:
    """Hold an exclusive lock on a stage folder (on one shard of it) for the duration of a run."""
    folder.mkdir(parents=True, exist_ok=True)
    name = ".lock" if shard == (1, 1) else f".lock-shard-{shard[0]}-of-{shard[1]}"
    with open(folder / name, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageError(f"{folder} is being written by another run; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def item_path(folder: Path, item_id: str) -> Path:
    return folder / "items" / f"{item_id}.h5"


def h5_valid(path: Path, required: Callable[[h5py.File], bool] = lambda f: True,
             source: str | None = None) -> bool:
    """An item counts as done only if its file exists, opens, passes `required` and, when
    `source` is given, was computed from that source (attribute "source", see Item.source)."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return (bool(f.attrs.get("complete", False)) and required(f)
                    and (source is None or f.attrs.get("source") == source))
    except (OSError, KeyError, ValueError):
        return False


@dataclasses.dataclass
class StageResult:
    """What a run did: its folder, counts and failures (id -> reason)."""

    folder: Path
    done: int
    computed: int
    failures: dict[str, str]
    skipped_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """The deterministic slice k of n (1-based) of `ids`: every n-th id from the k-th on."""
    k, n = shard
    return list(ids)[k - 1::n]


def run_items(folder: Path, ids: list[str], job: "Job", *, manifest: dict, sources: dict[str, str],
              required: Callable[[h5py.File], bool] = lambda f: True,
              progress: Callable[[int], Iterable] = lambda total: None,
              shard: tuple[int, int] = (1, 1), backend: str = "serial", workers: int = 0,
              scheduler: str = "local") -> StageResult:
    """The resumable loop shared by all stages.

    `ids` are the items as the dataset lists them now, `sources` their source identities (id ->
    Item.source()); an item file computed from another source (an edited video) is redone.
    The ids of this shard without a valid item file go to `job` (see pipeline.parallel) on
    `backend`; each item is written to a temporary file and renamed into place, and a failure
    fails that item only (recorded with its reason). A shard (k, n) records its failures in
    `manifest-shard-k-of-n.json`; the stage manifest is written last, by the run that finds every
    item either done or failed. progress(total) returns a bar with update(n), or None.
    """
    from pipeline.parallel import run_job
    valid = lambda i: h5_valid(item_path(folder, i), required, sources[i])  # noqa: E731
    mine = shard_ids(ids, shard)
    pending = [i for i in mine if not valid(i)]
    for item_id in pending:                  # temporary files of a killed run of this shard
        path = item_path(folder, item_id)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink()
    log.info("%s: %d of %d items to compute%s", folder, len(pending), len(ids),
             f" (shard {shard[0]}/{shard[1]})" if shard != (1, 1) else "")
    bar, finished = progress(len(pending)), [0]
    every = max(1, len(pending) // 10)

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(n)
        finished[0] += n
        if finished[0] // every > (finished[0] - n) // every:     # for logs without a terminal
            log.info("%s: %d/%d", folder.name, finished[0], len(pending))

    try:
        failures = run_job(job, folder, pending, backend=backend, workers=workers,
                           scheduler=scheduler, progress=advance)
    finally:
        if bar is not None:
            bar.close()
    stamp = {"versions": library_versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if shard != (1, 1):
        write_json(folder / f"manifest-shard-{shard[0]}-of-{shard[1]}.json",
                   {**manifest, "shard": shard, "items": len(mine), "failures": failures, **stamp})
        for other in folder.glob("manifest-shard-*.json"):
            failures = {**json.loads(other.read_text())["failures"], **failures}
    missing = [i for i in ids if i not in failures and not valid(i)]
    failures = {i: r for i, r in failures.items() if i in sources and not valid(i)}
    done = len(ids) - len(failures) - len(missing)
    if not missing:
        write_json(folder / MANIFEST, {**manifest, "items": len(ids), "done": done,
                                       "failures": failures, "sources": digest(sources), **stamp})
    else:
        log.info("%d items belong to shards that have not finished; the manifest is written by "
                 "the last shard", len(missing))
    return StageResult(folder, done, len(pending) - len([i for i in pending if i in failures]),
                       {i: r for i, r in failures.items() if i in mine})


def up_to_date(folder: Path, sources: dict[str, str]) -> bool:
    """True when the stage's manifest covers exactly these items from these sources and none
    failed: a rerun has nothing to do."""
    manifest = read_manifest(folder)
    return (manifest is not None and not manifest.get("failures")
            and manifest.get("sources") == digest(sources))


def done_ids(folder: Path, sources: dict[str, str],
             required: Callable[[h5py.File], bool] = lambda f: True) -> list[str]:
    """The ids (in the order of `sources`) whose item file in `folder` is valid for its source."""
    return [i for i, src in sources.items() if h5_valid(item_path(folder, i), required, src)]
