"""Logistic-regression head (scikit-learn LogisticRegression, multinomial, L2) on descriptor rows
(n, D) -> scores (n, C); a further head of docs/method.md "Heads". Training rows stay float32."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from pipeline.core.settings import store_params
from pipeline.learn.heads.base import ArrayHeadBase, two_columns
from pipeline.learn.rows import RowSource, as_row_source
from pipeline.learn.selection import as_grid, encode_labels, select_by_cv, _grid_of

log = logging.getLogger(__name__)

__all__ = ["LogisticHead"]


class LogisticHead(ArrayHeadBase):
    """Multinomial logistic regression (lbfgs); C is one value or candidates chosen by seeded
    stratified `cv`-fold cross-validation on the training part only (mean accuracy).

    The training rows are gathered chunk-wise into one float32 array (lbfgs needs them all each
    iteration; scikit-learn keeps float32 for lbfgs, so there is no float64 copy).
    Fitted: classes_, coef_ (C, D), intercept_ (C,), chosen_params_ {"C"}, cv_scores_.
    """

    def __init__(self, *, C=(0.1, 1.0, 10.0), cv: int = 3, C_extend: int = 0, seed: int = 0, tol: float = 1e-4,
                 max_iter: int = 1000, chunk_mb: float = 256.0):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def fit(self, X, y) -> "LogisticHead":
        """X: (n, D) array, h5py Dataset or RowSource; y: (n,) labels."""
        y = np.asarray(y)
        return self.fit_stream(as_row_source(X, n_rows=len(y)), y)

    def fit_stream(self, read_rows: Callable | RowSource, y, indices=None) -> "LogisticHead":
        """Train on rows `indices` (default all); y: (n,) labels of every row of the source,
        only y[indices] is read (see TorchRowHead.fit_stream)."""
        Cs = as_grid(self.C, "C")
        if min(Cs) <= 0:
            raise ValueError(f"C={self.C!r} must be > 0")
        y = np.asarray(y)
        source = as_row_source(read_rows, n_rows=len(y))
        idx = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        self.classes_, codes = encode_labels(y[idx])
        X = np.empty((len(idx), source.n_features), dtype=np.float32)
        for sl, rows in source.chunks(idx, self.chunk_mb):
            X[sl] = rows

        def model(C):
            return LogisticRegression(C=C, tol=self.tol, max_iter=self.max_iter,
                                      random_state=self.seed)

        def score(C, a, b):
            return float(np.mean(model(C).fit(X[a], codes[a]).predict(X[b]) == codes[b]))

        C, self.cv_scores_ = select_by_cv(codes, Cs, score, n_folds=self.cv, seed=self.seed,
                                          extend=self.C_extend)
        fitted = model(C).fit(X, codes)
        self.coef_, self.intercept_ = two_columns(fitted.coef_.astype(np.float64),
                                                  fitted.intercept_.astype(np.float64))
        self.n_features_in_ = source.n_features
        self.chosen_params_ = {"C": C, **_grid_of(self.cv_scores_)}
        return self

    def predict_proba(self, X, indices=None) -> np.ndarray:
        """Class probabilities (n, C): the softmax of the multinomial scores (a binary model's
        scores [-s, s] give sigmoid(s), as scikit-learn's)."""
        s = self.decision_function(X, indices)
        s = s / 2 if s.shape[1] == 2 else s
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
