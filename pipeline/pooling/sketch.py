"""Count sketch (Charikar et al. 2002; HAF, HoT): p(x)_j = sum_{i: h(i) = j} s_i x_i, seeded,
unbiased (E[<p(x), p(y)>] = <x, y>); parts (streams, poolings) are sketched apart, concatenated."""
from __future__ import annotations

import logging
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.core.settings import check_int
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

__all__ = ["CountSketch", "make_sketches", "sketch_parts"]


class CountSketch:
    """A count sketch R^D -> R^d' (Charikar et al.; HAF eq. for the sketched I3D features).

    h (D,) int64 in [0, d'), s (D,) float32 in {-1, +1}, both from numpy.random.default_rng(seed)
    (h first, then s). out_dim >= in_dim is allowed and is still a sketch, never the identity.
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int):
        self.in_dim = check_int("in_dim", in_dim, 1)
        self.out_dim = check_int("out_dim", out_dim, 1)
        self.seed = check_int("seed", seed, 0)
        rng = np.random.default_rng(self.seed)
        self.h = rng.integers(0, self.out_dim, size=self.in_dim, dtype=np.int64)
        self.s = (2 * rng.integers(0, 2, size=self.in_dim) - 1).astype(np.float32)
        self._finish()

    def _finish(self) -> None:
        self.h.flags.writeable = False
        self.s.flags.writeable = False
        self._matrix = sp.csr_matrix(
            (self.s.astype(np.float64), (np.arange(self.in_dim), self.h)),
            shape=(self.in_dim, self.out_dim))  # S (D, d'): p(x) = x @ S
        self._torch: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"CountSketch(in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed})"

    def transform(self, x):
        """Sketch the last axis: x (..., D) -> (..., d').

        numpy: dense arrays keep a floating dtype (ints become float64); scipy.sparse (n, D) gives
        a dense (n, d') float64 array. torch: differentiable (index_add), on x's device and dtype.
        """
        if isinstance(x, torch.Tensor):
            return self._transform_torch(x)
        if sp.issparse(x):
            if x.shape[-1] != self.in_dim:
                raise ValueError(f"x has {x.shape[-1]} features; this sketch has "
                                 f"in_dim={self.in_dim}")
            return np.asarray((sp.csr_matrix(x) @ self._matrix).todense())
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x has shape {x.shape}; expected (..., {self.in_dim})")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        flat = x.reshape(-1, self.in_dim)
        out = np.asarray(self._matrix.T @ flat.T).T  # sparse (d', D) @ dense (D, n)
        return out.astype(dtype, copy=False).reshape(*x.shape[:-1], self.out_dim)

    def _transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (..., {self.in_dim})")
        key = (x.device, x.dtype)
        if key not in self._torch:
            self._torch[key] = (torch.tensor(np.array(self.h), device=x.device),
                                torch.tensor(np.array(self.s), device=x.device, dtype=x.dtype))
        h, s = self._torch[key]
        out = x.new_zeros(*x.shape[:-1], self.out_dim)
        return out.index_add(-1, h, x * s)

    __call__ = transform

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild this sketch, as numpy arrays (HDF5/npz friendly)."""
        return {"h": self.h.copy(), "s": self.s.copy(), "in_dim": np.asarray(self.in_dim),
                "out_dim": np.asarray(self.out_dim), "seed": np.asarray(self.seed)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "CountSketch":
        """Rebuild a sketch from state(): h and s are taken as stored (not redrawn), validated."""
        missing = {"h", "s", "in_dim", "out_dim", "seed"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        self = cls.__new__(cls)
        self.in_dim = check_int("in_dim", int(np.asarray(state["in_dim"])), 1)
        self.out_dim = check_int("out_dim", int(np.asarray(state["out_dim"])), 1)
        self.seed = check_int("seed", int(np.asarray(state["seed"])), 0)
        h = np.asarray(state["h"]).astype(np.int64)
        s = np.asarray(state["s"]).astype(np.float32)
        if h.shape != (self.in_dim,) or s.shape != (self.in_dim,):
            raise ValueError(f"state h {h.shape} and s {s.shape} must both be ({self.in_dim},)")
        if h.size and (h.min() < 0 or h.max() >= self.out_dim):
            raise ValueError(f"state h must lie in [0, out_dim={self.out_dim})")
        if not np.isin(s, (-1.0, 1.0)).all():
            raise ValueError("state s must contain only -1 and +1")
        self.h, self.s = h.copy(), s.copy()
        self._finish()
        return self


def make_sketches(dims: Sequence[int], out_dim: int | Sequence[int],
                  seed: int) -> list[CountSketch]:
    """One CountSketch per part, seeds spawned deterministically from one base seed.

    dims: input dimension of each part (e.g. [400, 400, 400, 400] for RGB/flow x mean/max);
    out_dim: d' for all parts or one per part. Part p gets the seed
    SeedSequence(seed).spawn(P)[p].generate_state(1)[0], so adding parts never changes earlier ones.
    """
    dims = list(dims)
    if not dims:
        raise ValueError("dims is empty; expected one input dimension per part")
    seed = check_int("seed", seed, 0)
    outs = [out_dim] * len(dims) if isinstance(out_dim, numbers.Integral) else list(out_dim)
    if len(outs) != len(dims):
        raise ValueError(f"out_dim has {len(outs)} entries for {len(dims)} parts")
    children = np.random.SeedSequence(seed).spawn(len(dims))
    return [CountSketch(D, o, int(c.generate_state(1)[0])) for D, o, c in zip(dims, outs, children)]


def sketch_parts(parts: Sequence[Any], sketches: Sequence[CountSketch]):
    """Sketch each part (N, D_p) with its own sketch and concatenate: (N, sum_p d'_p) (= P d').

    numpy or torch (all parts of one kind).
    """
    parts = list(parts)
    if len(parts) != len(sketches) or not parts:
        raise ValueError(f"{len(parts)} parts for {len(sketches)} sketches; need one per part")
    lead = {tuple(p.shape[:-1]) for p in parts}
    if len(lead) != 1:
        raise ValueError(f"parts disagree on their leading shape (N,): {sorted(lead)}")
    out = [sk.transform(p) for p, sk in zip(parts, sketches)]
    if isinstance(out[0], torch.Tensor):
        return torch.cat(out, dim=-1)
    return np.concatenate(out, axis=-1)
