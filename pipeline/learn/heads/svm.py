"""SVM heads (HoT, HAF): one-vs-rest linear SVM on descriptor rows (n, D) -- LinearSVC, or SVC on a
linear Gram matrix (n, n) built chunk-wise from float32 rows -- and SVC on a precomputed kernel,
so that IDT can be fused as a weighted kernel sum (docs/method.md "Heads", "IDT and fusion")."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from sklearn.svm import SVC, LinearSVC

from pipeline.core.settings import store_params
from pipeline.learn.heads.base import ArrayHeadBase, two_columns
from pipeline.learn.rows import RowSource, as_row_source
from pipeline.learn.selection import as_grid, encode_labels, select_by_cv, _grid_of

log = logging.getLogger(__name__)

__all__ = ["SVMHead", "linear_kernel", "KERNELS", "SOLVERS"]

KERNELS = ("linear", "precomputed")
SOLVERS = ("auto", "liblinear", "kernel")


def linear_kernel(source, indices=None, other=None, other_indices=None, *,
                  chunk_mb: float = 256.0) -> np.ndarray:
    """K[i, j] = <x_i, z_j> (n, m) float64 from float32 rows read chunk by chunk.

    source/other: array, h5py Dataset or RowSource (other defaults to source, then K is
    symmetric and only its upper block triangle is computed). Each pair of chunks is multiplied
    in float64; at most two chunks (and their float64 copies) are in memory at once.
    """
    a = as_row_source(source)
    ia = np.arange(a.n_rows) if indices is None else np.asarray(indices, np.int64)
    same = other is None and other_indices is None
    b = a if other is None else as_row_source(other)
    if other_indices is not None:
        ib = np.asarray(other_indices, np.int64)
    else:
        ib = ia if other is None else np.arange(b.n_rows)
    if a.n_features != b.n_features:
        raise ValueError(f"rows have {a.n_features} and {b.n_features} features")
    K = np.empty((len(ia), len(ib)), dtype=np.float64)
    step = a.chunk_rows(chunk_mb)
    for i0 in range(0, len(ia), step):
        A = a.rows(ia[i0:i0 + step]).astype(np.float64)
        j_start = i0 if same else 0
        for j0 in range(j_start, len(ib), step):
            B = A if same and j0 == i0 else b.rows(ib[j0:j0 + step]).astype(np.float64)
            K[i0:i0 + len(A), j0:j0 + len(B)] = A @ B.T
            if same and j0 != i0:
                K[j0:j0 + len(B), i0:i0 + len(A)] = K[i0:i0 + len(A), j0:j0 + len(B)].T
    return K


def _ovr_dual(K: np.ndarray, codes: np.ndarray, n_classes: int, C: float, tol: float,
              max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest SVC on a precomputed kernel K (n, n): (dual (n_classes, n), intercept (C,)),
    class scores = K(test, train) @ dual^T + intercept (dual[c, i] = alpha_i y_i, 0 off the
    support vectors; sklearn's sign convention: positive = class c)."""
    dual = np.zeros((n_classes, len(codes)))
    intercept = np.zeros(n_classes)
    for c in range(n_classes):
        svc = SVC(kernel="precomputed", C=C, tol=tol, max_iter=max_iter)
        svc.fit(K, codes == c)
        dual[c, svc.support_] = svc.dual_coef_[0]
        intercept[c] = svc.intercept_[0]
    return dual, intercept


class SVMHead(ArrayHeadBase):
    """One-vs-rest SVM with scores (n, n_classes); C is one value or candidates chosen by seeded
    stratified `cv`-fold cross-validation on the training part only (mean accuracy).

    kernel="linear": X are descriptor rows (array, h5py Dataset or fit_stream's read_rows).
      solver="liblinear": sklearn LinearSVC (squared hinge, as evaluate.py). It needs the
        training rows as one float64 array, so it refuses when that exceeds max_float64_mb.
      solver="kernel": SVC (hinge) on the Gram matrix K = X X^T (n_train^2 float64), built
        chunk-wise from float32 rows; coef_ = dual X is then recovered chunk-wise, so
        prediction needs no training rows.
      solver="auto": liblinear when n_train * D * 8 bytes <= max_float64_mb, else kernel.
      Fitted: coef_ (C, D), intercept_ (C,).
    kernel="precomputed": X is a kernel matrix: fit(K (n, n), y), decision_function(K (m, n))
      with K[i, j] = k(x_i, x_train_j), e.g. a weighted sum of HoT and IDT kernels (fusion).
      Fitted: dual_coef_ (C, n_train), intercept_ (C,).
    chosen_params_: {"C", "solver"} (+ "C_grid": the searched grid, extended past an end where C
    won there, up to C_extend log steps per end; see select_by_cv); cv_scores_: {C: mean accuracy}
    when C is a grid.
    """

    def __init__(self, *, C=1.0, kernel: str = "linear", solver: str = "auto", cv: int = 3,
                 C_extend: int = 0, seed: int = 0, tol: float = 1e-4, max_iter: int = 10000,
                 max_float64_mb: float = 1024.0, chunk_mb: float = 256.0):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    @property
    def _ARRAYS(self) -> tuple[str, ...]:
        return ("dual_coef_", "intercept_") if self.kernel == "precomputed" else \
            ("coef_", "intercept_")

    def _check(self) -> tuple[float, ...]:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel={self.kernel!r} is unknown; known: {', '.join(KERNELS)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} is unknown; known: {', '.join(SOLVERS)}")
        Cs = as_grid(self.C, "C")
        if min(Cs) <= 0:
            raise ValueError(f"C={self.C!r} must be > 0")
        return Cs

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, y) -> "SVMHead":
        """X: rows (n, D) (kernel="linear") or a kernel matrix (n, n) (kernel="precomputed")."""
        y = np.asarray(y)
        if self.kernel == "precomputed":
            return self._fit_precomputed(np.asarray(X, dtype=np.float64), y)
        return self.fit_stream(as_row_source(X, n_rows=len(y)), y)

    def fit_stream(self, read_rows: Callable | RowSource, y, indices=None) -> "SVMHead":
        """Train on rows `indices` (default all) of a source of n rows (kernel="linear").

        read_rows: read_rows(sorted int64 indices) -> (k, D), an h5py Dataset, an array or a
        RowSource. y: (n,) labels of every row of the source; only y[indices] is read.
        """
        Cs = self._check()
        if self.kernel != "linear":
            raise ValueError("fit_stream reads descriptor rows: it needs kernel='linear'")
        y = np.asarray(y)
        source = as_row_source(read_rows, n_rows=len(y))
        idx = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        self.classes_, codes = encode_labels(y[idx])
        n_classes, D = len(self.classes_), source.n_features
        dense_mb = len(idx) * D * 8 / 2 ** 20
        solver = self.solver
        if solver == "auto":
            solver = "liblinear" if dense_mb <= self.max_float64_mb else "kernel"
        if solver == "liblinear":
            if dense_mb > self.max_float64_mb:
                raise ValueError(f"solver='liblinear' needs the {len(idx)} training rows as one "
                                 f"float64 array ({dense_mb:.0f} MiB > max_float64_mb="
                                 f"{self.max_float64_mb}); use solver='kernel'")
            X = np.empty((len(idx), D), dtype=np.float64)
            for sl, rows in source.chunks(idx, self.chunk_mb):
                X[sl] = rows

            def svc(C):
                return LinearSVC(C=C, dual="auto", tol=self.tol, max_iter=self.max_iter,
                                 random_state=self.seed)

            def score(C, a, b):
                model = svc(C).fit(X[a], codes[a])
                return float(np.mean(model.predict(X[b]) == codes[b]))

            C, self.cv_scores_ = select_by_cv(codes, Cs, score, n_folds=self.cv, seed=self.seed,
                                          extend=self.C_extend)
            model = svc(C).fit(X, codes)
            self.coef_, self.intercept_ = two_columns(model.coef_.astype(np.float64),
                                                      model.intercept_.astype(np.float64))
        else:
            K = linear_kernel(source, idx, chunk_mb=self.chunk_mb)
            C, dual, self.intercept_ = self._fit_kernel(K, codes, Cs)
            del K
            coef = np.zeros((n_classes, D))
            for sl, rows in source.chunks(idx, self.chunk_mb):
                coef += dual[:, sl] @ rows.astype(np.float64)
            self.coef_ = coef
        self.n_features_in_ = D
        self.chosen_params_ = {"C": C, "solver": solver, **_grid_of(self.cv_scores_)}
        log.debug("SVMHead: C=%g (%s) on %d rows", C, solver, len(idx))
        return self

    def _fit_kernel(self, K, codes, Cs):
        n_classes = int(codes.max()) + 1

        def score(C, a, b):
            dual, icpt = _ovr_dual(K[np.ix_(a, a)], codes[a], n_classes, C, self.tol,
                                   self.max_iter)
            pred = (K[np.ix_(b, a)] @ dual.T + icpt).argmax(axis=1)
            return float(np.mean(pred == codes[b]))

        C, self.cv_scores_ = select_by_cv(codes, Cs, score, n_folds=self.cv, seed=self.seed,
                                          extend=self.C_extend)
        dual, intercept = _ovr_dual(K, codes, n_classes, C, self.tol, self.max_iter)
        return C, dual, intercept

    def _fit_precomputed(self, K: np.ndarray, y: np.ndarray) -> "SVMHead":
        Cs = self._check()
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != len(y):
            raise ValueError(f"kernel='precomputed': X has shape {K.shape}; expected the "
                             f"training kernel ({len(y)}, {len(y)})")
        self.classes_, codes = encode_labels(y)
        C, self.dual_coef_, self.intercept_ = self._fit_kernel(K, codes, Cs)
        self.n_features_in_ = K.shape[1]
        self.chosen_params_ = {"C": C, "solver": "kernel", **_grid_of(self.cv_scores_)}
        return self

    # ---- prediction ---------------------------------------------------------------------
    def decision_function(self, X, indices=None) -> np.ndarray:
        """Scores (n, n_classes): rows of X (linear; array, h5py Dataset or RowSource, rows
        `indices`), or kernel rows K(test, train) (m, n_train) (precomputed)."""
        if self.kernel == "precomputed":
            K = np.asarray(X, dtype=np.float64)
            if K.ndim != 2 or K.shape[1] != self.dual_coef_.shape[1]:
                raise ValueError(f"X has shape {K.shape}; expected kernel rows (m, "
                                 f"{self.dual_coef_.shape[1]}) against the training samples")
            return K @ self.dual_coef_.T + self.intercept_
        return super().decision_function(X, indices)
