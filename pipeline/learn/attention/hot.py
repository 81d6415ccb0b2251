"""HoT attention (Wang, Sun & Koniusz, ICASSP 2024, supplement): w scores each window group from its
mean window; X = (1/N) sum_n w_n^r phi_n^(x)r (r = 2, 3), EPN, linear softmax, trained end to end
from per-video caches, so that a training step only mixes group weights ("Economy" below)."""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from pipeline.core.settings import store_params
from pipeline.core.devices import resolve_device, torch_dtype
from pipeline.learn.attention.registry import AttentionSpec, Option, choice, integer, register_attention
from pipeline.learn.training import SampleData, TorchClassifierBase
from pipeline.pooling.differentiable import (VideoCache, build_cache, hot_descriptor_torch,
                                             lift_from_range, so_epn_in_range, stack_caches)
from pipeline.pooling.epn import SPECTRUM_NORMS, SpectralFunction, make_epn
from pipeline.pooling.packing import ORDERS, frobenius_scale, n_unique, pack, pack_weights, unpack

log = logging.getLogger(__name__)

__all__ = ["NONNEG", "GroupAttention", "HoTModule", "HoTAttentionClassifier",
           "NoAttentionClassifier"]


# --------------------------------------------------------------------------------------------
# the attention network w: R^d -> R_{>=0} (layout ours: the paper does not give it)
# --------------------------------------------------------------------------------------------
def _softplus(s: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    return F.softplus(s) / math.log(2.0)  # w = 1 at s = 0


def _sigmoid(s: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    return 2.0 * torch.sigmoid(s)  # in (0, 2); w = 1 at s = 0


def _softmax(s: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    # over each video's groups, times their number: the weights of a video average 1
    return torch.cat([len(p) * torch.softmax(p, dim=0) for p in torch.split(s, lengths)])


NONNEG = {"softplus": _softplus, "sigmoid": _sigmoid, "softmax": _softmax}


class GroupAttention(nn.Module):
    """w(m) >= 0 for group means m (M, d) -> (M,) (HoT: Phi_w^(i,j) = w(E[Phi^(i,j)]) Phi^(i,j)).

    hidden = 0: a linear score v^T m + c; hidden > 0: Linear(d, hidden) -> ReLU -> Linear(hidden,
    1). nonneg: "softplus" (softplus(s) / log 2), "sigmoid" (2 sigmoid(s)) or "softmax" (over a
    video's groups, scaled by their number so they average 1). The last layer starts at zero, so
    training starts from uniform weights w = 1, i.e. plain HoT pooling (ours).
    """

    def __init__(self, d: int, hidden: int = 0, nonneg: str = "softplus"):
        super().__init__()
        if nonneg not in NONNEG:
            raise ValueError(f"nonneg={nonneg!r} is unknown; known: {', '.join(NONNEG)}")
        if not isinstance(hidden, (int, np.integer)) or isinstance(hidden, bool) or hidden < 0:
            raise ValueError(f"hidden={hidden!r} must be an integer >= 0 (0 = linear)")
        self.nonneg = nonneg
        last = nn.Linear(d if hidden == 0 else int(hidden), 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.score = last if hidden == 0 else nn.Sequential(nn.Linear(d, int(hidden)), nn.ReLU(),
                                                            last)

    def forward(self, means: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        """means (M, d), the group means of consecutive videos with lengths[v] groups each."""
        return NONNEG[self.nonneg](self.score(means).squeeze(-1), list(lengths))


class HoTModule(nn.Module):
    """Attention + pooling + EPN + linear softmax: caches of B videos -> logits (B, C).

    descriptor = l2-normalised frobenius_scale(pack(EPN(X))) (as evaluate.prepare does for the
    SVM), so the classifier sees the same rows an SVM head would. Videos with equal shapes (N,
    number of present groups) go through EPN as one batch.
    """

    def __init__(self, d: int, n_classes: int, *, order: int, fn: SpectralFunction,
                 spectrum_norm: str, hidden: int, nonneg: str, learn_attention: bool = True):
        super().__init__()
        self.d, self.order, self.fn, self.spectrum_norm = d, order, fn, spectrum_norm
        self.attention = GroupAttention(d, hidden, nonneg) if learn_attention else None
        self.classifier = nn.Linear(n_unique(d, order), n_classes)
        if order == 2:  # for forward: unpack as one gather (flat entry (i, j) of a (d, d)
            # matrix is packed entry unpack(arange)[i, j])
            self.register_buffer("_unpack_index", torch.as_tensor(
                unpack(np.arange(n_unique(d, 2)), d, 2).reshape(-1)), persistent=False)

    def group_weights(self, caches: Sequence[VideoCache]) -> list[torch.Tensor]:
        """[(G_v,)] the weight of each present group of each video."""
        lengths = [len(c.present) for c in caches]
        if self.attention is None:
            return [c.means.new_ones(n) for c, n in zip(caches, lengths)]
        w = self.attention(torch.cat([c.means for c in caches]), lengths)
        return list(torch.split(w, lengths))

    def _same_shaped(self, caches: Sequence[VideoCache]):
        """(positions in caches, their stacked cache, group weights (b, G)) for each set of
        same-shaped videos (equal N and number of present groups)."""
        same: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(caches):
            same.setdefault((c.n, len(c.present)), []).append(i)
        weights = self.group_weights(caches)
        for pos in same.values():
            yield (pos, stack_caches([caches[i] for i in pos]),
                   torch.stack([weights[i] for i in pos]))

    def _epn_batches(self, caches: Sequence[VideoCache]):
        """(positions in caches, EPN tensors (b, d, d[, d])) for each set of same-shaped videos."""
        for pos, cache, w in self._same_shaped(caches):
            yield pos, hot_descriptor_torch(cache, w, self.order, self.fn, self.spectrum_norm)

    @staticmethod
    def _in_order(parts: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
        """Rows computed per batch of same-shaped videos, back in the order of the caches."""
        positions = [i for pos, _ in parts for i in pos]
        rows = torch.cat([r for _, r in parts])
        if positions == list(range(len(positions))):
            return rows
        return rows[torch.as_tensor(np.argsort(positions), device=rows.device)]

    def _rows(self, E: torch.Tensor) -> torch.Tensor:
        return F.normalize(frobenius_scale(pack(E, self.order), self.d, self.order), dim=-1)

    def descriptors(self, caches: Sequence[VideoCache]) -> torch.Tensor:
        """(B, n_unique(d, order)) unit rows."""
        return self._in_order([(pos, self._rows(E)) for pos, E in self._epn_batches(caches)])

    def forward(self, caches: Sequence[VideoCache]) -> torch.Tensor:
        if self.order == 3:
            # TO: unpacking W would hold C d^3 numbers (6x pack's); pack the batch's tensors.
            return self.classifier(self.descriptors(caches))
        # SO, without packing: pack_weights p (1 on the diagonal, 2 off it) make
        #   <X, Y>_F = sum_k p_k pack(X)_k pack(Y)_k   (tensor_pool.pack_weights)
        # for symmetric X, Y, and frobenius_scale multiplies pack(E) by sqrt(p), so the descriptor
        # r = sqrt(p) o pack(E) / ||E||_F (its norm is ||E||_F) and, with U_c = unpack(W_c /
        # sqrt(p)), the linear layer is
        #   W_c . r + b_c = <U_c, E>_F / ||E||_F + b_c.
        # U (C, d^2): the rows U_c flattened.
        U = self.unpacked_weight()
        # ||E||_F is taken in the range basis (Q orthonormal): a (k, k) norm, not a (d, d) one.
        parts = []
        for pos, cache, w in self._same_shaped(caches):
            Ek = so_epn_in_range(cache, w, self.fn, self.spectrum_norm)
            parts.append((pos, self.so_logits(lift_from_range(cache, Ek).flatten(1), U, Ek.flatten(1))))
        return self._in_order(parts) + self.classifier.bias

    def unpacked_weight(self) -> torch.Tensor:
        """SO: U (C, d^2), the rows U_c = unpack(W_c / sqrt(p)) flattened (see forward)."""
        W = self.classifier.weight
        sqrt_p = torch.as_tensor(np.sqrt(pack_weights(self.d, 2)), dtype=W.dtype, device=W.device)
        return (W / sqrt_p).index_select(1, self._unpack_index)

    @staticmethod
    def so_logits(flat: torch.Tensor, U: torch.Tensor, same_norm: torch.Tensor) -> torch.Tensor:
        """<U_c, E>_F / ||E||_F (no bias) of flattened EPN tensors flat (b, d^2); the norm is
        taken of same_norm (b, m), any flattening with E's Frobenius norm (e.g. its range-basis
        form)."""
        norm = same_norm.norm(dim=1, keepdim=True).clamp_min(1e-12)   # as F.normalize's eps
        return F.linear(flat, U) / norm


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
def _check_videos(videos, n_groups: int | None = None) -> tuple[int, int]:
    """(d, number of groups needed) of videos [(phi (N_i, d), groups (N_i,) ints)]."""
    if not isinstance(videos, (list, tuple)) or not videos:
        raise ValueError("videos must be a non-empty list of (phi (N, d), groups (N,)) pairs")
    dims, top = set(), -1
    for i, item in enumerate(videos):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"videos[{i}] must be a pair (phi (N, d), groups (N,))")
        phi, groups = np.asarray(item[0]), np.asarray(item[1])
        if phi.ndim != 2 or phi.shape[0] < 1:
            raise ValueError(f"videos[{i}]: phi has shape {phi.shape}; expected (N, d), N >= 1")
        if groups.shape != phi.shape[:1] or not np.issubdtype(groups.dtype, np.integer):
            raise ValueError(f"videos[{i}]: groups must be ({phi.shape[0]},) integers")
        if not np.isfinite(phi).all():
            raise ValueError(f"videos[{i}]: phi contains NaN or Inf")
        if groups.min() < 0 or (n_groups is not None and groups.max() >= n_groups):
            raise ValueError(f"videos[{i}]: group indices must lie in [0, {n_groups})")
        dims.add(phi.shape[1])
        top = max(top, int(groups.max()))
    if len(dims) != 1:
        raise ValueError(f"videos disagree on the feature dimension d: {sorted(dims)}")
    return dims.pop(), top + 1


class HoTAttentionClassifier(TorchClassifierBase):
    """HoT attention over window groups, SO/TO pooling with EPN, linear softmax; end to end.

    fit(videos, y, group_names=None): videos = [(phi (N_i, d) float, groups (N_i,) int group
    index per window)], group_names the shared list naming the indices ("L24_s2", ...).
    order 2 | 3; epn, epn_params, spectrum_norm as in pipeline.pooling.epn (eta='N' = each video's N);
    center: covariance form; normalize: l2-normalise windows; hidden, nonneg: GroupAttention.
    Training (TorchClassifierBase): Adam, cross-entropy, early stopping on a stratified seeded
    validation part of the training part; weight_decay may be a grid chosen there.
    Fitted: classes_, group_names_, n_features_in_ (d), module_, chosen_params_, history_.
    """

    _learn_attention = True

    def __init__(self, *, order: int = 2, epn: str = "maxexp",
                 epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                 center: bool = False, normalize: bool = True, hidden: int = 0,
                 nonneg: str = "softplus", lr: float = 1e-2, weight_decay=0.0,
                 batch_size: int = 32, max_epochs: int = 100, patience: int = 10,
                 validation_fraction: float = 0.2, seed: int = 0, device: str = "cpu",
                 dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    # ---- hooks --------------------------------------------------------------------------
    def _spectral(self) -> SpectralFunction:
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} must be one of {ORDERS} (SO, TO)")
        if self.spectrum_norm not in SPECTRUM_NORMS:
            raise ValueError(f"spectrum_norm={self.spectrum_norm!r} is unknown; known: "
                             f"{', '.join(SPECTRUM_NORMS)}")
        return make_epn(self.epn, **dict(self.epn_params or {}))

    def _build_module(self, n_classes: int) -> nn.Module:
        learn = self._learn_attention
        return HoTModule(self.n_features_in_, n_classes, order=self.order, fn=self._spectral(),
                         spectrum_norm=self.spectrum_norm,
                         hidden=self.hidden if learn else 0,
                         nonneg=self.nonneg if learn else "softplus", learn_attention=learn)

    def _make_data(self, videos, indices=None) -> SampleData:
        _check_videos(videos, len(self.group_names_))
        d = np.asarray(videos[0][0]).shape[1]
        if d != self.n_features_in_:
            raise ValueError(f"phi has d={d}; the classifier was fitted on d={self.n_features_in_}")
        device, dtype = resolve_device(self.device), torch_dtype(self.dtype)
        caches = [build_cache(phi, g, self.order, center=self.center, normalize=self.normalize,
                              device=device, dtype=dtype) for phi, g in videos]
        return SampleData(caches, list)

    def _forward(self, module, batch):
        return module(batch), None

    def _meta(self) -> dict:
        return {"n_features_in": self.n_features_in_, "group_names": list(self.group_names_)}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        self.group_names_ = list(meta["group_names"])

    # ---- API ----------------------------------------------------------------------------
    def fit(self, videos, y, group_names: Sequence[str] | None = None) -> "HoTAttentionClassifier":
        """videos: [(phi (N_i, d), groups (N_i,) ints)]; y: (n,) labels; group_names: names of
        the group indices (default "g0", "g1", ... up to the largest index seen)."""
        self._spectral()
        d, seen = _check_videos(videos)
        names = [f"g{i}" for i in range(seen)] if group_names is None else list(group_names)
        if len(names) < seen:
            raise ValueError(f"group_names has {len(names)} names; the videos use group index "
                             f"{seen - 1}")
        y = np.asarray(y)
        if len(y) != len(videos):
            raise ValueError(f"y has {len(y)} labels for {len(videos)} videos")
        self.n_features_in_, self.group_names_ = d, names
        return self._fit_data(self._make_data(videos), y)

    def group_weights(self, videos) -> np.ndarray:
        """(n_videos, n_groups) attention weight w_g of each group of each video; NaN where a
        video has no window of that group (w scores a group's mean window)."""
        check_is_fitted(self, "module_")
        data = self._make_data(videos)
        out = np.full((len(data), len(self.group_names_)), np.nan)
        with torch.no_grad():
            for i, (cache, w) in enumerate(zip(data.items, self.module_.group_weights(data.items))):
                out[i, cache.present.cpu().numpy()] = w.double().cpu().numpy()
        return out

    def _features(self, module, batch):
        """The learned descriptors: unit rows, Frobenius-scaled packed EPN tensors pooled with
        the learned weights (n_unique(d, order) wide), what an SVM head reads in stage 2."""
        return module.descriptors(batch)



class NoAttentionClassifier(HoTAttentionClassifier):
    """The "none" attention: every window weighs 1 (plain HoT pooling + EPN), with the same
    linear softmax layer and training as HoTAttentionClassifier (a baseline for it)."""

    _learn_attention = False

    def __init__(self, *, order: int = 2, epn: str = "maxexp",
                 epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                 center: bool = False, normalize: bool = True, lr: float = 1e-2,
                 weight_decay=0.0, batch_size: int = 32, max_epochs: int = 100,
                 patience: int = 10, validation_fraction: float = 0.2, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores


def pooling_params(t, d) -> dict:
    """The HoT pooling settings of stage 2 (DescriptorConfig `d`) the group classifiers share."""
    return {"order": d.order, "epn": d.epn, "epn_params": dict(d.epn_params),
            "spectrum_norm": d.spectrum_norm, "center": d.center}


OPTIONS = {
    "nonneg": Option("softplus", str, "hot: w >= 0 by softplus (w = 1 at init), sigmoid or softmax "
                                      "over a video's groups; the paper leaves it open (the three "
                                      "tie on real video: docs/results.md)",
                     choice(*NONNEG)),
    "hidden": Option(0, int, "hot: width of w's hidden layer; 0 = linear score (fewest parameters "
                             "for the few videos of a split; 64 no better: docs/results.md)",
                     integer(0)),
}
register_attention(AttentionSpec(
    name="hot", classifier=HoTAttentionClassifier, inputs="groups", options=OPTIONS, pooled=True,
    params=lambda t, d: {**pooling_params(t, d), "hidden": t.hidden, "nonneg": t.nonneg},
    row_name=lambda p, pooling: pooling + "+Att",
    doc="HoT group attention (the paper's method)"))
register_attention(AttentionSpec(
    name="none", classifier=NoAttentionClassifier, inputs="groups", pooled=True,
    params=pooling_params, row_name=lambda p, pooling: pooling + " (uniform)",
    doc="HoT pooling, every window weighing 1, trained end to end (a baseline for hot)"))
