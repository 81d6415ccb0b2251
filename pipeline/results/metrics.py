"""Evaluation metrics that dataset protocols name (`Dataset.metric`): accuracy, which consumes
predicted labels, and mean average precision over classes, which consumes classifier scores.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def accuracy(y_true, y_pred) -> float:
    """Fraction of items whose predicted class equals the true class.

    y_true, y_pred: (n,) integer class indices, n >= 1. Consumes predictions, not scores: with
    scores (n, C) use `METRICS["accuracy"].from_scores`, which predicts argmax (first on ties).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"accuracy: y_true {y_true.shape} and y_pred {y_pred.shape} must be two "
                         f"(n,) arrays of class indices of the same length")
    if y_true.size == 0:
        raise ValueError("accuracy: no items (n = 0)")
    return float(np.mean(y_true == y_pred))


def labels_to_indicator(labels: Sequence[Sequence[int]] | np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) uint8 indicator from per-item class indices: (n,) ints or n tuples (Item.labels)."""
    out = np.zeros((len(labels), n_classes), np.uint8)
    for i, item_labels in enumerate(labels):
        idx = np.atleast_1d(np.asarray(item_labels, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
            raise ValueError(f"labels of item {i} ({idx.tolist()}) must lie in [0, {n_classes})")
        out[i, idx] = 1
    return out


def average_precision(y_true, scores) -> float:
    """True average precision of one class: sum over score thresholds of (R_k - R_{k-1}) P_k.

    y_true: (n,) binary with at least one positive; scores: (n,). Items with equal scores form one
    threshold (no interpolation), exactly as sklearn.metrics.average_precision_score.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]     # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y_true, scores) -> float:
    """Mean over classes of the true average precision (`average_precision`) of their scores.

    y_true: (n, C) binary indicator (multi-label allowed), or (n,) class indices;
    scores: (n, C) classifier scores, higher = more confident. Consumes scores, not predicted
    labels. Classes without a positive item have no AP: they are left out with a warning.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"mean_average_precision: scores {scores.shape} must be (n, C), n >= 1")
    if not np.all(np.isfinite(scores)):
        raise ValueError("mean_average_precision: scores hold NaN or inf")
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = labels_to_indicator(y, scores.shape[1])
    if y.shape != scores.shape:
        raise ValueError(f"mean_average_precision: y_true {y.shape} and scores {scores.shape} "
                         f"must both be (n, C)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("mean_average_precision: y_true must be binary (0/1)")
    present = np.flatnonzero(y.any(axis=0))
    if present.size == 0:
        raise ValueError("mean_average_precision: no class has a positive item")
    if present.size < y.shape[1]:
        absent = np.setdiff1d(np.arange(y.shape[1]), present)
        log.warning("mean_average_precision: %d of %d classes have no positive item and are "
                    "left out of the mean: %s", absent.size, y.shape[1], absent[:20].tolist())
    return float(np.mean([average_precision(y[:, c], scores[:, c]) for c in present]))


@dataclasses.dataclass(frozen=True)
class Metric:
    """A named metric. `needs` says what it consumes: "labels" (predicted class per item) or
    "scores" ((n, C) classifier scores). Calling it calls `fn`; `from_scores` takes scores for
    either kind."""

    name: str
    fn: Callable[..., float]
    needs: str

    def __call__(self, y_true, y_pred_or_scores) -> float:
        return self.fn(y_true, y_pred_or_scores)

    def from_scores(self, y_true, scores) -> float:
        """Evaluate from (n, C) scores: argmax predictions for "labels" metrics."""
        scores = np.asarray(scores)
        if self.needs == "labels":
            if scores.ndim != 2:
                raise ValueError(f"{self.name}: scores {scores.shape} must be (n, C)")
            return self.fn(y_true, scores.argmax(axis=1))
        return self.fn(y_true, scores)


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", accuracy, needs="labels"),
    "map": Metric("map", mean_average_precision, needs="scores"),
}


def get_metric(name: str) -> Metric:
    """The metric called `name` (case-insensitive); unknown names list the known ones."""
    if name.lower() not in METRICS:
        raise ValueError(f"metric {name!r} is unknown; choose one of {sorted(METRICS)}")
    return METRICS[name.lower()]
