"""The pooling engine (numpy): X = (1/N) sum_n w_n^r (phi_n - mu)^(x)r (docs/method.md "Stage 2"),
r = 2 (SO) or 3 (TO), and fast packed EPN descriptors of whole batches of videos that never form
the d^3 tensor. Its torch face, differentiable in the weights, is pooling/differentiable.py."""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pipeline.pooling.epn import SpectralFunction, apply_spectral, resolve_epn, snap_tol
from pipeline.pooling.packing import (check_order, pair_offsets, n_unique, pack_indices,
                                      pack_weights)
from pipeline.pooling.threads import Scratch, blas_threads, run_all, scratch_buffers

log = logging.getLogger(__name__)

__all__ = ["descriptor_flops", "pool", "hot_descriptor", "hot_descriptors"]


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------
def _prepare(phi, order: int, weights=None, center: bool = False):
    """psi (..., N, d) = phi - mu, and a (..., N) = w_n^r / N. numpy or torch."""
    N = phi.shape[-2]
    if N < 1:
        raise ValueError("phi has N=0 windows; pooling needs N >= 1")
    is_torch = isinstance(phi, torch.Tensor)
    if center:
        mu = phi.mean(dim=-2, keepdim=True) if is_torch else phi.mean(axis=-2, keepdims=True)
        psi = phi - mu
    else:
        psi = phi
    if weights is None:
        if is_torch:
            return psi, torch.full(phi.shape[:-1], 1.0 / N, dtype=phi.dtype, device=phi.device)
        return psi, np.full(phi.shape[:-1], 1.0 / N, dtype=phi.dtype)
    if tuple(weights.shape) != tuple(phi.shape[:-1]):
        raise ValueError(f"weights has shape {tuple(weights.shape)}; expected "
                         f"{tuple(phi.shape[:-1])} (one per window)")
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0 (attention weights, HoT)")
    if isinstance(phi, torch.Tensor):
        return psi, weights.to(phi.dtype) ** order / N
    return psi, (np.asarray(weights) ** order / N).astype(phi.dtype, copy=False)


def pool(phi, order: int, weights=None, center: bool = False):
    """X = (1/N) sum_n w_n^r (phi_n - mu)^(x)r (HoT supplement): SO (d, d) or TO (d, d, d).

    phi: (N, d) (or (..., N, d)), numpy or torch (differentiable). weights: (N,) >= 0, default
    ones. center: mu = the unweighted mean of phi over windows (ours), else mu = 0.
    """
    check_order(order)
    if phi.ndim < 2:
        raise ValueError(f"phi has shape {tuple(phi.shape)}; expected (N, d)")
    psi, a = _prepare(phi, order, weights, center)
    aw = a[..., :, None] * psi
    if order == 2:
        return aw.mT @ psi
    N, d = psi.shape[-2:]
    kr = (psi[..., :, :, None] * psi[..., :, None, :]).reshape(*psi.shape[:-2], N, d * d)
    return (aw.mT @ kr).reshape(*psi.shape[:-2], d, d, d)


# --------------------------------------------------------------------------------------------
# fast HoT descriptors (numpy)
# --------------------------------------------------------------------------------------------
_BLOCK = 8  # rows per block in the reconstruction (fastest at d=128, k=64)
_STACK_BYTES = 32 << 20  # (ours) videos are stacked into one computation up to ~32 MiB of work


@functools.lru_cache(maxsize=16)
def _triple_offsets(d: int) -> np.ndarray:
    """off3[x] = position of the first TO entry (x, x, x) in pack order; d + 1 entries."""
    off2 = pair_offsets(d)
    return np.concatenate([[0], np.cumsum(off2[-1] - off2[:-1])])


@functools.lru_cache(maxsize=16)
def _pair_major_index(k: int) -> np.ndarray:
    """Flat positions of the TO pack-order entries (i, j, l) in a (k(k+1)/2, k) array indexed
    [SO pack position of (j, l), i]: (off2[j] + l - j) k + i."""
    i, j, l = pack_indices(k, 3)
    flat = (pair_offsets(k)[j] + l - j) * k + i
    flat.flags.writeable = False
    return flat


@functools.lru_cache(maxsize=16)
def _full_to_packed(k: int) -> np.ndarray:
    """(k, k, k) int64: the pack-order position of every entry of a super-symmetric tensor."""
    s = np.sort(np.stack(np.meshgrid(*(np.arange(k),) * 3, indexing="ij")), axis=0)
    i, j, l = s
    off2 = pair_offsets(k)
    pos = _triple_offsets(k)[i] + off2[j] - off2[i] + (l - j)
    pos.flags.writeable = False
    return pos


def _row_blocks(d: int, block: int) -> list[tuple[int, int]]:
    return [(y0, min(d, y0 + block)) for y0 in range(0, d, block)]


@functools.lru_cache(maxsize=16)
def _tile_index(d: int, block: int) -> tuple[np.ndarray, int]:
    """(flat, size): where each TO pack-order entry (x, y, z) lies in _reconstruct_pack_to's tiles.

    The tile of row block [y0, y1) is S[x, y, z] for x < y1, y0 <= y < y1, z >= y0, C order,
    tiles one after another; size is their total length.
    """
    x, y, z = pack_indices(d, 3)
    starts, size = [], 0
    for y0, y1 in _row_blocks(d, block):
        starts.append(size)
        size += y1 * (y1 - y0) * (d - y0)
    y0 = y - y % block
    width = d - y0  # z runs over [y0, d)
    flat = np.asarray(starts)[y // block] + (x * np.minimum(block, width) + y - y0) * width \
        + z - y0
    flat.flags.writeable = False
    return flat, size


def _reconstruct_flops(d: int, k: int, block: int = _BLOCK) -> int:
    """Multiply-adds of _reconstruct_pack_to as executed (tiles' waste included)."""
    return k ** 3 * d + sum((y1 - y0) * k * k * (d - y0) + y1 * k * (y1 - y0) * (d - y0)
                            for y0, y1 in _row_blocks(d, block))


def _reconstruct_pack_to(core_hat: np.ndarray, U: np.ndarray, block: int = _BLOCK, *,
                         out: np.ndarray | None = None,
                         scratch: Scratch | None = None) -> np.ndarray:
    """pack(core_hat x1 U x2 U x3 U) for super-symmetric core_hat (..., k, k, k), U (..., d, k).

    Three GEMM stages (by super-symmetry the mode order is free), over row blocks
    [y0, y1) of `block` rows: T1[b, y, a] = sum_c U[y, c] core[b, c, a];
    T2[a, y, z] = sum_b T1[b, y, a] U[z, b] for y in the block and z >= y0;
    S[x, y, z] = sum_a U[x, a] T2[a, y, z] for x < y1 (one GEMM per block). The tiles S hold
    every x <= y <= z once (plus the few x > y or z < y near the block's diagonal); one gather
    puts them in pack order. Few, large BLAS calls, so threads running other videos meanwhile
    seldom wait for the GIL. Work: _reconstruct_flops (~ k^3 d + k^2 d^2 / 2 + k d^3 / 6
    multiply-adds). out: (..., n_unique(d, 3)) to write into; scratch: where T1, T2, S live.
    """
    k = core_hat.shape[-1]
    batch, d = U.shape[:-2], U.shape[-2]
    dtype = core_hat.dtype
    scratch = Scratch() if scratch is None else scratch
    flat, size = _tile_index(d, block)
    T1 = np.matmul(U[..., None, :, :], core_hat,
                   out=scratch.array("T1", (*batch, k, d, k), dtype))  # (..., b, y, a)
    S = scratch.array("tiles", (*batch, size), dtype)
    start = 0
    for y0, y1 in _row_blocks(d, block):
        b, width = y1 - y0, d - y0
        T2 = scratch.array("T2", (*batch, k, b, width), dtype)  # (..., a, y, z)
        np.matmul(np.moveaxis(T1[..., y0:y1, :], -3, -1), U[..., None, y0:, :].mT,
                  out=T2.swapaxes(-3, -2))
        S_blk = S[..., start:start + y1 * b * width].reshape(*batch, y1, b * width)
        np.matmul(U[..., :y1, :], T2.reshape(*batch, k, b * width), out=S_blk)  # (x, (y, z))
        start += y1 * b * width
    if out is None:
        out = np.empty((*batch, len(flat)), dtype=dtype)
    return np.take(S, flat, axis=-1, mode="wrap", out=out)


def _range_basis(psi: np.ndarray):
    """(Q, Y): psi = Y Q^T to rounding, Q (..., d, k) orthonormal, Y (..., N, k), from the
    eigendecomposition of the Gram matrix of windows scaled to max |phi| < 1 (hot_descriptors):
    psi psi^T = W diag(s^2) W^T (N <= d; Q from a QR of psi^T W) or psi^T psi = V diag(s^2) V^T
    (N > d; Q = V), formed in float64, then Y = psi Q.

    Rank-revealing for every N (ours): a direction counts as zero when s <= max(N, d) eps
    max(s_1, 1) (numpy's matrix_rank tolerance in psi's precision, never below the rounding of
    centring such windows) or s^2 <= max(N, d) eps64 s_1^2 (what a float64 Gram matrix can
    resolve); its column of Y is set to exact zeros; k is the largest numerical rank of the stack
    (>= 1). All of X lives in span(psi_n), so the EPN is solved in k dimensions and lifted back
    with Q; the null directions of X are exact zeros (g(0) = 0), never rounding noise that g would
    inflate (Gamma: (1e-16)^0.1 = 0.03). The Gram route replaces a thin SVD (same tolerance in
    psi's precision), about 4x its speed at N = 64, d = 128 (bench_epn). float32 windows of
    full numerical rank with N <= d take _cholesky_basis (no eigendecomposition) instead.
    """
    N, d = psi.shape[-2:]
    x = psi.astype(np.float64, copy=False)
    small = N <= d
    gram = x @ x.mT if small else x.mT @ x
    if small and psi.dtype == np.float32:
        fast = _cholesky_basis(x, gram)
        if fast is not None:
            return fast
    lam, W = np.linalg.eigh(gram)
    lam, W = lam[..., ::-1], W[..., ::-1]                      # descending
    top = np.maximum(lam[..., :1], 0.0)
    tol = np.maximum((max(N, d) * np.finfo(psi.dtype).eps) ** 2 * np.maximum(top, 1.0),
                     max(N, d) * np.finfo(np.float64).eps * top)
    kept = lam > tol
    k = max(1, int(kept.sum(axis=-1).max()))
    Q = np.linalg.qr(x.mT @ W[..., :k])[0] if small else W[..., :k]
    Y = (x @ Q) * kept[..., None, :k]
    return np.ascontiguousarray(Q, dtype=psi.dtype), np.ascontiguousarray(Y, dtype=psi.dtype)


_ORTHOGONAL_TOL = 1e-9     # |Q^T Q - I| accepted from the Cholesky basis (float32 eps: 1.2e-7)


def _cholesky_basis(x: np.ndarray, gram: np.ndarray):
    """_range_basis's fast path for float32 windows of full numerical rank, N <= d (ours): with
    gram = x x^T = L L^T (float64 Cholesky), Q = (L^-1 x)^T is orthonormal and Y = L, k = N;
    no eigendecomposition, no QR (bench_epn: ~0.6 ms per video of ~6 at N = 64, d = 128).
    Q's loss of orthogonality grows as eps64 kappa(gram); it is measured, and above
    _ORTHOGONAL_TOL (kappa(gram) beyond ~1e7, so far from every direction the rank tolerance
    would drop) or where the Cholesky fails, None: the rank-revealing route runs."""
    try:
        L = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return None
    Qt = np.linalg.solve(L, x)       # numpy's LAPACK: under blas_threads' limit (scipy's is not)
    error = np.abs(Qt @ Qt.mT - np.eye(x.shape[-2])).max(initial=0.0)
    if not error <= _ORTHOGONAL_TOL:
        return None
    return (np.ascontiguousarray(Qt.mT, dtype=np.float32),
            np.ascontiguousarray(L, dtype=np.float32))


def _tied(mu: np.ndarray) -> np.ndarray:
    """Whether the ascending eigenvalues mu (..., k) have a tie among the nonzero ones (above
    snap_tol): neighbours within sqrt(eps) of the larger (as in epn.stable_eigh), where the
    eigenvectors eigh returns are any basis of their joint eigenspace -> (...,) bool."""
    lo, hi = mu[..., :-1], mu[..., 1:]
    close = hi - lo <= math.sqrt(np.finfo(mu.dtype).eps) * hi
    return (close & (lo > snap_tol(mu))).any(axis=-1)


def _so_descriptors(psi, a, fn, spectrum_norm, unit, out, scratch):
    """SO EPN of X = Psi^T A Psi, psi (B, N, d), a (B, N) -> out (B, n_unique(d, 2)); False:
    a matrix function of X, it never depends on the eigenbasis."""
    Q, Y = _range_basis(psi)
    lam, V = np.linalg.eigh(Y.mT @ (a[..., :, None] * Y))
    lam_hat = apply_spectral(lam, fn, spectrum_norm, order=2, unit=unit)
    U = Q @ V
    Xhat = (U * lam_hat[..., None, :]) @ U.mT
    out[...] = Xhat[(..., *pack_indices(psi.shape[-1], 2))]
    return False


def _to_descriptors(psi, a, fn, spectrum_norm, unit, out, scratch):
    """TO EPN of X = sum_n a_n psi_n^(x)3, psi (B, N, d), a (B, N) -> out (B, n_unique(d, 3));
    returns (B,) bool: X_(1) X_(1)^T has tied nonzero eigenvalues (_tied), so the HOSVD core and
    the result depend on the basis eigh picks in their eigenspace."""
    Q, Y = _range_basis(psi)
    batch, k = Y.shape[:-2], Y.shape[-1]
    G = Y @ Y.mT  # Gram matrix Psi Psi^T (N, N)
    C = a[..., :, None] * (G * G) * a[..., None, :]
    mu, V = np.linalg.eigh(Y.mT @ C @ Y)  # X_(1) X_(1)^T = Psi^T A (G o G) A Psi (docs/method.md, "Cheap algebra")
    Z = np.ascontiguousarray((Y @ V).mT)  # (B, k, N): Z[i, n] = u_i^T psi_n
    # core[i, j, l] = sum_n a_n Z[i, n] Z[j, n] Z[l, n] (docs/method.md: (1/N) sum_n (U^T phi_n)^(x)3),
    # formed for the pairs j <= l only: (pairs, k), then the unique i <= j <= l in pack order
    j, l = pack_indices(k, 2)
    core = (Z[..., j, :] * Z[..., l, :]) @ (a[..., :, None] * Z.mT)
    packed = np.take(core.reshape(*batch, -1), _pair_major_index(k), axis=-1)
    weight = pack_weights(k, 3).astype(core.dtype)
    # odd moments can cancel (two centred windows: psi_2 = -psi_1), leaving a core of rounding
    # noise, ||core|| ~ eps sum_n a_n ||psi_n||^3, that the spectrum norm would blow up: zero it
    terms = np.sum(a * np.linalg.norm(Y, axis=-1) ** 3, axis=-1, keepdims=True)
    cancelled = np.sqrt(np.sum(weight * packed * packed, axis=-1, keepdims=True)) \
        <= 8 * np.finfo(core.dtype).eps * math.sqrt(k) * terms
    packed = np.where(cancelled, 0, packed)
    # g acts on the k(k+1)(k+2)/6 unique core entries only; norms count their multiplicities
    packed_hat = apply_spectral(packed, fn, spectrum_norm, order=3, n_axes=1, unit=unit,
                                multiplicity=weight, side=k)
    core_hat = np.take(packed_hat, _full_to_packed(k), axis=-1, mode="wrap",
                       out=scratch.array("core", (*batch, k, k, k), core.dtype))
    _reconstruct_pack_to(core_hat, np.ascontiguousarray(Q @ V), out=out, scratch=scratch)
    return _tied(mu) & ~cancelled[..., 0]


_DESCRIPTORS = {2: _so_descriptors, 3: _to_descriptors}


def descriptor_flops(N: int, d: int, order: int, block: int = _BLOCK) -> int:
    """Floating-point operations of hot_descriptor for phi (N, d) (2 per multiply-add).

    Counts the dense products as executed (block waste included) plus LAPACK's nominal costs,
    k = min(N, d) (the rank of phi; less for rank-deficient windows): symmetric eigh with
    vectors ~ 9 n^3 (Golub & Van Loan), Householder QR of a (d, k) matrix with its Q formed
    ~ 4 d k^2 - 4 k^3 / 3. The range basis (_range_basis): Gram matrix max(N, d) k^2
    multiply-adds, eigh of it, for N <= d the product psi^T W (d N k) and its QR,
    then Y = psi Q (N d k); the Cholesky basis that full-rank float32 windows take instead costs
    about half of that (~1% of the total at N = 64, d = 128): not subtracted, the count is an
    upper bound. Multiply-adds, with P = k(k+1)/2 pairs:
    SO: Y^T A Y N k^2, lift U = Q V d k^2, U diag(g) U^T d^2 k.
    TO: Gram Y Y^T N^2 k, Y^T C Y N^2 k + N k^2, Z = Y V N k^2, core pairs P x N x k, lift
    d k^2, reconstruction _reconstruct_flops (~ k^3 d + k^2 d^2 / 2 + k d^3 / 6).
    Entry-wise work (g, gathers, Hadamard products) is not counted.
    """
    check_order(order)
    k = min(N, d)
    basis_macs = max(N, d) * k * k + N * d * k + (d * N * k if N <= d else 0)
    lapack = 9 * k ** 3 + (4 * d * k * k - 4 * k ** 3 // 3 if N <= d else 0) + 9 * k ** 3
    lapack += 2 * basis_macs  # the range basis (Gram, eigh, QR, Y), then eigh of the EPN
    lift = d * k * k  # U = Q V
    if order == 2:
        return int(lapack + 2 * (N * k * k + lift + d * d * k))
    macs = 2 * N * N * k + 2 * N * k * k  # Gram, Y^T C Y (k x k), Z = Y V
    macs += N * k * k * (k + 1) // 2 + lift  # core (pairs j <= l), lift
    macs += _reconstruct_flops(d, k, block)
    return int(lapack + 2 * macs)


def _check_phi(phi) -> np.ndarray:
    if isinstance(phi, torch.Tensor):
        raise TypeError("hot_descriptor takes numpy arrays; the torch face is pooling.differentiable.hot_descriptor_torch")
    phi = np.asarray(phi)
    if phi.ndim != 2 or phi.shape[0] < 1 or phi.shape[1] < 1:
        raise ValueError(f"phi has shape {phi.shape}; expected (N, d) with N, d >= 1")
    if phi.dtype not in (np.float32, np.float64):
        phi = phi.astype(np.float64)
    if not np.isfinite(phi).all():
        raise ValueError("phi contains NaN or Inf")
    return phi


def hot_descriptor(phi, *, order: int, epn: str | SpectralFunction = "maxexp",
                   epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                   weights=None, center: bool = False) -> np.ndarray:
    """Packed EPN(X) of one video, X pooled from phi (N, d): (n_unique(d, order),), phi's dtype.

    SO: eigh of X, in span(phi) (_range_basis). TO (HoT + docs/method.md "Cheap algebra"): U from
    X_(1) X_(1)^T = (1/N^2) Phi^T (G o G) Phi with weights folded in, core (1/N) sum_n
    (U^T phi_n)^(x)3, g on its unique entries, blocked reconstruction of the unique outputs
    (_reconstruct_pack_to); never d^4 work and never a d^3 tensor. Equal (to rounding) to
    pack(epn_to(pool(phi, 3))).
    epn, epn_params: see epn.make_epn (eta='N' is resolved to N). Other arguments as in pool.
    """
    return hot_descriptors([phi], order=order, epn=epn, epn_params=epn_params,
                           spectrum_norm=spectrum_norm,
                           weights=None if weights is None else [weights], center=center)[0]


def _stacks(n_windows: list[int], d: int, itemsize: int, threads: int) -> list[tuple[int, int]]:
    """Runs [b0, b1) of consecutive videos with equal N, computed as one stack (ours).

    A stack shares every numpy call, so the per-call overhead (and the GIL hand-overs between
    threads) is paid once per stack; stacks are at most ceil(B / threads) videos, so each
    thread gets one, and hold at most _STACK_BYTES of work arrays (T1, core and tiles of
    _to_descriptors: ~ 2 k^2 d + d^3 / 4 numbers per video, k = min(N, d)).
    """
    k = min(max(n_windows), d)
    per_video = itemsize * (2 * k * k * d + d ** 3 // 4)
    size = max(1, min(-(-len(n_windows) // threads), _STACK_BYTES // per_video))
    runs, b0 = [], 0
    for b in range(1, len(n_windows) + 1):
        if b == len(n_windows) or n_windows[b] != n_windows[b0] or b - b0 == size:
            runs.append((b0, b))
            b0 = b
    return runs


def hot_descriptors(phis: Sequence[np.ndarray], *, order: int,
                    epn: str | SpectralFunction = "maxexp",
                    epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                    weights: Sequence[np.ndarray] | None = None,
                    center: bool = False, names: Sequence[str] | None = None) -> np.ndarray:
    """hot_descriptor for each video: phis, a list of (N_b, d) -> (B, n_unique).

    N_b may differ between videos (eta='N' then differs too); d must not. weights: a list of
    (N_b,) or None. Computed in float32 only if every phi is float32, else in float64; each
    video is first scaled by a power of two (exact) so that no power of phi leaves that range,
    and the spectrum norm undoes it (spectrum_norm='sum' is scale-free).
    Consecutive videos with equal N are stacked into shared numpy calls, and stacks run on as
    many threads as BLAS has (_stacks, run_all); rows equal lone hot_descriptor calls to
    rounding (BLAS sums in another order with another thread count).
    Degenerate videos (ours) are named (by `names`, else their index): a warning for an all-zero
    descriptor
    (nothing to pool) and for TO ties (_tied: the result depends on eigh's basis), a
    ValueError for a descriptor that leaves the dtype's range.
    """
    check_order(order)
    phis = [_check_phi(p) for p in phis]
    if not phis:
        raise ValueError("phis is empty; expected a list of (N, d) arrays")
    dims = {p.shape[1] for p in phis}
    if len(dims) != 1:
        raise ValueError(f"all phi must share d; got d in {sorted(dims)}")
    d = dims.pop()
    if weights is not None and len(weights) != len(phis):
        raise ValueError(f"weights has {len(weights)} entries for {len(phis)} videos")
    dtype = np.float32 if all(p.dtype == np.float32 for p in phis) else np.float64
    if weights is not None:
        weights = [np.asarray(w, dtype=dtype) for w in weights]
        for w, p in zip(weights, phis):
            if w.shape != p.shape[:1]:
                raise ValueError(f"weights has shape {w.shape}; expected {p.shape[:1]} "
                                 "(one per window)")
    n_windows = [p.shape[0] for p in phis]
    fns = {N: resolve_epn(epn, epn_params, n_windows=N) for N in set(n_windows)}
    out = np.empty((len(phis), n_unique(d, order)), dtype=dtype)
    tied = np.zeros(len(phis), dtype=bool)
    threads = blas_threads()
    stacks = _stacks(n_windows, d, out.itemsize, threads)

    def run(s: int) -> None:
        b0, b1 = stacks[s]
        phi = np.stack(phis[b0:b1]).astype(dtype, copy=False)
        # each video times 2^-e, exactly, to max |phi| in [0.5, 1): the powers of phi up to the
        # sixth (TO's Gram route) stay inside float32's range; `unit` undoes it (spectrum_scale)
        _, e = np.frexp(np.abs(phi).max(axis=(-2, -1)))
        phi = np.ldexp(phi, -e[:, None, None])
        unit = np.ldexp(np.ones((b1 - b0, 1), dtype), -order * e[:, None])
        w = None if weights is None else np.stack(weights[b0:b1])
        psi, a = _prepare(phi, order, w, center)
        with scratch_buffers() as scratch:
            tied[b0:b1] = _DESCRIPTORS[order](psi, a, fns[n_windows[b0]], spectrum_norm, unit,
                                              out[b0:b1], scratch)

    run_all(run, len(stacks), threads)
    _check_descriptors(out, tied, order=order, center=center, spectrum_norm=spectrum_norm,
                       names=names)
    return out


def _check_descriptors(out: np.ndarray, tied: np.ndarray, *, order: int, center: bool,
                       spectrum_norm: str, names: Sequence[str] | None = None) -> None:
    """Raise for descriptors out (B, n) that left the range of out's dtype; warn for all-zero ones
    and for TO ties (tied (B,)), naming the videos (by names, else their index in the batch)."""
    def which(mask: np.ndarray) -> str:
        if names is not None:
            return ", ".join(str(names[i]) for i in np.flatnonzero(mask))
        return f"videos {np.flatnonzero(mask).tolist()} of {len(mask)}"

    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise ValueError(f"descriptors of {which(~finite)} are not finite: their values leave the "
                         f"range of {out.dtype} (spectrum_norm={spectrum_norm!r} keeps the scale "
                         f"of the windows); use float64 windows or spectrum_norm='sum'")
    zero = ~out.any(axis=1)
    if zero.any():
        causes = ["all-zero windows or weights"]
        if center:
            causes.append("windows that center=True makes zero (a single window, identical ones)")
        if order == 3:
            causes.append("third moments that cancel (phi_2 = -phi_1)")
        log.warning("descriptors of %s are all zero, their pooled tensor is zero: %s",
                    which(zero), "; or ".join(causes))
    if tied.any():
        log.warning("TO EPN of %s depends on the eigenbasis: X_(1) X_(1)^T has tied nonzero "
                    "eigenvalues, and the HOSVD core in their eigenspace depends on the basis eigh "
                    "picks (the descriptor does not rotate with the windows)", which(tied))
