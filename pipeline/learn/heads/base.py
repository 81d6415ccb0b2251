"""The two kinds of head: torch heads on descriptor rows (TorchRowHead) and heads whose fitted
state is numpy arrays (ArrayHeadBase: SVM, logistic regression)."""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from pipeline.core.cache import CorruptFileError, atomic_path
from pipeline.core.devices import resolve_device, torch_dtype
from pipeline.learn.rows import RowData, as_row_source, in_training_basis
from pipeline.learn.persistence import (ARRAYS_FILE, REFIT, check_classes, check_finite, read_params,
                                        restore, write_params)
from pipeline.learn.training import TorchClassifierBase

log = logging.getLogger(__name__)


class TorchRowHead(TorchClassifierBase):
    """A torch head on descriptor rows (n, D): fit(X, y) with X an array or an h5py Dataset, or
    fit_stream(read_rows, y, indices); rows are read as float32 chunks of at most chunk_mb MiB
    (never all rows at once, never float64). Subclasses: __init__ and _build_module."""

    def fit(self, X, y) -> "TorchRowHead":
        """X: (n, D) array, h5py Dataset or RowSource; y: (n,) labels."""
        y = np.asarray(y)
        return self.fit_stream(as_row_source(X, n_rows=len(y)), y)

    def fit_stream(self, read_rows, y, indices=None) -> "TorchRowHead":
        """Train on rows `indices` (default all) of a source of n rows.

        read_rows: a function read_rows(sorted int64 indices) -> (k, D) array, an h5py Dataset,
        an array or a RowSource. y: (n,) labels of *every* row the source serves (aligned with
        it); only y[indices] is read, so labels of rows outside the training part (e.g. the test
        part) can never influence training or the hyper-parameters chosen.
        """
        y = np.asarray(y)
        source = as_row_source(read_rows, n_rows=len(y))
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        self.n_features_in_ = source.n_features
        return self._fit_data(self._make_data(source, indices), y[indices])

    def _make_data(self, X, indices=None) -> RowData:
        source = as_row_source(X)
        if hasattr(self, "n_features_in_") and source.n_features != self.n_features_in_:
            raise ValueError(f"X has {source.n_features} features; the head was fitted on "
                             f"{self.n_features_in_}")
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        return RowData(source, indices, self.chunk_mb, resolve_device(self.device),
                       torch_dtype(self.dtype))

    def decision_function(self, X, indices=None) -> np.ndarray:
        """Class scores (n, n_classes) of rows `indices` (default all) of X (array, h5py Dataset
        or RowSource), streamed in float32 chunks."""
        return self._logits(self._make_data(X, indices))

    def predict(self, X, indices=None) -> np.ndarray:
        return self.classes_[self.decision_function(X, indices).argmax(axis=1)]

    def _forward(self, module, batch):
        return module(batch), None

    def in_basis(self, rows, A) -> "TorchRowHead":
        """This head, fitted on coordinates z = x rows^T A (see in_training_basis), made the same
        head on the rows x themselves: its first linear layer W becomes (W A^T) rows (exact, the
        layer is linear in z). In place; returns self."""
        check_is_fitted(self, "module_")
        name = next(n for n, m in self.module_.named_modules() if isinstance(m, nn.Linear))
        key = f"{name}.weight" if name else "weight"
        state = self.module_.state_dict()
        W = in_training_basis(state[key].double().cpu().numpy(), rows, A)
        state[key] = torch.as_tensor(W, dtype=state[key].dtype, device=state[key].device)
        self.n_features_in_ = W.shape[1]
        module = self._build_module(len(self.classes_)).to(self.device_, torch_dtype(self.dtype))
        module.load_state_dict(state)
        self.module_ = module.eval()
        return self

    def _meta(self) -> dict:
        return {"n_features_in": self.n_features_in_}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])


def two_columns(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A binary model's (1, D), (1,) -> (2, D), (2,) scores [-s, s], so scores are (n, C) always."""
    if coef.shape[0] == 1:
        return np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
    return coef, intercept


class ArrayHeadBase(ClassifierMixin, BaseEstimator):
    """A head whose fitted state is numpy arrays (coef_ (C, D), intercept_ (C,), ...) and a few
    JSON values; scores (n, C) = rows @ coef_^T + intercept_, computed chunk-wise.

    Subclasses list their array attributes in _ARRAYS and implement fit / fit_stream.
    """

    _ARRAYS: tuple[str, ...] = ("coef_", "intercept_")

    def decision_function(self, X, indices=None) -> np.ndarray:
        """Scores (n, n_classes) of rows `indices` (default all) of X (array, h5py Dataset or
        RowSource), read as float32 chunks and multiplied in float64."""
        check_is_fitted(self, "coef_")
        source = as_row_source(X)
        if source.n_features != self.coef_.shape[1]:
            raise ValueError(f"X has {source.n_features} features; the head was fitted on "
                             f"{self.coef_.shape[1]}")
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        out = np.empty((len(indices), len(self.classes_)), dtype=np.float64)
        for sl, rows in source.chunks(indices, self.chunk_mb):
            out[sl] = rows.astype(np.float64) @ self.coef_.T + self.intercept_
        return out

    def predict(self, X, indices=None) -> np.ndarray:
        return self.classes_[self.decision_function(X, indices).argmax(axis=1)]

    def in_basis(self, rows, A) -> "ArrayHeadBase":
        """This head, fitted on coordinates z = x rows^T A (see in_training_basis), made the same
        head on the rows x themselves: coef_ becomes (coef_ A^T) rows (exact, the scores are
        linear in z). In place; returns self."""
        check_is_fitted(self, self._ARRAYS[0])
        if not hasattr(self, "coef_"):
            raise ValueError(f"{type(self).__name__} scores kernel rows, not feature rows: "
                             f"in_basis needs a head linear in its rows (coef_)")
        self.coef_ = in_training_basis(self.coef_, rows, A)
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def save(self, path) -> Path:
        """Folder `path`: params.json (class, parameters, classes_, chosen_params_) and
        arrays.npz (the fitted arrays). No pickle."""
        check_is_fitted(self, self._ARRAYS[0])
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ARRAYS_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{name: getattr(self, name) for name in self._ARRAYS})
        write_params(path, self, ARRAYS_FILE)      # last: it holds arrays.npz's checksum
        return path

    @classmethod
    def load(cls, path) -> "ArrayHeadBase":
        """The head saved by save(path). Every file is checked against its checksum and the
        arrays for NaN/Inf and for one row per class; a damaged, foreign or non-finite file
        raises CorruptFileError naming it."""
        path = Path(path)
        info = read_params(path, cls, ARRAYS_FILE)
        self = restore(cls, info)
        try:
            with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
                for name in self._ARRAYS:
                    setattr(self, name, arrays[name])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(path / ARRAYS_FILE, f"is not the head's arrays "
                                   f"({type(exc).__name__}: {exc})", REFIT) from None
        for name in self._ARRAYS:
            check_finite(path / ARRAYS_FILE, name, getattr(self, name))
        check_classes(path, self.classes_, len(getattr(self, self._ARRAYS[-1])), self._ARRAYS[-1])
        self._set_meta(info["meta"])
        return self

    def _meta(self) -> dict:
        """What save() keeps besides the arrays: the input width and the C grid's CV scores."""
        return {"n_features_in": self.n_features_in_,
                "cv_scores": {repr(k): v for k, v in self.cv_scores_.items()}}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        self.cv_scores_ = {float(k): v for k, v in meta["cv_scores"].items()}
