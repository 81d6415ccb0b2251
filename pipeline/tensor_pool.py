"""Tensor pooling X = (1/N) sum_n w_n^r (phi_n - mu)^(x)r (HoT supplement), r = 2 (SO) or 3 (TO),
packing of unique entries, and fast packed EPN descriptors that never form the d^3 tensor."""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pipeline.epn import SpectralFunction, apply_spectral, resolve_epn

log = logging.getLogger(__name__)

__all__ = ["ORDERS", "n_unique", "descriptor_flops", "pack_indices", "pack", "unpack",
           "pack_weights", "frobenius_scale", "pool", "hot_descriptor", "hot_descriptors"]

ORDERS = (2, 3)


def _check_order(order: int) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r} must be one of {ORDERS} (SO, TO)")


def _check_dim(d: int) -> None:
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
        raise ValueError(f"d={d!r} must be an integer >= 1")


def n_unique(d: int, order: int) -> int:
    """Number of unique entries: d(d+1)/2 (SO), d(d+1)(d+2)/6 (TO)."""
    _check_dim(d)
    _check_order(order)
    return math.comb(d + order - 1, order)


# --------------------------------------------------------------------------------------------
# packing: the fixed order is lexicographic over i <= j (SO) and i <= j <= k (TO)
# --------------------------------------------------------------------------------------------
def _pair_offsets(d: int) -> np.ndarray:
    """off[y] = number of pairs (y', z), y' <= z, with y' < y: row y's start in SO pack order."""
    return np.concatenate([[0], np.cumsum(d - np.arange(d))])


@functools.lru_cache(maxsize=32)
def pack_indices(d: int, order: int) -> tuple[np.ndarray, ...]:
    """Index arrays (i, j[, k]) of the unique entries, each (n_unique,) int64, read-only.

    Order: lexicographic over i <= j (= np.triu_indices(d)) for SO and over i <= j <= k for TO;
    for TO the entries with a fixed i are the SO pairs (j, k) with j >= i, a suffix of SO order.
    """
    _check_dim(d)
    _check_order(order)
    I2, J2 = np.triu_indices(d)
    if order == 2:
        out = (I2.astype(np.int64), J2.astype(np.int64))
    else:
        off = _pair_offsets(d)
        I3 = np.concatenate([np.full(off[-1] - off[i], i) for i in range(d)])
        J3 = np.concatenate([I2[off[i]:] for i in range(d)])
        K3 = np.concatenate([J2[off[i]:] for i in range(d)])
        out = (I3.astype(np.int64), J3.astype(np.int64), K3.astype(np.int64))
    for a in out:
        a.flags.writeable = False
    return out


def _infer_order(X, order: int | None) -> int:
    if order is None:
        order = X.ndim
    _check_order(order)
    if X.ndim < order or len(set(X.shape[-order:])) != 1:
        raise ValueError(f"X has shape {tuple(X.shape)}; expected (..., d{', d' * (order - 1)})")
    return order


def pack(X, order: int | None = None):
    """Unique entries of a (super-)symmetric X (..., d, d[, d]) -> (..., n_unique).

    order: 2 or 3; default X.ndim (no batch axes). numpy or torch (differentiable gather).
    """
    order = _infer_order(X, order)
    idx = pack_indices(X.shape[-1], order)
    if isinstance(X, torch.Tensor):
        idx = tuple(torch.from_numpy(np.array(a)).to(X.device) for a in idx)
    return X[(..., *idx)]


def unpack(v, d: int, order: int):
    """Exact inverse of pack: v (..., n_unique) -> (..., d, d[, d]) symmetric. numpy or torch."""
    idx = pack_indices(d, order)
    if v.shape[-1] != len(idx[0]):
        raise ValueError(f"v has {v.shape[-1]} entries on its last axis; d={d}, order={order} "
                         f"needs {len(idx[0])}")
    shape = tuple(v.shape[:-1]) + (d,) * order
    if isinstance(v, torch.Tensor):
        idx = tuple(torch.from_numpy(np.array(a)).to(v.device) for a in idx)
        out = v.new_zeros(shape)
    else:
        out = np.zeros(shape, dtype=np.asarray(v).dtype)
    perms = [(0, 1), (1, 0)] if order == 2 else \
        [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    for p in perms:
        out[(..., *(idx[a] for a in p))] = v
    return out


@functools.lru_cache(maxsize=32)
def _pack_weights(d: int, order: int) -> np.ndarray:
    idx = pack_indices(d, order)
    if order == 2:
        w = np.where(idx[0] == idx[1], 1.0, 2.0)
    else:
        i, j, k = idx
        distinct = 1 + (i != j).astype(int) + (j != k).astype(int)  # sorted: i <= j <= k
        w = np.array([0.0, 1.0, 3.0, 6.0])[distinct]
    w.flags.writeable = False
    return w


def pack_weights(d: int, order: int) -> np.ndarray:
    """Multiplicities (n_unique,) float64: SO 1 (diagonal) / 2; TO 1 / 3 / 6 (distinct indices).

    sum(w * pack(X) * pack(Y)) == <X, Y>_F for symmetric X, Y.
    """
    return _pack_weights(d, order)


def frobenius_scale(packed, d: int, order: int):
    """packed (..., n_unique) * sqrt(pack_weights): plain dot products become <X, Y>_F."""
    s = np.sqrt(pack_weights(d, order))
    if isinstance(packed, torch.Tensor):
        return packed * torch.as_tensor(s, dtype=packed.dtype, device=packed.device)
    return packed * s.astype(np.result_type(packed.dtype, np.float32), copy=False)


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
    _check_order(order)
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
_BLOCKS = (32, 16)  # rows per block, reconstruction stages 2 and 3 (fastest at d=128, k=64)


@functools.lru_cache(maxsize=16)
def _triple_offsets(d: int) -> np.ndarray:
    """off3[x] = position of the first TO entry (x, x, x) in pack order; d + 1 entries."""
    off2 = _pair_offsets(d)
    return np.concatenate([[0], np.cumsum(off2[-1] - off2[:-1])])


@functools.lru_cache(maxsize=16)
def _flat_pack_index(d: int, order: int) -> np.ndarray:
    """pack_indices as flat indices into a C-ordered (d,) * order array (np.take is faster)."""
    flat = np.ravel_multi_index(pack_indices(d, order), (d,) * order)
    flat.flags.writeable = False
    return flat


@functools.lru_cache(maxsize=16)
def _full_to_packed(k: int) -> np.ndarray:
    """(k, k, k) int64: the pack-order position of every entry of a super-symmetric tensor."""
    s = np.sort(np.stack(np.meshgrid(*(np.arange(k),) * 3, indexing="ij")), axis=0)
    i, j, l = s
    off2 = _pair_offsets(k)
    pos = _triple_offsets(k)[i] + off2[j] - off2[i] + (l - j)
    pos.flags.writeable = False
    return pos


def _reconstruct_pack_to(core_hat: np.ndarray, U: np.ndarray,
                         blocks: tuple[int, int] = _BLOCKS) -> np.ndarray:
    """pack(core_hat x1 U x2 U x3 U) for super-symmetric core_hat (k, k, k), U (d, k).

    Only unique outputs are formed, with three GEMM stages (by super-symmetry the mode order is
    free): T1[b, z, a] = sum_c U[z, c] core[b, c, a]; T2[(y, z), a] = sum_b U[y, b] T1[b, z, a]
    for y <= z; out[x, (y, z)] = sum_a U[x, a] T2[(y, z), a] for x <= y <= z. Rows go in blocks
    (blocks = rows per block in stages 2, 3), each taking only the column suffix it needs (pairs
    and triples are lexicographic), so the work is ~ k^3 d + k^2 d^2 / 2 + k d^3 / 6 multiply-adds.
    """
    k = core_hat.shape[0]
    d = U.shape[0]
    b2, b3 = blocks
    off2, off3 = _pair_offsets(d), _triple_offsets(d)
    T1 = np.matmul(U, core_hat).reshape(k, d * k)  # (b, (z, a))
    T2 = np.empty((int(off2[-1]), k), dtype=core_hat.dtype)
    for y0 in range(0, d, b2):
        y1 = min(d, y0 + b2)
        blk = (U[y0:y1] @ T1[:, y0 * k:]).reshape(y1 - y0, d - y0, k)  # (y, z >= y0, a)
        for y in range(y0, y1):
            T2[off2[y]:off2[y + 1]] = blk[y - y0, y - y0:]
    out = np.empty(int(off3[-1]), dtype=core_hat.dtype)
    for x0 in range(0, d, b3):
        x1 = min(d, x0 + b3)
        p0 = off2[x0]
        blk = T2[p0:] @ U[x0:x1].T  # (pairs with y >= x0, x): the BLAS-friendly orientation
        for x in range(x0, x1):
            out[off3[x]:off3[x + 1]] = blk[off2[x] - p0:, x - x0]
    return out


def _range_basis(psi: np.ndarray):
    """(Q, Y): psi = Y Q^T with Q (d, k) orthonormal, Y (N, k), k = N, when N < d; else (None, psi).

    All of X lives in span(psi_n), so the EPN is solved in k dimensions and lifted back with Q;
    the null space of X_(1) X_(1)^T (exact zeros, g(0) = 0) is never formed.
    """
    N, d = psi.shape
    if N >= d:
        return None, psi
    Q, R = np.linalg.qr(psi.T)  # psi^T = Q R
    return Q, np.ascontiguousarray(R.T)


def _so_descriptor(psi, a, fn, spectrum_norm):
    Q, Y = _range_basis(psi)
    lam, V = np.linalg.eigh(Y.T @ (a[:, None] * Y))
    lam_hat = apply_spectral(lam, fn, spectrum_norm, order=2)
    U = V if Q is None else Q @ V
    Xhat = (U * lam_hat) @ U.T
    return Xhat[pack_indices(psi.shape[1], 2)]


def _to_descriptor(psi, a, fn, spectrum_norm):
    Q, Y = _range_basis(psi)
    N, k = Y.shape
    G = Y @ Y.T  # Gram matrix Psi Psi^T (N, N)
    C = a[:, None] * (G * G) * a[None, :]
    _, V = np.linalg.eigh(Y.T @ C @ Y)  # X_(1) X_(1)^T = Psi^T A (G o G) A Psi (METHOD.md)
    Z = Y @ V  # (N, k) coordinates U^T psi_n
    kr = (Z[:, :, None] * Z[:, None, :]).reshape(N, k * k)
    core = ((a[:, None] * Z).T @ kr).reshape(k, k, k)  # sum_n a_n (U^T psi_n)^(x)3
    # g acts on the k(k+1)(k+2)/6 unique core entries only; norms count their multiplicities
    packed = np.take(core.reshape(-1), _flat_pack_index(k, 3))
    packed_hat = apply_spectral(packed, fn, spectrum_norm, order=3, n_axes=1,
                                multiplicity=pack_weights(k, 3).astype(core.dtype), side=k)
    U = V if Q is None else Q @ V
    core_hat = np.take(packed_hat, _full_to_packed(k).reshape(-1)).reshape(k, k, k)
    return _reconstruct_pack_to(core_hat, np.ascontiguousarray(U))


_DESCRIPTORS = {2: _so_descriptor, 3: _to_descriptor}


def descriptor_flops(N: int, d: int, order: int, blocks: tuple[int, int] = _BLOCKS) -> int:
    """Floating-point operations of hot_descriptor for phi (N, d) (2 per multiply-add).

    Counts the dense products as executed (block waste included) plus LAPACK's nominal costs:
    QR 2 d N^2 - 2/3 N^3 (only when N < d) and symmetric eigh with vectors ~ 9 k^3 (Golub & Van
    Loan), k = min(N, d). Entry-wise work (g, gathers) is not counted.
    """
    _check_order(order)
    k = min(N, d)
    qr = 2 * d * N * N - 2 * N ** 3 // 3 if N < d else 0
    lift = d * k * k if N < d else 0  # U = Q V
    if order == 2:
        return int(qr + 2 * (N * k * k + lift + d * d * k) + 9 * k ** 3)
    off2 = _pair_offsets(d)
    macs = 2 * N * N * k + 2 * N * k * k  # Gram, Y^T C Y (k x k), Z = Y V
    macs += N * k ** 3 + lift + k ** 3 * d  # core, lift, T1
    b2, b3 = blocks
    macs += sum((min(d, y0 + b2) - y0) * k * (d - y0) * k for y0 in range(0, d, b2))
    macs += sum((min(d, x0 + b3) - x0) * k * int(off2[-1] - off2[x0]) for x0 in range(0, d, b3))
    return int(qr + 2 * macs + 9 * k ** 3)


def _check_phi(phi) -> np.ndarray:
    if isinstance(phi, torch.Tensor):
        raise TypeError("hot_descriptor takes numpy arrays; use epn.SpectralPowerNorm for torch")
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

    SO: eigh of X (in span(phi) when N < d). TO (HoT + METHOD.md "cheap algebra"): U from
    X_(1) X_(1)^T = (1/N^2) Phi^T (G o G) Phi with weights folded in, core (1/N) sum_n
    (U^T phi_n)^(x)3, g on the core, symmetric blocked reconstruction straight into pack order;
    never d^4 work and never a d^3 tensor. Equal (to rounding) to pack(epn_to(pool(phi, 3))).
    epn, epn_params: see epn.make_epn (eta='N' is resolved to N). Other arguments as in pool.
    """
    _check_order(order)
    phi = _check_phi(phi)
    if weights is not None:
        weights = np.asarray(weights, dtype=phi.dtype)
    fn = resolve_epn(epn, epn_params, n_windows=phi.shape[0])
    psi, a = _prepare(phi, order, weights, center)
    out = _DESCRIPTORS[order](psi, a, fn, spectrum_norm)
    return out.astype(phi.dtype, copy=False)


def hot_descriptors(phis: Sequence[np.ndarray], *, order: int,
                    epn: str | SpectralFunction = "maxexp",
                    epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                    weights: Sequence[np.ndarray] | None = None,
                    center: bool = False) -> np.ndarray:
    """hot_descriptor for each video: phis, a list of (N_b, d) -> (B, n_unique).

    N_b may differ between videos (eta='N' then differs too); d must not. weights: a list of
    (N_b,) or None. The dtype is float32 only if every phi is float32.
    """
    phis = list(phis)
    if not phis:
        raise ValueError("phis is empty; expected a list of (N, d) arrays")
    dims = {np.shape(p)[-1] for p in phis}
    if len(dims) != 1:
        raise ValueError(f"all phi must share d; got d in {sorted(dims)}")
    if weights is not None and len(weights) != len(phis):
        raise ValueError(f"weights has {len(weights)} entries for {len(phis)} videos")
    dtype = np.float32 if all(np.asarray(p).dtype == np.float32 for p in phis) else np.float64
    out = np.empty((len(phis), n_unique(dims.pop(), order)), dtype=dtype)
    for b, phi in enumerate(phis):
        out[b] = hot_descriptor(phi, order=order, epn=epn, epn_params=epn_params,
                                spectrum_norm=spectrum_norm,
                                weights=None if weights is None else weights[b], center=center)
    return out
