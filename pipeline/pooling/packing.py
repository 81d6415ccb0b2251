"""Packing of (super-)symmetric tensors: the unique entries in a fixed order, their
multiplicities (Frobenius inner products on packed vectors), and exact unit rows. numpy or torch."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

ORDERS = (2, 3)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """x (N, d) with each row divided by its l2 norm, whatever its scale (rows of zeros stay
    zero): each row is first scaled by a power of two (exact) to max |x| in [0.5, 1), so the
    norm neither underflows nor overflows."""
    _, e = np.frexp(np.abs(x).max(axis=1, keepdims=True))
    y = np.ldexp(x, -e)
    norm = np.linalg.norm(y, axis=1, keepdims=True)
    return np.divide(y, norm, out=np.zeros_like(y), where=norm > 0)


def check_order(order: int) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r} must be one of {ORDERS} (SO, TO)")


def check_dim(d: int) -> None:
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
        raise ValueError(f"d={d!r} must be an integer >= 1")


def n_unique(d: int, order: int) -> int:
    """Number of unique entries: d(d+1)/2 (SO), d(d+1)(d+2)/6 (TO)."""
    check_dim(d)
    check_order(order)
    return math.comb(d + order - 1, order)


# --------------------------------------------------------------------------------------------
# packing: the fixed order is lexicographic over i <= j (SO) and i <= j <= k (TO)
# --------------------------------------------------------------------------------------------
def pair_offsets(d: int) -> np.ndarray:
    """off[y] = number of pairs (y', z), y' <= z, with y' < y: row y's start in SO pack order."""
    return np.concatenate([[0], np.cumsum(d - np.arange(d))])


@functools.lru_cache(maxsize=32)
def pack_indices(d: int, order: int) -> tuple[np.ndarray, ...]:
    """Index arrays (i, j[, k]) of the unique entries, each (n_unique,) int64, read-only.

    Order: lexicographic over i <= j (= np.triu_indices(d)) for SO and over i <= j <= k for TO;
    for TO the entries with a fixed i are the SO pairs (j, k) with j >= i, a suffix of SO order.
    """
    check_dim(d)
    check_order(order)
    I2, J2 = np.triu_indices(d)
    if order == 2:
        out = (I2.astype(np.int64), J2.astype(np.int64))
    else:
        off = pair_offsets(d)
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
    check_order(order)
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


