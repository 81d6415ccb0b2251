"""Statistics that make a results table trustworthy: 95% intervals (Wilson, corrected resampled t,
bootstrap over videos), paired tests (exact McNemar, Nadeau-Bengio corrected resampled t-test,
paired bootstrap for mAP) and a default-choice rule that moves only on p < 0.05
(docs/statistics.md says which test is used for what).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

log = logging.getLogger(__name__)

LEVEL = 0.95            # every interval is a 95% interval unless a caller asks otherwise
ALPHA = 0.05            # a difference is "real" at p < ALPHA (two-sided)
N_BOOT = 2000           # bootstrap resamples: the percentile ends move by ~0.5 points at n ~ 100


# ---------------------------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------------------------
def wilson_interval(k: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval (lo, hi) for a proportion k/n (docs/statistics.md "Intervals").

    k: successes (a count, or n times a pooled rate); n >= 1 trials. Unlike the normal (Wald)
    interval it stays inside [0, 1] and is not degenerate at k = 0 or k = n (Wilson 1927;
    statsmodels.stats.proportion.proportion_confint(method="wilson") gives the same values).
    """
    if n < 1:
        raise ValueError(f"wilson_interval: n={n} trials; need n >= 1")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k={k} successes must lie in [0, n={n}]")
    z = sps.norm.ppf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)     # exact ends, not 1 - 1e-16


def _correction(n_folds: int, n_train: float, n_test: float) -> float:
    """Nadeau & Bengio's variance factor 1/J + n_test/n_train for J resampled splits whose
    training sets overlap (Machine Learning 52, 2003, eq. 18)."""
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"corrected resampled t: n_train={n_train}, n_test={n_test} must be > 0")
    return 1.0 / n_folds + n_test / n_train


def corrected_t_interval(scores: Sequence[float], n_train: float, n_test: float,
                         level: float = LEVEL) -> tuple[float, float]:
    """Interval (lo, hi) for the mean of J per-split scores of (repeated) cross-validation:
    mean -/+ t_{J-1} * sqrt((1/J + n_test/n_train) * s^2), s^2 the sample variance over splits.
    The plain 1/J would treat the splits as independent, which they are not: their training
    sets overlap, so the plain interval is too narrow (Nadeau & Bengio 2003). Clipped to [0, 1].
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"corrected_t_interval: {x.size} split score(s); need at least 2")
    half = sps.t.ppf(0.5 + level / 2, x.size - 1) * math.sqrt(
        _correction(x.size, n_train, n_test) * x.var(ddof=1))
    return max(0.0, float(x.mean() - half)), min(1.0, float(x.mean() + half))


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = N_BOOT,
                       seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval over items: statistic(idx) is evaluated on n_boot seeded
    resamples idx (n,) of range(n) drawn with replacement; resamples where it is undefined (it
    returns nan, e.g. mAP with no positive item) are dropped."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("bootstrap_interval: the statistic is undefined on every resample")
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _ap_columns(y: np.ndarray, scores: np.ndarray) -> float:
    """mAP of scores (n, C) against a binary y (n, C) over the classes with a positive item
    (as pipeline.results.metrics.mean_average_precision, without its warning); nan if none."""
    from pipeline.results.metrics import average_precision
    present = np.flatnonzero(y.any(axis=0))
    if present.size == 0:
        return float("nan")
    return float(np.mean([average_precision(y[:, c], scores[:, c]) for c in present]))


def map_interval(y_true: np.ndarray, scores: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap over videos of mean average precision: y_true (n, C) binary, scores (n, C).
    A resample draws n videos with replacement and keeps every class that has a positive."""
    y, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    return bootstrap_interval(lambda idx: _ap_columns(y[idx], s[idx]), len(y), n_boot=n_boot,
                              seed=seed, level=level)


# ---------------------------------------------------------------------------------------------
# paired tests
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two classifiers on the same n videos: only_a = videos A gets right
    and B wrong, only_b the reverse (the discordant counts); p two-sided."""

    only_a: int
    only_b: int
    n: int
    p: float


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Exact McNemar test on paired per-video correctness (docs/statistics.md "Paired tests").

    Under H0 (equal accuracy) each of the b + c discordant videos favours A with probability
    1/2, so p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]); p = 1 with no discordant
    video. Videos both get right or both get wrong carry no evidence either way.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mcnemar_exact: correctness {a.shape} and {b.shape} must be two (n,) "
                         f"vectors over the same videos")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return McNemar(only_a, only_b, int(a.size), mcnemar_p(only_a, only_b))


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (see mcnemar_exact)."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(only_a, only_b), m, 0.5)))


@dataclasses.dataclass(frozen=True)
class TTest:
    """Corrected resampled t-test over J paired split scores: mean difference (A - B), t, p."""

    mean_diff: float
    t: float
    p: float
    n_splits: int


def corrected_resampled_ttest(scores_a: Sequence[float], scores_b: Sequence[float],
                              n_train: float, n_test: float) -> TTest:
    """Nadeau & Bengio's corrected resampled t-test of two methods scored on the same J splits
    (repeated k-fold CV: J = k * repetitions; docs/statistics.md "Paired tests").

    d_j = a_j - b_j; t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), df = J - 1, p
    two-sided. The n_test/n_train term accounts for the overlap of the training sets, without
    which the t-test's type I error far exceeds its nominal level (Bouckaert & Frank 2004).
    All differences zero: p = 1; equal non-zero differences (var 0): p = 0.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"corrected_resampled_ttest: scores {a.shape} and {b.shape} must be two "
                         f"(J,) vectors over the same J >= 2 splits")
    d = a - b
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0.0:
        return TTest(mean, 0.0 if mean == 0 else math.copysign(math.inf, mean),
                     1.0 if mean == 0 else 0.0, int(d.size))
    t = mean / math.sqrt(_correction(d.size, n_train, n_test) * var)
    return TTest(mean, t, float(2 * sps.t.sf(abs(t), d.size - 1)), int(d.size))


def paired_bootstrap_p(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = N_BOOT,
                       seed: int = 0) -> float:
    """Two-sided p-value of a paired difference statistic(idx) = score_A - score_B on the items
    idx: twice the share of seeded bootstrap resamples on the far side of 0 (ties count half),
    at least 1/n_boot-resolution, at most 1."""
    rng = np.random.default_rng(seed)
    d = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("paired_bootstrap_p: the statistic is undefined on every resample")
    below = (np.sum(d < 0) + 0.5 * np.sum(d == 0)) / d.size
    above = (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / d.size
    return float(min(1.0, 2 * min(below, above)))


def map_paired_p(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *,
                 n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Paired bootstrap over videos of mAP(A) - mAP(B), both scored on the same videos."""
    y = np.asarray(y_true)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    return paired_bootstrap_p(lambda idx: _ap_columns(y[idx], a[idx]) - _ap_columns(y[idx], b[idx]),
                              len(y), n_boot=n_boot, seed=seed)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error across several comparisons)."""
    order = sorted(pvalues, key=pvalues.get)
    out, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        out[name] = running
    return out


# ---------------------------------------------------------------------------------------------
# per-video predictions from ledger records
# ---------------------------------------------------------------------------------------------
def correctness(record: Mapping) -> dict[str, bool]:
    """{video id: predicted class is one of its true classes} from a ledger record's
    `predictions` (pipeline.learn.evaluate.summarise); {} when the record has none."""
    return {p["id"]: int(p["pred"]) in {int(c) for c in p["true"]}
            for p in record.get("predictions") or []}


def score_matrix(record: Mapping) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, y (n, C) binary, scores (n, C)) of a record's predictions (for mAP)."""
    preds = record.get("predictions") or []
    if not preds:
        return [], np.zeros((0, 0)), np.zeros((0, 0))
    n_classes = len(preds[0]["scores"])
    y = np.zeros((len(preds), n_classes), np.uint8)
    for i, p in enumerate(preds):
        y[i, list(p["true"])] = 1
    scores = np.array([p["scores"] for p in preds], dtype=np.float64)
    scores[~np.isfinite(scores)] = -1e30         # a class the head never saw: ranked last
    return [p["id"] for p in preds], y, scores


@dataclasses.dataclass(frozen=True)
class Interval:
    """A score with its 95% interval and how it was obtained (method: "wilson", "bootstrap",
    "corrected t")."""

    score: float
    lo: float
    hi: float
    method: str


def split_interval(record: Mapping, *, seed: int = 0) -> Interval:
    """A split's score with its interval: Wilson on its test videos (accuracy) or the bootstrap
    over its test videos (mAP). Without stored predictions, accuracy falls back to Wilson on
    round(score * n_test) of n_test."""
    score = float(record["score"])
    if record["metric"] == "map":
        ids, y, s = score_matrix(record)
        if not ids:
            return Interval(score, float("nan"), float("nan"), "none")
        return Interval(score, *map_interval(y, s, seed=seed), "bootstrap")
    right = correctness(record)
    n = len(right) or int(record["n_test"])
    k = sum(right.values()) if right else round(score * n)
    return Interval(score, *wilson_interval(k, n), "wilson")


def pooled_interval(records: Sequence[Mapping], *, seed: int = 0) -> Interval:
    """Every split's test predictions pooled (each video counted once: a video tested in r
    splits contributes the mean of its r outcomes, so repeated CV does not count it r times):
    Wilson for accuracy, the bootstrap over videos for mAP (videos of all splits pooled)."""
    if records[0]["metric"] == "map":
        ys, ss = [], []
        for r in records:
            ids, y, s = score_matrix(r)
            if ids:
                ys.append(y)
                ss.append(s)
        if not ys:
            return Interval(float(np.mean([r["score"] for r in records])), float("nan"),
                            float("nan"), "none")
        y, s = np.concatenate(ys), np.concatenate(ss)
        return Interval(_ap_columns(y, s), *map_interval(y, s, seed=seed), "bootstrap")
    outcomes: dict[str, list[bool]] = {}
    for r in records:
        right = correctness(r)
        if not right:                       # no predictions stored: count the score itself
            n = int(r["n_test"])
            k = round(float(r["score"]) * n)
            for i in range(n):
                outcomes.setdefault(f"{r['split']}#{i}", []).append(i < k)
        for vid, ok in right.items():
            outcomes.setdefault(vid, []).append(ok)
    rate = [float(np.mean(v)) for v in outcomes.values()]
    n = len(rate)
    return Interval(float(np.mean(rate)), *wilson_interval(float(np.sum(rate)), n), "wilson")


def splits_interval(records: Sequence[Mapping]) -> Interval | None:
    """The mean over splits with its corrected resampled t interval; None for one split."""
    if len(records) < 2:
        return None
    scores = [float(r["score"]) for r in records]
    n_train = float(np.mean([r["n_train"] for r in records]))
    n_test = float(np.mean([r["n_test"] for r in records]))
    return Interval(float(np.mean(scores)), *corrected_t_interval(scores, n_train, n_test),
                    "corrected t")


@dataclasses.dataclass(frozen=True)
class Paired:
    """Two configurations compared on the videos both scored in one split, or overall.

    score_a/score_b on the common videos; only_a/only_b the discordant counts (accuracy);
    p the two-sided p-value; test: "mcnemar", "bootstrap" (mAP), "corrected t" (over splits)."""

    score_a: float
    score_b: float
    n: int
    only_a: int | None
    only_b: int | None
    p: float
    test: str


def compare_split(a: Mapping, b: Mapping, *, seed: int = 0) -> Paired | None:
    """Paired test of records a and b of one split on the test videos both predicted: exact
    McNemar (accuracy) or the paired bootstrap over videos (mAP); None without predictions."""
    if a["metric"] == "map":
        ia, ya, sa = score_matrix(a)
        ib, _, sb = score_matrix(b)
        common = sorted(set(ia) & set(ib))
        if not common:
            return None
        pa, pb = {v: i for i, v in enumerate(ia)}, {v: i for i, v in enumerate(ib)}
        rows_a, rows_b = [pa[v] for v in common], [pb[v] for v in common]
        y, sa, sb = ya[rows_a], sa[rows_a], sb[rows_b]
        return Paired(_ap_columns(y, sa), _ap_columns(y, sb), len(common), None, None,
                      map_paired_p(y, sa, sb, seed=seed), "bootstrap")
    ra, rb = correctness(a), correctness(b)
    common = sorted(set(ra) & set(rb))
    if not common:
        return None
    test = mcnemar_exact([ra[v] for v in common], [rb[v] for v in common])
    return Paired(float(np.mean([ra[v] for v in common])), float(np.mean([rb[v] for v in common])),
                  len(common), test.only_a, test.only_b, test.p, "mcnemar")


def same_test_videos(a: Mapping, b: Mapping, *, overlap: float = 0.9) -> bool:
    """Whether two records of a split name tested the same videos (a pairing is meaningful): their
    predicted ids overlap by at least `overlap` of the larger set (a few videos missing from one
    configuration are tolerated); True when either stored no predictions (only names to go by).
    Split names alone can mislead: "f1" of fold seed 0 and of fold seed 1 are different videos."""
    ia = {p["id"] for p in a.get("predictions") or []}
    ib = {p["id"] for p in b.get("predictions") or []}
    if not ia or not ib:
        return True
    return len(ia & ib) >= overlap * max(len(ia), len(ib))


def compare_records(a: Sequence[Mapping], b: Sequence[Mapping], *, seed: int = 0,
                    per_split: bool = True) -> tuple[dict[str, Paired | None], Paired | None]:
    """(per split, overall) paired comparisons of two configurations' records (one per split).

    Only splits on which both tested the same videos are paired (same_test_videos); overall, on
    those splits: one split -> that split's test; several -> the corrected
    resampled t-test on the per-split scores (the splits' training sets overlap), with the
    discordant counts summed over the splits for reading (accuracy). per_split=False skips the
    per-split bootstrap of mAP when there are several splits (the overall test does not use it)."""
    by_a, by_b = {r["split"]: r for r in a}, {r["split"]: r for r in b}
    splits = [s for s in by_a if s in by_b and same_test_videos(by_a[s], by_b[s])]
    skip = not per_split and len(splits) > 1 and by_a[splits[0]]["metric"] == "map" if splits \
        else False
    per = {s: None if skip else compare_split(by_a[s], by_b[s], seed=seed) for s in splits}
    if not splits:
        return per, None
    if len(splits) == 1:
        return per, per[splits[0]]
    sa = [float(by_a[s]["score"]) for s in splits]
    sb = [float(by_b[s]["score"]) for s in splits]
    n_train = float(np.mean([by_a[s]["n_train"] for s in splits]))
    n_test = float(np.mean([by_a[s]["n_test"] for s in splits]))
    t = corrected_resampled_ttest(sa, sb, n_train, n_test)
    done = [p for p in per.values() if p is not None]
    only_a = sum(p.only_a for p in done) if done and done[0].only_a is not None else None
    only_b = sum(p.only_b for p in done) if done and done[0].only_b is not None else None
    return per, Paired(float(np.mean(sa)), float(np.mean(sb)), sum(p.n for p in done),
                       only_a, only_b, t.p, "corrected t")


# ---------------------------------------------------------------------------------------------
# defaults that move only on evidence
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of choose_default: the chosen name, whether it moved off the reference,
    the best challenger with its score difference and (adjusted) p, and a sentence why."""

    chosen: str
    moved: bool
    challenger: str | None
    diff: float | None
    p: float | None
    reason: str


def choose_default(reference: str, scores: Mapping[str, float], pvalues: Mapping[str, float], *,
                   alpha: float = ALPHA, adjust: bool = True) -> Decision:
    """Keep `reference` (the paper's choice) unless a challenger scores higher AND its paired
    test against the reference gives p < alpha (docs/statistics.md "Defaults").

    scores: name -> score of every candidate, the reference included; pvalues: challenger ->
    two-sided p of its paired test against the reference. adjust: Holm-adjust the p-values over
    the challengers that score higher (picking the best of many inflates false wins). Among the
    significant challengers the highest-scoring one is chosen. A challenger without a p-value
    cannot be chosen: a higher score alone is never evidence.
    """
    if reference not in scores:
        raise ValueError(f"choose_default: the reference {reference!r} has no score; scores: "
                         f"{sorted(scores)}")
    better = {n: s for n, s in scores.items() if n != reference and s > scores[reference]}
    if not better:
        return Decision(reference, False, None, None, None,
                        f"no candidate scores above {reference}")
    raw = {n: pvalues[n] for n in better if n in pvalues and pvalues[n] is not None
           and np.isfinite(pvalues[n])}
    p = holm(raw) if adjust else dict(raw)
    top = max(better, key=better.get)
    winners = [n for n in better if n in p and p[n] < alpha]
    if not winners:
        diff = better[top] - scores[reference]
        why = (f"{top} scores {100 * diff:+.2f} points but p = {p[top]:.3g} >= {alpha}"
               if top in p else f"{top} scores {100 * diff:+.2f} points but has no paired test")
        return Decision(reference, False, top, diff, p.get(top), f"keep {reference}: {why}")
    best = max(winners, key=better.get)
    diff = better[best] - scores[reference]
    return Decision(best, True, best, diff, p[best],
                    f"{best} beats {reference} by {100 * diff:+.2f} points, p = {p[best]:.3g} "
                    f"< {alpha}{' (Holm-adjusted)' if adjust and len(raw) > 1 else ''}")


def format_p(p: float | None) -> str:
    """A p-value for a table: '' when there is none, '<0.001', else 3 significant digits."""
    if p is None or not np.isfinite(p):
        return ""
    return "<0.001" if p < 1e-3 else f"{p:.3g}"


def format_interval(iv: Interval | None, digits: int = 1) -> str:
    """'[lo, hi]' in percent, '' when unknown."""
    if iv is None or not (np.isfinite(iv.lo) and np.isfinite(iv.hi)):
        return ""
    return f"[{100 * iv.lo:.{digits}f}, {100 * iv.hi:.{digits}f}]"

