"""Intervals and paired tests against scipy/statsmodels on fixed examples, McNemar on hand-counted
discordant pairs, and the default-choice rule that refuses to move without p < 0.05."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.results.metrics import mean_average_precision
from pipeline.results.stats import (ALPHA, choose_default, compare_records, compare_split,
                                    corrected_resampled_ttest, corrected_t_interval, holm,
                                    map_interval, map_paired_p, mcnemar_exact, mcnemar_p,
                                    pooled_interval, split_interval, splits_interval,
                                    wilson_interval)

statsmodels = pytest.importorskip("statsmodels")
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (7, 10), (88, 100), (1, 3), (49, 150)])
def test_wilson_matches_statsmodels(k, n):
    lo, hi = wilson_interval(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"k=11 successes must lie in \[0, n=10\]"):
        wilson_interval(11, 10)


def test_mcnemar_hand_counted():
    # 10 videos: A right on 1-8, B right on 0-2 and 9 -> A only: 3..8 (6), B only: 0, 9 (2)
    a = [False] + [True] * 8 + [False]
    b = [True, True, True] + [False] * 6 + [True]
    test = mcnemar_exact(a, b)
    assert (test.only_a, test.only_b, test.n) == (6, 2, 10)
    # P[Bin(8, 1/2) <= 2] = (1 + 8 + 28) / 256, two-sided: 74/256
    assert test.p == pytest.approx(74 / 256)
    table = [[1, 2], [6, 1]]        # rows: A wrong/right; columns: B wrong/right (both right: 1+1)
    assert test.p == pytest.approx(sm_mcnemar(table, exact=True).pvalue)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 5), (3, 3), (1, 12), (20, 7), (40, 61)])
def test_mcnemar_matches_statsmodels(b, c):
    assert mcnemar_p(b, c) == pytest.approx(sm_mcnemar([[5, b], [c, 9]], exact=True).pvalue)


def test_mcnemar_rejects_unpaired():
    with pytest.raises(ValueError, match="same videos"):
        mcnemar_exact([True, False], [True])


def test_corrected_t_test_against_scipy_and_by_hand():
    a = np.array([0.90, 0.86, 0.93, 0.88, 0.95, 0.91, 0.87, 0.92, 0.89, 0.94])
    b = np.array([0.88, 0.85, 0.90, 0.89, 0.91, 0.90, 0.85, 0.90, 0.88, 0.90])
    d = a - b
    n_train, n_test = 120, 30
    t = corrected_resampled_ttest(a, b, n_train, n_test)
    by_hand = d.mean() / math.sqrt((1 / 10 + 30 / 120) * d.var(ddof=1))
    assert t.t == pytest.approx(by_hand)
    assert t.p == pytest.approx(2 * sps.t.sf(abs(by_hand), 9))
    # the correction only widens: the plain paired t-test (scipy) is the 1/J case
    plain = sps.ttest_rel(a, b)
    assert t.t == pytest.approx(plain.statistic * math.sqrt((1 / 10) / (1 / 10 + 30 / 120)))
    assert t.p > plain.pvalue
    assert corrected_resampled_ttest(a, a, n_train, n_test).p == 1.0
    assert corrected_resampled_ttest(a, a - 0.01, n_train, n_test).p == 0.0


def test_corrected_t_interval_against_scipy():
    x = np.array([0.92, 0.88, 0.95, 0.90, 0.93])
    lo, hi = corrected_t_interval(x, 120, 30)
    scale = math.sqrt((1 / 5 + 30 / 120) * x.var(ddof=1))
    ref = sps.t.interval(0.95, 4, loc=x.mean(), scale=scale)
    assert (lo, hi) == pytest.approx(ref)
    plain = sps.t.interval(0.95, 4, loc=x.mean(), scale=sps.sem(x))
    assert hi - lo > plain[1] - plain[0]
    with pytest.raises(ValueError, match="at least 2"):
        corrected_t_interval([0.9], 10, 5)


def _map_case(seed=0, n=60, c=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    y = np.eye(c, dtype=np.uint8)[labels]
    good = y + rng.normal(0, 0.6, (n, c))
    bad = y + rng.normal(0, 1.5, (n, c))
    return y, good, bad


def test_map_interval_matches_scipy_bootstrap():
    y, s, _ = _map_case()
    lo, hi = map_interval(y, s, n_boot=3000, seed=1)
    ref = sps.bootstrap((np.arange(len(y)),),
                        lambda i: mean_average_precision(y[i.astype(int)], s[i.astype(int)]),
                        vectorized=False, n_resamples=3000, method="percentile",
                        random_state=np.random.default_rng(2)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.02) and hi == pytest.approx(ref.high, abs=0.02)
    assert lo < mean_average_precision(y, s) < hi


def test_map_paired_bootstrap_separates_and_refuses():
    y, good, bad = _map_case(n=120)
    assert map_paired_p(y, good, bad, n_boot=1000) < 0.01
    y2, good2, _ = _map_case(seed=3, n=40)
    noisy = good2 + np.random.default_rng(4).normal(0, 0.05, good2.shape)
    assert map_paired_p(y2, good2, noisy, n_boot=1000) > 0.2


def test_holm_matches_statsmodels():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}
    ref = multipletests(list(p.values()), method="holm")[1]
    assert list(holm(p).values()) != []
    assert [holm(p)[k] for k in p] == pytest.approx(list(ref))


def _record(split, correct, *, n_train=120, prefix="v"):
    preds = [{"id": f"{prefix}{i}", "true": [0], "pred": 0 if ok else 1, "scores": [1.0, 0.0]}
             for i, ok in enumerate(correct)]
    return {"split": split, "metric": "accuracy", "score": float(np.mean(correct)),
            "n_train": n_train, "n_test": len(correct), "predictions": preds}


def test_split_and_pooled_intervals():
    r = _record("f1", [True] * 27 + [False] * 3)
    iv = split_interval(r)
    assert (iv.lo, iv.hi) == pytest.approx(proportion_confint(27, 30, method="wilson"))
    # two repetitions of CV over the same 30 videos: each video counts once, not twice
    r2 = _record("f2", [True] * 24 + [False] * 6)
    pooled = pooled_interval([r, r2])
    assert pooled.score == pytest.approx(51 / 60)
    assert (pooled.lo, pooled.hi) == pytest.approx(proportion_confint(25.5, 30, method="wilson"))
    assert splits_interval([r]) is None
    assert splits_interval([r, r2]).method == "corrected t"


def test_compare_split_and_overall():
    a = [_record("f1", [True] * 20 + [False] * 10, prefix="a"),
         _record("f2", [True] * 25 + [False] * 5, prefix="b")]
    b = [_record("f1", [True] * 12 + [False] * 18, prefix="a"),
         _record("f2", [True] * 15 + [False] * 15, prefix="b")]
    per, overall = compare_records(a, b)
    assert (per["f1"].only_a, per["f1"].only_b) == (8, 0)
    assert per["f1"].p == pytest.approx(mcnemar_p(8, 0))
    assert overall.test == "corrected t" and (overall.only_a, overall.only_b) == (18, 0)
    assert overall.p == pytest.approx(corrected_resampled_ttest([20 / 30, 25 / 30],
                                                                [12 / 30, 15 / 30], 120, 30).p)
    one = compare_split(a[0], b[0])
    assert one.test == "mcnemar" and one.n == 30


def test_choose_default_refuses_without_significance():
    scores = {"paper": 0.90, "ours": 0.95}
    d = choose_default("paper", scores, {"ours": 0.2})
    assert d.chosen == "paper" and not d.moved and "p = 0.2" in d.reason
    assert choose_default("paper", scores, {}).chosen == "paper"          # no test, no move
    moved = choose_default("paper", scores, {"ours": 0.01})
    assert moved.chosen == "ours" and moved.moved and moved.p == pytest.approx(0.01)
    # worse but "significant" never wins
    assert choose_default("paper", {"paper": 0.9, "x": 0.8}, {"x": 1e-6}).chosen == "paper"
    # best of many: Holm's adjustment keeps a lone p = 0.03 among 3 challengers from winning
    many = {"paper": 0.9, "a": 0.95, "b": 0.94, "c": 0.93}
    assert choose_default("paper", many, {"a": 0.03, "b": 0.5, "c": 0.6}).chosen == "paper"
    assert choose_default("paper", many, {"a": 0.03, "b": 0.5, "c": 0.6},
                          adjust=False).chosen == "a"
    with pytest.raises(ValueError, match="reference 'nope' has no score"):
        choose_default("nope", scores, {})
    assert ALPHA == 0.05


def test_splits_of_the_same_name_on_other_videos_are_not_paired():
    a = [_record("f1", [True] * 20 + [False] * 10, prefix="a")]
    b = [_record("f1", [True] * 12 + [False] * 18, prefix="z")]     # another seed's f1
    per, overall = compare_records(a, b)
    assert per == {} and overall is None
    c = [_record("f1", [True] * 12 + [False] * 17, prefix="a")]     # one video missing: paired
    assert compare_records(a, c)[1].n == 29
