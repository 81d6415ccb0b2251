"""Labels, seeded stratified splits and cross-validated choice of a hyper-parameter (C) on the
training part only, with a log grid extended past an edge its winner sits on."""
from __future__ import annotations

import logging
import warnings
from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold


log = logging.getLogger(__name__)


def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """(classes (C,) sorted, codes (n,) int64 in [0, C)); at least two classes."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y has shape {y.shape}; expected one label per sample (n,)")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has {len(classes)} class(es); a classifier needs at least 2")
    return classes, codes.astype(np.int64)


def stratified_holdout(codes, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) into codes (n,), both sorted int64.

    Per class: round(fraction * n_c) samples go to validation, at least 1 and at most n_c - 1
    when n_c >= 2; a class with one sample stays in the fit part (ours). Seeded, deterministic.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction={fraction} must be in [0, 1)")
    codes = np.asarray(codes)
    rng = np.random.default_rng(seed)
    val = []
    if fraction > 0:
        for c in np.unique(codes):
            pos = rng.permutation(np.flatnonzero(codes == c))
            if len(pos) >= 2:
                val.append(pos[:min(len(pos) - 1, max(1, int(round(fraction * len(pos)))))])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    fit = np.setdiff1d(np.arange(len(codes)), val)
    return fit.astype(np.int64), val.astype(np.int64)


def stratified_folds(codes, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified k-fold over codes (n,): [(fit positions, validation positions)].

    k = min(n_folds, the largest class); classes smaller than k are spread as far as they go.
    """
    codes = np.asarray(codes)
    counts = np.bincount(codes)
    k = max(2, min(n_folds, int(counts.max())))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(a.astype(np.int64), b.astype(np.int64))
                for a, b in skf.split(np.zeros((len(codes), 1)), codes)]


def as_grid(value, name: str) -> tuple[float, ...]:
    """A hyper-parameter given as one value or a sequence of candidates -> sorted tuple."""
    values = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else (value,)
    if not values:
        raise ValueError(f"{name}={value!r}: give a value or a non-empty sequence of candidates")
    for v in values:
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) \
                or not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={value!r}: candidates must be finite numbers >= 0")
    return tuple(sorted(float(v) for v in values))


def select_by_cv(codes: np.ndarray, candidates: Sequence[float], score: Callable, *, n_folds: int,
                 seed: int, extend: int = 0, name: str = "C") -> tuple[float, dict]:
    """The candidate with the best mean validation score over seeded stratified folds of the
    training part; score(candidate, fit_positions, val_positions) -> accuracy. Ties: the first
    (smallest) candidate. One candidate: returned without any fitting. -> (choice, {c: mean}).

    extend > 0 (a log-spaced grid such as C): when the winner sits at an end of the grid and
    strictly beats every other candidate, the grid is extended past that end by the ratio of its
    two outermost values, up to `extend` steps per end, until the winner is interior; a winner
    still at an end is logged as a warning with its value (docs/statistics.md "C at the edge").
    """
    if len(candidates) == 1:
        return candidates[0], {}
    if np.bincount(np.asarray(codes)).max() < 2:       # one video per class: nothing to validate on
        middle = 1.0 if 1.0 in candidates else sorted(candidates)[len(candidates) // 2]
        log.warning("every class has one training video: no cross-validation possible; "
                    "using %s from the grid %s", middle, list(candidates))
        return middle, {}
    folds = stratified_folds(codes, n_folds, seed)
    means = {c: float(np.mean([score(c, a, b) for a, b in folds])) for c in candidates}
    grid = sorted(means)
    steps = {"top": 0, "bottom": 0}
    while True:
        best = max(grid, key=lambda c: (means[c], -grid.index(c)))
        others = max(means[c] for c in grid if c != best)
        end = "top" if best == grid[-1] else "bottom" if best == grid[0] else None
        if end is None or means[best] <= others:      # interior, or a plateau reaching inside
            return best, means
        ratio = grid[-1] / grid[-2] if end == "top" else (grid[1] / grid[0] if grid[0] > 0 else 0)
        if steps[end] >= extend or not ratio > 1:
            if extend:
                log.warning("%s=%g is at the %s of the grid %s after %d extension(s) (CV "
                            "accuracy %.4f); widen the grid past it", name, best, end,
                            [float(f"{c:.6g}") for c in grid], steps[end], means[best])
            return best, means
        new = float(f"{(best * ratio if end == 'top' else best / ratio):.6g}")
        means[new] = float(np.mean([score(new, a, b) for a, b in folds]))
        grid = sorted(means)
        steps[end] += 1
        log.info("%s=%g won at the %s of the grid: extended to %g (CV accuracy %.4f vs %.4f)",
                 name, best, end, new, means[new], means[best])


def _grid_of(cv_scores: dict) -> dict:
    """{"C_grid": the candidates select_by_cv scored, sorted} for chosen_params_ ({} without CV)."""
    return {"C_grid": sorted(float(c) for c in cv_scores)} if cv_scores else {}
