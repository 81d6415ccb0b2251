"""The resumable loop every stage shares: the items without a valid file run as a job on a
backend (pipeline.core.parallel), each written atomically; failures and warnings are recorded and the
manifest is written last (pipeline.core.cache holds the keys, files and checks it uses).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

import h5py

from pipeline.core.cache import (MANIFEST, StageResult, damaged_files, digest, file_checksums,
                                 inspect_item, item_checksum, item_path, read_manifest,
                                 recorded_checksums, recorded_files,
                            library_versions, shard_ids, sweep_temporary, write_json)
from pipeline.core.parallel import Job, run_job, strict_frames

log = logging.getLogger(__name__)


def run_items(folder: Path, ids: list[str], job: Job, *, manifest: dict, sources: dict[str, str],
              required: Callable[[h5py.File], bool] = lambda f: True,
              progress: Callable[[int], Iterable] = lambda total: None,
              shard: tuple[int, int] = (1, 1), backend: str = "serial", workers: int = 0,
              scheduler: str = "local", finish: Callable[[], None] = lambda: None) -> StageResult:
    """The resumable loop shared by all stages.

    `ids` are the items as the dataset lists them now, `sources` their source identities (id ->
    Item.source()); an item file computed from another source (an edited video) is redone.
    The ids of this shard without a valid item file go to `job` (see pipeline.core.parallel) on
    `backend`; each item is written to a temporary file and renamed into place, and a failure
    fails that item only (recorded with its reason). A shard (k, n) records its failures in
    `manifest-shard-k-of-n.json`; the stage manifest is written last, by the run that finds every
    item either done or failed. Items done with a warning (their attribute "warning", e.g. a video
    that decoded fewer frames than its container claims) are listed under "warnings". The
    temporary files of killed runs are swept (never a live writer's). progress(total) returns a
    bar with update(n), or None. finish() runs once every item is done or failed, just before
    the manifest (e.g. to build a consolidated view): the manifest stays the last file written.
    """
    start, strict = time.time(), strict_frames(job)

    recorded = recorded_checksums(folder)   # a file whose bytes match needs no data read

    def status(i: str) -> tuple[bool, str | None]:
        """(valid, warning) of item i; with strict_frames a warned item is not valid."""
        ok, warning = inspect_item(item_path(folder, i), required, sources[i],
                                   item_checksum(recorded, folder, i))
        return ok and not (strict and warning), warning

    mine = shard_ids(ids, shard)
    damaged = {Path(name).relative_to("items").as_posix()[:-len(".h5")]
               for name in damaged_files(folder, read_manifest(folder))
               if name.startswith("items/")}   # bit rot under a restored mtime: recomputed
    pending = [i for i in mine if i in damaged or not status(i)[0]]
    sweep_temporary(folder)                  # what killed runs left (never a live writer's)
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
    except BaseException:                    # interrupted, or the cache cannot be written:
        sweep_temporary(folder)              # what stopped workers left behind
        raise
    finally:
        if bar is not None:
            bar.close()
    stamp = {"versions": library_versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if shard != (1, 1):
        write_json(folder / f"manifest-shard-{shard[0]}-of-{shard[1]}.json",
                   {**manifest, "shard": shard, "items": len(mine), "failures": failures, **stamp})
        for other in folder.glob("manifest-shard-*.json"):
            failures = {**json.loads(other.read_text())["failures"], **failures}
    state = {i: status(i) for i in ids}
    missing = [i for i in ids if i not in failures and not state[i][0]]
    failures = {i: r for i, r in failures.items() if i in state and not state[i][0]}
    warnings = {i: w for i, (ok, w) in state.items() if ok and w}
    done = len(ids) - len(failures) - len(missing)
    if not missing:
        finish()
        write_json(folder / MANIFEST, {**manifest, "items": len(ids), "done": done,
                                       "failures": failures, "warnings": warnings,
                                       "sources": digest(sources),
                                       "checksums": file_checksums(folder, recorded_files(folder, ids)),
                                       **stamp})
        sweep_temporary(folder, before=start)
    else:
        log.info("%d items belong to shards that have not finished; the manifest is written by "
                 "the last shard", len(missing))
    if warnings:
        log.warning("%d items are done with a warning (listed in %s)", len(warnings), folder / MANIFEST)
    return StageResult(folder, done, len(pending) - len([i for i in pending if i in failures]),
                       {i: r for i, r in failures.items() if i in mine},
                       warnings={i: w for i, w in warnings.items() if i in mine})
