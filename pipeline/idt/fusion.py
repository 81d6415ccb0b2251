"""Fusion of HoT and IDT (docs/method.md, "IDT and fusion"): a weighted sum of their linear
kernels, K = (1 - a) K_hot + a K_idt, or of their classifiers' scores, with the weight a chosen by
stratified, seeded cross-validation on the training part only, of the classifier `scorer` gives
(make evaluate passes the very SVM that scores HoT alone, C chosen the same way, so that a fusion
row's gain is the fusion's alone; without one, an SVC(kernel="precomputed", C)).

The kernels should be on comparable scales (e.g. of l2-normalised features: unit diagonals),
else a only compensates for the scale.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

log = logging.getLogger(__name__)

MODES = ("kernel", "late")
DEFAULT_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))   # a = 0, 0.1, ..., 1
# scorer(K_train (n, n), y_train (n,), K_val (m, n)) -> (classes (C,), decision scores (m, C) or
# (m,) for two classes): a classifier on a precomputed kernel, fitted on the first rows
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def svc_scorer(C: float = 1.0) -> Scorer:
    """The hinge-loss SVC(kernel="precomputed", C) as a Scorer."""
    def score(k_train, y_train, k_val):
        svc = SVC(kernel="precomputed", C=C).fit(k_train, y_train)
        return svc.classes_, svc.decision_function(k_val)
    return score


def fuse_kernels(k_hot: np.ndarray, k_idt: np.ndarray, weight: float) -> np.ndarray:
    """(1 - a) K_hot + a K_idt for kernels of the same shape (n, m)."""
    _check_weight(weight)
    if np.shape(k_hot) != np.shape(k_idt):
        raise ValueError(f"kernel shapes differ: K_hot {np.shape(k_hot)}, K_idt {np.shape(k_idt)}")
    return (1.0 - weight) * np.asarray(k_hot) + weight * np.asarray(k_idt)


def fuse_scores(s_hot: np.ndarray, s_idt: np.ndarray, weight: float) -> np.ndarray:
    """Late fusion (1 - a) S_hot + a S_idt of classifier scores of the same shape ((n,) or
    (n, classes), e.g. SVC.decision_function)."""
    _check_weight(weight)
    if np.shape(s_hot) != np.shape(s_idt):
        raise ValueError(f"score shapes differ: {np.shape(s_hot)} and {np.shape(s_idt)}")
    return (1.0 - weight) * np.asarray(s_hot) + weight * np.asarray(s_idt)


def _check_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight a={weight} must be in [0, 1]")


def _predict(classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Labels from SVC decision scores: (n,) binary (positive = classes[1]) or (n, C)
    one-vs-rest."""
    if scores.ndim == 1:
        return classes[(scores > 0).astype(int)]
    return classes[np.argmax(scores, axis=1)]


def cross_validate_weights(k_hot: np.ndarray, k_idt: np.ndarray, y: np.ndarray, *,
                           mode: str = "kernel", weights=DEFAULT_WEIGHTS, C: float = 1.0,
                           n_splits: int = 5, seed: int = 0,
                           scorer: Scorer | None = None) -> np.ndarray:
    """Mean cross-validated accuracy (len(weights),) of each weight a.

    k_hot, k_idt: (n, n) linear kernels among the training videos only; y: (n,) labels.
    Stratified folds (shuffled with `seed`; n_splits capped by the smallest class). mode="kernel":
    one classifier on the fused kernel; mode="late": one per kernel, their decision scores fused.
    scorer: the classifier (default svc_scorer(C)).
    """
    scorer = svc_scorer(C) if scorer is None else scorer
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {list(MODES)}")
    k_hot, k_idt, y = np.asarray(k_hot, float), np.asarray(k_idt, float), np.asarray(y)
    n = len(y)
    if k_hot.shape != (n, n) or k_idt.shape != (n, n):
        raise ValueError(f"kernels must be (n, n) = ({n}, {n}) over the training videos; got "
                         f"K_hot {k_hot.shape}, K_idt {k_idt.shape}")
    for a in weights:
        _check_weight(a)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    splits = min(n_splits, smallest)
    if splits < 2:
        raise ValueError(f"cross-validation needs >= 2 training videos per class; the smallest "
                         f"class has {smallest}")
    folds = StratifiedKFold(splits, shuffle=True, random_state=seed).split(np.zeros(n), y)
    correct = np.zeros(len(weights))
    for train, val in folds:
        sub = lambda K, rows: K[np.ix_(rows, train)]  # noqa: E731
        if mode == "kernel":
            for i, a in enumerate(weights):
                K = fuse_kernels(k_hot, k_idt, a)
                classes, scores = scorer(sub(K, train), y[train], sub(K, val))
                correct[i] += np.sum(_predict(classes, scores) == y[val])
        else:
            scores = []
            for K in (k_hot, k_idt):
                classes, s = scorer(sub(K, train), y[train], sub(K, val))
                scores.append(s)
            for i, a in enumerate(weights):
                pred = _predict(classes, fuse_scores(scores[0], scores[1], a))
                correct[i] += np.sum(pred == y[val])
    return correct / n


def select_fusion_weight(k_hot: np.ndarray, k_idt: np.ndarray, y: np.ndarray, *,
                         mode: str = "kernel", weights=DEFAULT_WEIGHTS, C: float = 1.0,
                         n_splits: int = 5, seed: int = 0,
                         scorer: Scorer | None = None) -> tuple[float, np.ndarray]:
    """(best weight a, accuracies (len(weights),)) by cross_validate_weights on the training
    kernels. Among tied best weights the middle one is taken (of two middles, the one nearer
    0.5): the centre of a plateau of equally good weights, and symmetric in a <-> 1 - a."""
    acc = cross_validate_weights(k_hot, k_idt, y, mode=mode, weights=weights, C=C,
                                 n_splits=n_splits, seed=seed, scorer=scorer)
    w = np.asarray(weights, dtype=float)
    best = np.flatnonzero(np.isclose(acc, acc.max()))
    best = best[np.argsort(w[best], kind="stable")]
    middle = best[[(len(best) - 1) // 2, len(best) // 2]]
    pick = middle[np.argmin(np.abs(w[middle] - 0.5))]
    log.info("fusion (%s): a=%.2f, cross-validated accuracy %.3f", mode, w[pick], acc[pick])
    return float(w[pick]), acc
