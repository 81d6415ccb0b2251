"""Benchmark of the fast TO + MaxExp descriptor (tensor_pool.hot_descriptor) at d=128, N=64.
Run `python tests/bench/bench_epn.py [--videos B] [--repeats R]`: one line per comparison (name,
ratio, target, PASS/FAIL); exit status 1 if any fails. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.pooling import packing, tensor_pool  # noqa: E402

log = logging.getLogger("bench_epn")
D, N = 128, 64


def naive_to_maxexp(phi: np.ndarray) -> np.ndarray:
    """The obvious numpy route: explicit d^3 tensor, unfolding, eigh, mode products, pack."""
    n, d = phi.shape
    X = np.einsum("ni,nj,nk->ijk", phi, phi, phi, optimize=True) / n
    X1 = X.reshape(d, d * d)
    _, U = np.linalg.eigh(X1 @ X1.T)
    core = np.einsum("abc,ai,bj,ck->ijk", X, U, U, U, optimize=True)
    lam = core / np.abs(core).sum()
    lam_hat = np.sign(lam) * (1.0 - (1.0 - np.minimum(np.abs(lam), 1.0)) ** n)
    Xhat = np.einsum("ijk,ai,bj,ck->abc", lam_hat, U, U, U, optimize=True)
    return packing.pack(Xhat, 3)


def tensorly_to_maxexp(X: np.ndarray, n: int):
    """TensorLy's HOSVD (tucker, init='svd', no HOOI sweeps) + MaxExp on the core + rebuild."""
    import tensorly as tl
    from tensorly.decomposition import tucker

    core, factors = tucker(X, rank=list(X.shape), init="svd", n_iter_max=0)
    lam = core / np.abs(core).sum()
    lam_hat = np.sign(lam) * (1.0 - (1.0 - np.minimum(np.abs(lam), 1.0)) ** n)
    return packing.pack(tl.tucker_to_tensor((lam_hat, factors)), 3)


def median_time(fn, repeats: int, warmup_s: float = 0.2) -> float:
    """Median wall time of fn() over repeats, in a steady state, the same for every timing.

    First a pause: OpenBLAS's worker threads spin for ~0.1 s after each threaded call, and would
    share the cores with the next timing. Then fn runs untimed for warmup_s (at least once):
    after an idle spell the scheduler takes tens of ms to spread a process's threads over the
    cores again (on a 2-core VM, threaded code ran at one-core speed for its first ~50 ms).
    """
    time.sleep(0.3)
    warm_until = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < warm_until:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def report(name: str, ratio: float, target: str, ok: bool) -> bool:
    print(f"{name:<48s} ratio={ratio:8.2f}  target {target:<8s} {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos per batch")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (the median is used)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("OMP_NUM_THREADS=%s, d=%d, N=%d, %d videos, %d repeats",
             os.environ.get("OMP_NUM_THREADS", "unset"), D, N, args.videos, args.repeats)

    rng = np.random.default_rng(0)
    phis = [rng.standard_normal((N, D)) for _ in range(args.videos)]
    phis = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in phis]  # unit phi_n (HoT)
    ours = lambda ps: tensor_pool.hot_descriptors(ps, order=3, epn="maxexp")  # noqa: E731
    ok = True

    # 1. ours vs the naive numpy reference (same result to 1e-5)
    fast = ours(phis)
    slow = np.stack([naive_to_maxexp(p) for p in phis])
    err = float(np.abs(fast - slow).max() / np.abs(slow).max())
    t_ours = median_time(lambda: ours(phis), max(args.repeats, 7))
    t_naive = median_time(lambda: [naive_to_maxexp(p) for p in phis], args.repeats)
    log.info("ours %.1f ms/video, naive %.1f ms/video, max rel. difference %.1e",
             1e3 * t_ours / args.videos, 1e3 * t_naive / args.videos, err)
    ok &= report("TO+MaxExp: naive numpy / ours (same to 1e-5)", t_naive / t_ours, ">= 5",
                 t_naive / t_ours >= 5 and err <= 1e-5)

    # 2. ours (from phi) vs TensorLy HOSVD on the pre-pooled tensor (pooling not timed for it)
    try:
        import tensorly  # noqa: F401
    except ImportError:
        ok &= report("TO+MaxExp: TensorLy HOSVD / ours (tensorly absent)", float("nan"), ">= 10",
                     False)
    else:
        Xs = [tensor_pool.pool(p, 3) for p in phis]
        tl_out = np.stack([tensorly_to_maxexp(X, N) for X in Xs])
        tl_err = float(np.abs(tl_out - fast).max() / np.abs(fast).max())
        t_tl = median_time(lambda: [tensorly_to_maxexp(X, N) for X in Xs], args.repeats)
        log.info("tensorly %.1f ms/video, max rel. difference %.1e", 1e3 * t_tl / args.videos,
                 tl_err)
        ok &= report("TO+MaxExp: TensorLy HOSVD / ours", t_tl / t_ours, ">= 10",
                     t_tl / t_ours >= 10)

    # 3. ours in float32 vs one float32 matmul with the same flop count
    phis32 = [p.astype(np.float32) for p in phis]
    flops = tensor_pool.descriptor_flops(N, D, 3) * args.videos
    m = int(round((flops / 2) ** (1 / 3)))
    A = rng.standard_normal((m, m)).astype(np.float32)
    ours(phis32)
    t32 = median_time(lambda: ours(phis32), max(args.repeats, 7))
    t_mm = median_time(lambda: A @ A, max(args.repeats, 7))
    log.info("ours float32 %.1f ms (%.0f MFLOP, %.1f GFLOP/s); matmul %dx%d %.1f ms (%.1f GFLOP/s)",
             1e3 * t32, flops / 1e6, flops / t32 / 1e9, m, m, 1e3 * t_mm, 2 * m ** 3 / t_mm / 1e9)
    ok &= report("TO+MaxExp float32: ours / matmul (same flops)", t32 / t_mm, "<= 3",
                 t32 / t_mm <= 3)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
