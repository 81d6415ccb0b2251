"""Benchmark of the evaluation's memory (issue "Memory"): 1000 synthetic TO descriptors at d = 256
(2,829,056 float32 each, ~11 GB on disk), Gram accumulation and one split with the SVM head in a
child process, whose peak RSS must stay below 2 GB (holding the rows in float64 would take 23 GB).
Run `python tests/bench/bench_memory.py [--videos N] [--d D] [--dir FOLDER]` (~12 GB free disk in
FOLDER, default the temporary folder; removed at the end; ~3 min on 2 cores): one line per check
(name, value, target, PASS/FAIL); exit status 1 if any fails. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.pooling.packing import n_unique  # noqa: E402

log = logging.getLogger("bench_memory")
VIEW, ORDER, GB = "descriptors.h5", 3, 1e9
# A lean middle process runs the measured child and prints the child's peak RSS: a process's
# ru_maxrss starts from that of the process it was forked from (Linux keeps it across exec), so
# the child must not be forked from this one, which holds torch and the generator's arrays.
WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)")


def write_view(folder: Path, *, n: int, d: int, classes: int, seed: int = 0) -> Path:
    """A consolidated view shaped as pipeline.pooling.descriptors.write_view makes it (ids (n,),
    descriptors (n, n_unique) float32, attrs order/d/sources), written a few rows at a time.

    Rows are cheap and structured, not a TO computation: a class prototype plus one of 8 noise
    vectors rolled by a random shift (distinct per video), 3x the prototype's scale."""
    m = n_unique(d, ORDER)
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((classes, m), dtype=np.float32)
    noise = 3.0 * rng.standard_normal((8, m), dtype=np.float32)
    labels = np.arange(n) % classes
    ids = [f"c{c:02d}/v{i:05d}" for i, c in enumerate(labels)]
    path = folder / VIEW
    block = max(1, int(256 * 2 ** 20) // (4 * m))
    with h5py.File(path, "w") as out:
        data = out.create_dataset("descriptors", (n, m), dtype=np.float32)
        for r0 in range(0, n, block):
            rows = np.stack([protos[labels[i]] + np.roll(noise[i % 8], int(rng.integers(m)))
                             for i in range(r0, min(n, r0 + block))])
            data[r0:r0 + len(rows)] = rows
        out.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        out.attrs.update(order=ORDER, d=d, sources="bench", packing="synthetic")
    return path


def child(folder: str, chunk_mb: float) -> None:
    """The measured process: evaluate.load_gram on the view, then one split (70% of each class
    to train) scored by the SVM head through evaluate.score_split; prints a JSON summary."""
    from pipeline.learn.settings import EvaluateConfig
    from pipeline.datasets import TEST, TRAIN
    from pipeline.learn.scoring import Gram, load_gram, score_split

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    rss_imports = peak()
    t0 = time.perf_counter()
    ids, K, _ = load_gram(Path(folder), chunk_mb=chunk_mb)
    t_gram, rss_gram = time.perf_counter() - t0, peak()
    codes = np.array([int(i[1:3]) for i in ids])
    y = np.eye(codes.max() + 1, dtype=np.int64)[codes]
    rank = np.array([np.sum(codes[:k] == c) for k, c in enumerate(codes)])
    per_class = np.bincount(codes)[codes]
    split = {i: TRAIN if r < 0.7 * p else TEST for i, r, p in zip(ids, rank, per_class)}
    t0 = time.perf_counter()
    result = score_split(Gram(K), y, split, ids, metric="accuracy", cfg=EvaluateConfig(head="svm",
                                                                                      C=1.0))
    t_split = time.perf_counter() - t0
    np.save(Path(folder) / "K.npy", K)
    print(json.dumps({"gram_s": t_gram, "split_s": t_split, "accuracy": result["score"],
                      "n_train": result["n_train"], "n_test": result["n_test"],
                      "rss_imports": rss_imports, "rss_gram": rss_gram, "rss_split": peak()}))


def report(name: str, value: float, target: str, ok: bool) -> bool:
    print(f"{name:<56s} value={value:10.4g}  target {target:<9s} {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000, help="number of videos")
    parser.add_argument("--d", type=int, default=256, help="TO sketch dimension d")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--chunk-mb", type=float, default=64.0, help="MiB read at once")
    parser.add_argument("--target-gb", type=float, default=2.0, help="peak RSS target (GB)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folder (disk)")
    parser.add_argument("--_child", dest="child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.chunk_mb)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    n, m = args.videos, n_unique(args.d, ORDER)
    log.info("OMP_NUM_THREADS=%s; %d videos, TO d=%d: %d values each, view %.1f GB on disk; the "
             "rows in float64 would be %.1f GB", os.environ.get("OMP_NUM_THREADS", "unset"), n,
             args.d, m, n * m * 4 / GB, n * m * 8 / GB)
    folder = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=args.dir))
    free = shutil.disk_usage(folder).free
    if free < n * m * 4 * 1.05:
        shutil.rmtree(folder)
        report(f"free disk for the view in {folder.parent} (GB)", free / GB,
               f">= {n * m * 4 * 1.05 / GB:.1f}", False)
        return 1
    try:
        t0 = time.perf_counter()
        path = write_view(folder, n=n, d=args.d, classes=args.classes)
        log.info("wrote %s in %.0f s", path, time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, __file__, "--_child",
                              str(folder), "--chunk-mb", str(args.chunk_mb)],
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        lines = res.stdout.strip().splitlines()
        out, peak = json.loads(lines[-2]), int(lines[-1])
        log.info("evaluation child: %.0f s (Gram %.0f s, split %.1f s), %d train / %d test, "
                 "accuracy %.3f; its peak RSS after imports %.3f GB, after the Gram %.3f GB, "
                 "after the split %.3f GB", wall, out["gram_s"], out["split_s"], out["n_train"],
                 out["n_test"], out["accuracy"], out["rss_imports"] / GB, out["rss_gram"] / GB,
                 out["rss_split"] / GB)
        # exactness: Gram entries among a few videos against prepare() of their full rows
        from pipeline.learn.scoring import prepare
        K = np.load(folder / "K.npy")
        pick = [0, 1, args.classes, n - 1]
        with h5py.File(path, "r") as f:
            x = prepare(f["descriptors"][pick], d=args.d, order=ORDER)
        err = float(np.abs(K[np.ix_(pick, pick)] - x @ x.T).max())
        ok = report("Gram entries vs prepare() rows: max abs difference", err, "<= 1e-10",
                    err <= 1e-10)
        ok &= report(f"evaluation peak RSS (GB), {n} videos TO d={args.d}", peak / GB,
                     f"< {args.target_gb:g}", peak < args.target_gb * GB)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
