"""The cost of the content checksums (docs/reliability.md): a stage that decides it is done hashes
every byte of its files once (xxh3 over the bytes, `manifest.json` "checksums"), and a stage that
reads an item checks its data against its seal (h5py read + xxh3). Both are printed next to the
real work they guard: stage 2 (count sketch + second-order pooling + EPN, the default settings) on
the same stage-1 items, and the bytes of a larger file (a view).

Run `python tests/bench/bench_integrity.py [features folder]`; the default is the stage-1 folder
of the real clips under /tmp/cache-integrity/features (copy them there first, see the README), else
a synthetic folder of 150 items shaped like them. Prints ratios with their targets; exit 1 if one
misses.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core.cache import (MANIFEST, done_ids, file_checksums, inspect_item,  # noqa: E402
                                 item_path, read_manifest, recorded_files, seal, write_json)
from pipeline.pooling.descriptors import pooled, read_parts, sketched  # noqa: E402
from pipeline.pooling.settings import DescriptorConfig  # noqa: E402
from pipeline.pooling.sketch import make_sketches  # noqa: E402

TARGET_DONE = 0.05        # the done check (every byte hashed) under 5% of stage 2's work
TARGET_READ = 0.10        # checking an item's seal on read under 10% of stage 2's work on it
DEFAULT = Path("/tmp/cache-integrity/features")


def find_folder(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    found = sorted(p.parent for p in DEFAULT.glob("*/*/manifest.json")) if DEFAULT.is_dir() else []
    return found[0] if found else None


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    folder = find_folder(sys.argv[1] if len(sys.argv) > 1 else None)
    if folder is None:
        print(f"bench_integrity: SKIPPED: no stage-1 folder under {DEFAULT} (copy the real "
              f"features there: mkdir -p /tmp/cache-integrity && cp -r /tmp/base/cache/features "
              f"/tmp/cache-integrity/)")
        return 0
    work_dir = tempfile.TemporaryDirectory()
    if not (read_manifest(folder) or {}).get("checksums"):   # written before checksums: a copy
        copy = Path(work_dir.name) / folder.name             # with the manifest the stage
        shutil.copytree(folder, copy)                        # writes now
        ids = sorted(str(p.relative_to(copy / "items"))[:-3] for p in (copy / "items").rglob("*.h5"))
        write_json(copy / MANIFEST, {**read_manifest(folder), "checksums": file_checksums(
            copy, recorded_files(copy, ids))})
        folder = copy
    manifest = read_manifest(folder)
    ids = sorted(str(p.relative_to(folder / "items"))[:-3] for p in (folder / "items").rglob("*.h5"))
    names = recorded_files(folder, ids)
    size = sum((folder / n).stat().st_size for n in names)
    done = timed(lambda: file_checksums(folder, names))
    read = timed(lambda: done_ids(folder, {i: None for i in ids}))      # as stage 2 reads them
    scan = timed(lambda: [inspect_item(item_path(folder, i), lambda f: True, None) for i in ids])
    cfg = DescriptorConfig()
    parts, groups = manifest["parts"], manifest["groups"]
    first, _ = read_parts(item_path(folder, ids[0]), parts, groups)
    sketches = make_sketches([p.shape[1] for p in first], cfg.sketch_dim, cfg.sketch_seed)

    def stage2():
        for i in ids:
            phis, _ = read_parts(item_path(folder, i), parts, groups)
            phi = sketched(phis, sketches)
            pooled([phi], [np.ones(len(phi))], cfg)
    work = timed(stage2, repeat=1)
    print(f"{len(ids)} stage-1 items, {size / 2 ** 20:.1f} MiB, in {folder}")
    print(f"stage 2 on them (SO + {cfg.epn}, d'={cfg.sketch_dim}): {work:.2f} s")
    ok = True
    for what, seconds, target in (
            ("done check: every byte hashed (xxh3)", done, TARGET_DONE),
            ("read check: every item (bytes vs the manifest's checksums)", read, TARGET_READ),
            ("read check without a manifest: every item's data vs its seal", scan, 1.0)):
        ratio = seconds / work
        ok &= ratio <= target
        print(f"{what}: {seconds:.3f} s = {ratio:.4f} of stage 2 (target <= {target}) "
              f"{'OK' if ratio <= target else 'MISSED'}")
    with tempfile.TemporaryDirectory() as tmp:           # a view-sized file: throughput
        view = Path(tmp) / "descriptors.h5"
        rows = np.random.default_rng(0).standard_normal((150, 2 ** 19), dtype=np.float32)
        with h5py.File(view, "w") as f:
            f["descriptors"] = rows
        seal(view)
        mib = view.stat().st_size / 2 ** 20
        whole = timed(lambda: file_checksums(Path(tmp), ["descriptors.h5"]))
        with h5py.File(view, "r") as f:
            from pipeline.core.cache import data_problem
            data = timed(lambda: data_problem(f))
        print(f"a {mib:.0f} MiB view: bytes hashed at {mib / whole:.0f} MiB/s, data checked "
              f"against its seal at {mib / data:.0f} MiB/s")
    work_dir.cleanup()
    print("bench_integrity: OK" if ok else "bench_integrity: MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
