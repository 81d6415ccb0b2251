"""Descriptor rows streamed in float32 chunks, never all at once: row sources over numpy arrays,
h5py datasets or reader functions, torch batches of them, and the change of basis that turns a
head fitted on training coordinates into the same head on rows."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterator

import numpy as np
import torch


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RowSource:
    """Rows (n_rows, n_features) that are read on demand.

    read(indices) gets strictly increasing int64 indices (what h5py fancy indexing needs) and
    returns (len(indices), n_features). rows() and chunks() take any order and return float32.
    """

    read: Callable[[np.ndarray], np.ndarray]
    n_rows: int
    n_features: int

    def rows(self, indices) -> np.ndarray:
        """Rows at `indices` (k,) in the order given -> (k, n_features) float32."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        if indices.min() < 0 or indices.max() >= self.n_rows:
            raise IndexError(f"row indices must lie in [0, {self.n_rows})")
        uniq, inverse = np.unique(indices, return_inverse=True)
        block = np.asarray(self.read(uniq), dtype=np.float32)
        if block.shape != (len(uniq), self.n_features):
            raise ValueError(f"read_rows returned shape {block.shape}; expected "
                             f"{(len(uniq), self.n_features)}")
        return block[inverse]

    def chunk_rows(self, chunk_mb: float) -> int:
        """How many float32 rows fit in chunk_mb MiB (at least 1)."""
        return max(1, int(chunk_mb * 2 ** 20) // (4 * max(1, self.n_features)))

    def chunks(self, indices, chunk_mb: float, multiple: int = 1
               ) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `indices`, their rows float32) chunk by chunk, in the order given;
        chunks hold a multiple of `multiple` rows (at least `multiple`)."""
        indices = np.asarray(indices, dtype=np.int64)
        step = max(multiple, self.chunk_rows(chunk_mb) // multiple * multiple)
        for start in range(0, len(indices), step):
            sl = slice(start, min(len(indices), start + step))
            yield sl, self.rows(indices[sl])


def as_row_source(X, n_rows: int | None = None) -> RowSource:
    """A RowSource from an array (n, D), an h5py Dataset (n, D), a RowSource, or a function
    read_rows(indices) -> (k, D) (then n_rows is required; D is read from row 0)."""
    if isinstance(X, RowSource):
        return X
    if callable(X) and not hasattr(X, "shape"):
        if n_rows is None:
            raise ValueError("a read_rows function needs n_rows (the number of rows it serves)")
        first = np.asarray(X(np.array([0], dtype=np.int64)))
        if first.ndim != 2 or first.shape[0] != 1:
            raise ValueError(f"read_rows([0]) returned shape {first.shape}; expected (1, D)")
        return RowSource(X, int(n_rows), int(first.shape[1]))
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"X has shape {tuple(shape)}; expected (n_samples, n_features)")
    if n_rows is not None and n_rows != shape[0]:
        raise ValueError(f"X has {shape[0]} rows; y has {n_rows}")
    return RowSource(lambda idx: X[idx], int(shape[0]), int(shape[1]))


class RowData:
    """Training rows streamed from a RowSource: batches of (x (b, D) tensor, positions)."""

    def __init__(self, source: RowSource, indices: np.ndarray, chunk_mb: float,
                 device: torch.device, dtype: torch.dtype):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.chunk_mb, self.device, self.dtype = chunk_mb, device, dtype

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, positions: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """(batch positions, x) in the order of positions, reading chunk by chunk."""
        # chunks are whole batches, so the batches do not depend on chunk_mb
        for sl, rows in self.source.chunks(self.indices[positions], self.chunk_mb, batch_size):
            x = torch.as_tensor(rows, device=self.device).to(self.dtype)
            pos = positions[sl]
            for b0 in range(0, len(pos), batch_size):
                yield pos[b0:b0 + batch_size], x[b0:b0 + batch_size]


def in_training_basis(M: np.ndarray, rows, A: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """(M A^T) rows (k, D) float64: a linear map M (k, r) on coordinates z = x rows^T A (rows
    (n, D) the training rows, A (n, r); evaluate.coordinate_basis) as a map on the rows x
    themselves. rows are read `chunk` at a time in float64 (never all of them)."""
    M, A = np.asarray(M, dtype=np.float64), np.asarray(A, dtype=np.float64)
    if M.ndim != 2 or A.ndim != 2 or M.shape[1] != A.shape[1] or A.shape[0] != len(rows):
        raise ValueError(f"M {M.shape}, A {A.shape}, rows {tuple(rows.shape)}: need M (k, r), "
                         f"A (n, r) and rows (n, D)")
    B = M @ A.T
    out = np.zeros((len(M), rows.shape[1]))
    for i0 in range(0, len(rows), chunk):
        out += B[:, i0:i0 + chunk] @ np.asarray(rows[i0:i0 + chunk], dtype=np.float64)
    return out
