"""The torch face of the pooling engine: EPN(X) of a video as a differentiable function of its
window-group weights (HoT's attention, docs/method.md "Feature matrix and attention"), from a
per-video cache of everything that does not depend on the weights. Equal to the numpy engine
(tensor_pool.hot_descriptor with the same weights); tests/learn/test_attention.py checks it."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from pipeline.pooling.epn import SpectralFunction, core_apply_reconstruct, epn_so_torch, stable_eigh
from pipeline.pooling.packing import unit_rows

__all__ = ["VideoCache", "build_cache", "stack_caches", "hot_descriptor_torch", "so_epn_in_range",
           "lift_from_range"]

# Economy (ours, exact). Only the group weights change between training steps, so everything else
# is computed once per video (_VideoCache) and each step only mixes:
# - SO: X is linear in the weights, X = sum_g a_g X_g with a_g = w_g^2 / N and X_g = sum_{n in g}
#   psi_n psi_n^T. The X_g are cached, (G_v, k, k) in the range basis of the video (k = min(N, d),
#   psi = Y Q^T with Q (d, k) orthonormal, exact since X lives in span(psi_n)); a step is one
#   weighted sum of G_v matrices, an eigh of k x k and the lift Q (.) Q^T (EPN maps 0 to 0).
# - TO: X is cubic in the weights and caching a (d, d, d) tensor per group is too big, so the
#   cache is the weight-free part of the Gram form of docs/method.md: with A = diag(a_n), a_n = w_{g(n)}^3/N,
#       X_(1) X_(1)^T = Psi^T A (G o G) A Psi,   G = Psi Psi^T = Y Y^T,
#   cached as Y (N, k), H = G o G (N, N) and Q. A step forms B = (A Y)^T H (A Y) (k x k;
#   O(N^2 k)), U = Q V from eigh(B), the core (1/N) sum_n w_n^3 (V^T y_n)^(x)3 (O(N k^3)), applies g
#   and reconstructs; no d^4 work and no per-group d^3 tensor. tests/learn/test_attention.py checks both
#   against pooling the weighted windows directly (tensor_pool.pool + epn.epn_so/epn_to) and the
#   numpy fast path tensor_pool.hot_descriptor(weights=...).




@dataclasses.dataclass
class VideoCache:
    """Weight-free quantities of one video (see "Economy" above), k = min(N, d).

    n: windows N; present (G_v,) group ids present; means (G_v, d) their mean l2-normalised
    window; gpos (N,) each window's position in `present`; Q (d, k) when N < d, else None
    (Y = psi); blocks (G_v, k, k) SO per-group matrices Y_g^T Y_g; Y (N, k), H (N, N) for TO.
    """

    n: int
    present: torch.Tensor
    means: torch.Tensor
    gpos: torch.Tensor
    Q: torch.Tensor | None
    blocks: torch.Tensor | None = None
    Y: torch.Tensor | None = None
    H: torch.Tensor | None = None


def build_cache(phi: np.ndarray, groups: np.ndarray, order: int, *, center: bool = False,
                normalize: bool = True, device="cpu", dtype=torch.float64) -> VideoCache:
    """The cache of one video: phi (N, d) window features, groups (N,) group index per window.

    normalize: l2-normalise each window first (HoT's derivation assumes ||phi_n|| = 1);
    center: pool (phi_n - mu) with mu the unweighted mean (the supplement's covariance form).
    Computed in float64 numpy, stored in `dtype` on `device`.
    """
    phi = np.asarray(phi, dtype=np.float64)
    groups = np.asarray(groups)
    N, d = phi.shape
    if normalize:
        phi = unit_rows(phi)
    psi = phi - phi.mean(axis=0, keepdims=True) if center else phi
    present, gpos = np.unique(groups, return_inverse=True)
    means = np.stack([phi[gpos == i].mean(axis=0) for i in range(len(present))])
    if N < d:
        Q, R = np.linalg.qr(psi.T)  # psi^T = Q R, Q (d, N)
        Y = R.T
    else:
        Q, Y = None, psi

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), device=device).to(dtype)

    cache = VideoCache(N, torch.as_tensor(present, device=device),
                        t(means), torch.as_tensor(gpos, device=device), None if Q is None else t(Q))
    if order == 2:
        cache.blocks = t(np.stack([Y[gpos == i].T @ Y[gpos == i] for i in range(len(present))]))
    else:
        G = Y @ Y.T
        cache.Y, cache.H = t(Y), t(G * G)
    return cache


def stack_caches(caches: Sequence[VideoCache]) -> VideoCache:
    """Caches of videos with equal N and equal numbers of present groups (so equal shapes) as one
    cache with a leading batch axis (B, ...), for hot_descriptor_torch with w (B, G)."""
    def stack(name: str) -> torch.Tensor | None:
        parts = [getattr(c, name) for c in caches]
        return None if parts[0] is None else torch.stack(parts)

    return VideoCache(caches[0].n, stack("present"), stack("means"), stack("gpos"), stack("Q"),
                       stack("blocks"), stack("Y"), stack("H"))


def so_epn_in_range(cache: VideoCache, w: torch.Tensor, fn: SpectralFunction,
              spectrum_norm: str) -> torch.Tensor:
    """SO EPN(X) in the video's range basis (..., k, k): E = Q (this) Q^T, same Frobenius norm."""
    fn = fn.resolve(cache.n) if fn.needs_n_windows else fn
    B = torch.einsum("...g,...gij->...ij", w ** 2 / cache.n, cache.blocks)
    return epn_so_torch(B, fn, spectrum_norm)


def lift_from_range(cache: VideoCache, E: torch.Tensor) -> torch.Tensor:
    return E if cache.Q is None else cache.Q @ E @ cache.Q.mT


def hot_descriptor_torch(cache: VideoCache, w: torch.Tensor, order: int, fn: SpectralFunction,
                         spectrum_norm: str = "sum") -> torch.Tensor:
    """EPN(X) of one video from its cache and group weights w (G_v,) >= 0 (one per present
    group), differentiable in w: (d, d) for SO, (d, d, d) for TO. fn is resolved here with N.
    Batched alike: cache = stack_caches(caches) and w (B, G) give (B, d, d[, d])."""
    if order == 2:
        return lift_from_range(cache, so_epn_in_range(cache, w, fn, spectrum_norm))
    fn = fn.resolve(cache.n) if fn.needs_n_windows else fn
    a = torch.gather(w ** 3 / cache.n, -1, cache.gpos)  # (..., N): a_n = w_{g(n)}^3 / N
    aY = a.unsqueeze(-1) * cache.Y
    _, V = stable_eigh(aY.mT @ cache.H @ aY)  # X_(1) X_(1)^T in the range basis, descending
    Z = cache.Y @ V
    core = torch.einsum("...n,...ni,...nj,...nl->...ijl", a, Z, Z, Z)
    U = V if cache.Q is None else cache.Q @ V
    return core_apply_reconstruct(core, U, fn, spectrum_norm)
