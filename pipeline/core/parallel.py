"""Where a stage's items run: in this process, in local worker processes (joblib/loky), or on a
Dask distributed cluster. Every stage hands its work over the same way, as a picklable *job*.

A job is called with a list of item ids and yields `(id, write)` per item as each is ready, where
`write(path)` writes the item's HDF5 file, or `(id, exception)` when that item failed. It must be
picklable and light: heavy state (models, datasets) is built in each worker process, once, through
`worker_state`. `run_chunk` (which runs where the job runs) writes every item atomically into the
stage folder and returns the failures, so workers write item files and the driver only writes
the manifest. Workers on other machines need the package installed and the cache on a shared
filesystem at the same path.
"""
from __future__ import annotations

import errno
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from pipeline.core.cache import StageError

log = logging.getLogger(__name__)
BACKENDS = ("serial", "processes", "dask")
PROCESS_RETRIES = 1     # a broken process pool (a worker killed: OOM, segfault) is rebuilt once for
                        # the unfinished items, one per task, before they count as failed
Write = Callable[[Path], None]
# errors that say the cache cannot be written at all: every later item would fail the same way
CACHE_UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class Job(Protocol):
    """Called with item ids; yields (id, write) or (id, exception) per item. A job may carry its
    stage config as `cfg`: `cfg.strict_frames` fails items whose video decoded fewer frames than
    its container claims (else they are done with a warning)."""

    def __call__(self, ids: list[str]) -> Iterator[tuple[str, Write | BaseException]]: ...


def strict_frames(job: Job) -> bool:
    """Whether `job`'s config asks frame shortfalls to fail (ExtractConfig.strict_frames)."""
    return bool(getattr(getattr(job, "cfg", None), "strict_frames", False))


def cache_unwritable(exc: BaseException) -> str | None:
    """Why the cache cannot be written ("No space left on device", "Read-only file system", ...)
    when `exc` says so (h5py may give the errno in its message only), else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in CACHE_UNWRITABLE:
        return os.strerror(exc.errno)
    return next((os.strerror(e) for e in CACHE_UNWRITABLE if os.strerror(e) in str(exc)), None)


def frame_note(path: Path, strict: bool) -> dict[str, Any]:
    """Attributes for a freshly written item file whose video (its attribute "path") decoded
    fewer frames than its container claims (pipeline.extract.video.take_shortfall): claimed_frames,
    decoded_frames and warning. With `strict`, a VideoError instead."""
    from pipeline.extract import video
    if not video.shortfalls_pending():
        return {}
    import h5py
    with h5py.File(path, "r") as f:
        source = f.attrs.get("path")
    shortfall = None if source is None else video.take_shortfall(str(source))
    if shortfall is None:
        return {}
    claimed, decoded = shortfall
    warning = (f"decoded {decoded} of the {claimed} frames its container claims (truncated file "
               f"or wrong header)")
    if strict:
        raise video.VideoError(f"{source}: {warning}; strict_frames=True makes this a failure")
    return {"claimed_frames": claimed, "decoded_frames": decoded, "warning": warning}


_STATE: dict[str, Any] = {}


def worker_state(key: str, build: Callable[[], Any]) -> Any:
    """`build()` once per process and `key` (e.g. a stage folder), then the cached value."""
    if key not in _STATE:
        _STATE.clear()                   # one stage's state at a time: free the last models
        _STATE[key] = build()
    return _STATE[key]


def run_chunk(job: Job, folder: Path, ids: list[str], threads: int = 0,
              on_item: Callable[[str, str | None], None] | None = None) -> dict[str, str | None]:
    """Run `job` on `ids`, writing each item to `items/<id>.h5` under `folder` atomically.

    Returns id -> failure reason (None for success). Never raises for a bad item: an exception
    while writing fails that item only; one escaping the job fails the items it had not yielded.
    Each file is sealed (pipeline.core.cache.seal: NaN or Inf data fail the item) and records a frame
    shortfall of its video as a warning (`frame_note`). A cache that cannot be written (disk
    full, read-only) raises StageError naming the file: nothing partial is left, earlier items
    are kept. threads > 0 sets torch's intra-op threads (a worker's share of the machine's cores).
    """
    from pipeline.core.cache import atomic_path, item_path, seal
    strict = strict_frames(job)
    if threads > 0:
        import torch
        torch.set_num_threads(threads)
    results: dict[str, str | None] = {}

    def record(item_id: str, failure: str | None) -> None:
        results[item_id] = failure
        if failure is not None:
            log.error("item %s failed: %s", item_id, failure)
        if on_item is not None:
            on_item(item_id, failure)

    try:
        for item_id, write in job(ids):
            failure = None
            if isinstance(write, BaseException):
                failure = reason(write)
            else:
                path = item_path(folder, item_id)
                try:
                    with atomic_path(path) as tmp:
                        write(tmp)
                        note = frame_note(tmp, strict)
                        seal(tmp, **note)
                    if note:
                        log.warning("item %s: %s", item_id, note["warning"])
                except Exception as exc:  # noqa: BLE001 - one bad item never stops a run
                    why = cache_unwritable(exc)
                    if why is not None:
                        raise StageError(f"cannot write {path}: {why}. The cache is full or "
                                         f"read-only; the items written so far are kept and "
                                         f"nothing partial is left: free space (or fix its "
                                         f"permissions) and rerun") from exc
                    failure = reason(exc)
            record(item_id, failure)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a model that cannot be built on this worker
        for item_id in ids:
            if item_id not in results:
                record(item_id, reason(exc))
    for item_id in ids:
        if item_id not in results:
            record(item_id, "the job ended without producing this item")
    return results


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def chunks(ids: list[str], workers: int, per_worker: int = 4) -> list[list[str]]:
    """Split ids into about `per_worker` contiguous chunks per worker (load balance vs. the
    per-chunk cost of sending the job and batching windows within a chunk)."""
    if not ids:
        return []
    size = max(1, math.ceil(len(ids) / (workers * per_worker)))
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_job(job: Job, folder: Path, ids: list[str], *, backend: str = "serial", workers: int = 0,
            scheduler: str = "local", progress: Callable[[int], Any] = lambda n: None
            ) -> dict[str, str]:
    """Run `job` over `ids` on `backend`; returns the failures (id -> reason).

    serial: this process, all ids as one stream (windows of consecutive videos batch together).
    processes: `workers` local processes through joblib's loky backend (0 = one per core).
    dask: a dask.distributed cluster; scheduler="local" starts a LocalCluster of `workers`
    processes, else it is the address of a running scheduler ("tcp://host:8786").
    progress(n) is called as n more items finish.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {list(BACKENDS)}")
    folder = Path(folder).resolve()          # the same place for workers with another cwd
    failures: dict[str, str] = {}

    def collect(results: dict[str, str | None]) -> None:
        failures.update({i: r for i, r in results.items() if r is not None})
        progress(len(results))

    if backend == "serial" or not ids:
        run_chunk(job, folder, ids, on_item=lambda i, r: collect({i: r}))
        return failures
    workers = workers or default_workers()
    threads = max(1, default_workers() // workers)
    parts = chunks(ids, workers)
    if backend == "processes":
        log.info("running %d items in %d chunks on %d local processes (%d threads each)",
                 len(ids), len(parts), workers, threads)
        reported: set[str] = set()
        for attempt in range(1 + PROCESS_RETRIES):
            left = [i for i in ids if i not in reported]
            if not left:
                break
            parts = parts if attempt == 0 else [[i] for i in left]   # a retry: one item per task
            try:
                _process_map(job, folder, parts, workers, threads, reported, collect)
            except StageError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a worker killed (OOM, SIGKILL, segfault)
                left = [i for i in ids if i not in reported]
                if attempt < PROCESS_RETRIES:
                    log.warning("a worker process died (%s): %d unfinished items go to fresh "
                                "processes, one item per task", reason(exc), len(left))
                    continue
                log.error("the worker processes stopped again: %s", reason(exc))
                collect({i: f"a worker process died before finishing it ({reason(exc)})"
                         for i in left})
        return failures
    threads = threads if scheduler == "local" else 0    # a remote worker knows its own cores
    for part, results in _dask_map(job, folder, parts, workers, threads, scheduler):
        collect(results if results is not None
                else {i: "the Dask worker running it was lost (see the scheduler's log)" for i in part})
    return failures


def _process_map(job: Job, folder: Path, parts: list[list[str]], workers: int, threads: int,
                 reported: set[str], collect: Callable[[dict], None]) -> None:
    """Run the chunks on a fresh pool of local processes (joblib's loky), collecting each
    chunk's results as it finishes and adding its ids to `reported`; raises when the pool breaks."""
    import joblib
    run = joblib.Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")
    for results in run(joblib.delayed(run_chunk)(job, folder, part, threads) for part in parts):
        reported.update(results)
        collect(results)


def _dask_map(job: Job, folder: Path, parts: list[list[str]], workers: int, threads: int,
              scheduler: str) -> Iterable[tuple[list[str], dict | None]]:
    """(chunk, its results or None if its worker died) as chunks finish on a Dask cluster."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError("backend=dask needs dask.distributed: pip install 'dask[distributed]'") from None
    logging.getLogger("distributed").setLevel(logging.WARNING)   # its import sets INFO chatter
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    try:
        with Client(cluster or scheduler) as client:
            log.info("running %d chunks on Dask scheduler %s (%d workers)", len(parts),
                     client.scheduler.address, len(client.scheduler_info()["workers"]))
            futures = {client.submit(run_chunk, job, folder, part, threads, pure=False): part
                       for part in parts}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except StageError:               # the cache cannot be written: stop the run
                    raise
                except Exception as exc:  # noqa: BLE001 - a lost worker fails its chunk only
                    log.error("a Dask task failed: %s", reason(exc))
                    result = None
                yield futures[future], result
    finally:
        if cluster is not None:
            cluster.close()
