"""scikit-learn transformers for stage 2 (count sketch; HoT pooling + EPN) that take a list of
per-video window features (N_i, D) and compose in a Pipeline with e.g. LinearSVC."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from pipeline.pooling.epn import EPN, SPECTRUM_NORMS, make_epn
from pipeline.pooling.sketch import CountSketch
from pipeline.pooling.packing import ORDERS, frobenius_scale, n_unique
from pipeline.pooling.tensor_pool import hot_descriptors

log = logging.getLogger(__name__)

__all__ = ["CountSketchTransformer", "HighOrderPooling"]


def _as_videos(X) -> tuple[list, bool]:
    """(list of per-video arrays, whether X was a list) for a list/tuple or one array (.., D)."""
    if isinstance(X, (list, tuple)):
        if not X:
            raise ValueError("X is an empty list; expected one (N_i, D) array per video")
        return list(X), True
    return [X], False


class CountSketchTransformer(TransformerMixin, BaseEstimator):
    """Count sketch D -> out_dim of the last axis (Charikar et al.; HAF, HoT).

    X: a list of (N_i, D) arrays (one per video) -> a list of (N_i, out_dim); or one array
    (..., D) or scipy.sparse (n, D) -> (..., out_dim). fit learns in_dim_ and draws sketch_.
    """

    def __init__(self, out_dim: int = 128, seed: int = 0):
        self.out_dim = out_dim
        self.seed = seed

    def fit(self, X, y=None):
        videos, _ = _as_videos(X)
        dims = {v.shape[-1] for v in videos}
        if len(dims) != 1:
            raise ValueError(f"videos disagree on the feature dimension D: {sorted(dims)}")
        self.in_dim_ = int(dims.pop())
        self.sketch_ = CountSketch(self.in_dim_, self.out_dim, self.seed)
        if sp.issparse(X) or (not isinstance(X, (list, tuple)) and np.ndim(X) == 2):
            self.n_features_in_ = self.in_dim_  # sklearn's attribute for one 2-D array
        return self

    def transform(self, X):
        check_is_fitted(self)
        videos, was_list = _as_videos(X)
        out = [self.sketch_.transform(v if sp.issparse(v) else np.asarray(v)) for v in videos]
        return out if was_list else out[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.two_d_array = True
        return tags


class HighOrderPooling(TransformerMixin, BaseEstimator):
    """HoT descriptors: per video, X = pool(phi, order), EPN, pack (+ Frobenius scaling).

    X: a list of (N_i, d) arrays (or an array (B, N, d)) -> (n_videos, n_unique(d, order)).
    order: 2 (SO) or 3 (TO); epn, epn_params, spectrum_norm, center: see
    tensor_pool.hot_descriptor; frobenius: scale the packed entries so that the linear kernel of
    two descriptors is the Frobenius inner product of the tensors. Stateless: fit only records d_.
    """

    def __init__(self, order: int = 2, epn: str = "maxexp",
                 epn_params: Mapping[str, Any] | None = None, spectrum_norm: str = "sum",
                 center: bool = False, frobenius: bool = True):
        self.order = order
        self.epn = epn
        self.epn_params = epn_params
        self.spectrum_norm = spectrum_norm
        self.center = center
        self.frobenius = frobenius

    def _validate_params(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} must be one of {ORDERS}")
        if self.epn not in EPN:
            raise ValueError(f"epn={self.epn!r} is unknown; known: {', '.join(EPN)}")
        make_epn(self.epn, **dict(self.epn_params or {}))  # raises on bad parameters
        if self.spectrum_norm not in SPECTRUM_NORMS:
            raise ValueError(f"spectrum_norm={self.spectrum_norm!r} is unknown; known: "
                             f"{', '.join(SPECTRUM_NORMS)}")

    def fit(self, X, y=None):
        self._validate_params()
        videos = list(X)
        dims = {np.shape(v)[-1] for v in videos}
        if len(dims) != 1:
            raise ValueError(f"videos disagree on the feature dimension d: {sorted(dims)}")
        self.d_ = int(dims.pop())
        self.n_features_out_ = n_unique(self.d_, self.order)
        return self

    def transform(self, X):
        check_is_fitted(self)
        self._validate_params()
        videos = [np.asarray(v) for v in X]
        d = videos[0].shape[-1] if videos else None
        if hasattr(self, "d_") and d != self.d_:
            raise ValueError(f"X has d={d}; this transformer was fitted with d={self.d_}")
        out = hot_descriptors(videos, order=self.order, epn=self.epn, epn_params=self.epn_params,
                              spectrum_norm=self.spectrum_norm, center=self.center)
        return frobenius_scale(out, d, self.order) if self.frobenius else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless: transform needs nothing learned
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
