"""Every table row carries its uncertainty: the interval, paired p-values against the first-order
row and the best row on the same test videos, a mark for rows within noise, the chosen C."""
from __future__ import annotations

import csv
import io

import pytest

from pipeline.results.stats import (corrected_resampled_ttest, format_interval, mcnemar_p,
                                    wilson_interval, Interval)
from pipeline.results.tables import chosen_C, paper_table

pytest.importorskip("statsmodels")
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


def rec(method, key, correct, *, split="sp1", order=2, chosen=None):
    preds = [{"id": f"{split}/v{i}", "true": [0], "pred": 0 if ok else 1, "scores": [1.0, 0.0]}
             for i, ok in enumerate(correct)]
    return dict(dataset="d", protocol="splits", split=split, method=method, metric="accuracy",
                score=sum(correct) / len(correct), n_train=120, n_test=len(correct),
                config={"descriptors": {"order": order}, "evaluate": {"idt": "off"}},
                config_key=key, predictions=preds, chosen=chosen or {})


def cells(markdown):
    lines = [l for l in markdown.splitlines() if l.startswith("|") and "---" not in l]
    table = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines]
    return {row[0]: dict(zip(table[0], row)) for row in table[1:]}


def one_split():
    # 30 test videos. first order: right on 0-17; A: right on 0-25 (8 more, none fewer);
    # B: right on 0-24 and 26 (A only: 25; B only: 26) -> B within noise of A
    first = rec("first-order (mean)", "k1", [i < 18 for i in range(30)], order=1)
    a = rec("SO+MaxExp", "k2", [i < 26 for i in range(30)],
            chosen={"C": 100.0, "C_grid": [0.1, 1.0, 10.0, 100.0]})
    b = rec("SO+SigmE", "k3", [i < 25 or i == 26 for i in range(30)],
            chosen={"C": 10.0, "C_grid": [0.1, 1.0, 10.0, 100.0]})
    return [first, a, b]


def test_one_split_rows_carry_wilson_mcnemar_and_marks():
    table = paper_table(one_split())
    rows = cells(table)
    a, b, first = rows["SO+MaxExp"], rows["SO+SigmE"], rows["first-order (mean)"]
    lo, hi = proportion_confint(26, 30, method="wilson")
    assert a["95% CI"] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    assert a["p vs first-order"] == f"{mcnemar_p(8, 0):.3g}" and mcnemar_p(8, 0) < 0.05
    assert a["vs best"] == "best" and a["p vs best"] == ""
    assert b["p vs best"] == "1" and b["vs best"] == "within noise"       # discordant 1 vs 1
    assert first["p vs first-order"] == "first-order"
    assert first["vs best"] == "worse"                                    # 8 vs 0: p = 0.0078
    assert a["C chosen"] == "100 (1/1); at an end 1/1" and b["C chosen"] == "10 (1/1)"
    assert "within noise: not distinguishable from the best row" in table
    assert "pooled [95% CI]" not in table                                  # one split: no pooling


def test_several_splits_use_the_corrected_t_test():
    records = []
    for s, (nf, na, nb) in enumerate([(18, 26, 25), (20, 27, 22), (17, 25, 26)]):
        split = f"f{s + 1}"
        records += [rec("first", "k1", [i < nf for i in range(30)], split=split, order=1),
                    rec("A", "k2", [i < na for i in range(30)], split=split),
                    rec("B", "k3", [i < nb for i in range(30)], split=split)]
    rows = cells(paper_table(records))
    t = corrected_resampled_ttest([26 / 30, 27 / 30, 25 / 30], [18 / 30, 20 / 30, 17 / 30], 120, 30)
    assert rows["A"]["p vs first-order"] == f"{t.p:.3g}"
    assert rows["A"]["vs best"] == "best" and rows["B"]["vs best"] == "within noise"
    pooled = rows["A"]["pooled [95% CI]"]
    # each of the 90 (split, video) ids is tested once: Wilson on 78 of 90
    assert pooled == f"{100 * 78 / 90:.2f} " + format_interval(Interval(0, *wilson_interval(78, 90),
                                                                       "wilson"))
    parsed = list(csv.reader(io.StringIO(paper_table(records, fmt="csv"))))
    head = parsed[0]
    a = dict(zip(head, parsed[2]))
    assert float(a["ci_lo"]) < float(a["pooled"]) < float(a["ci_hi"])
    assert a["vs_best"] == "best" and float(dict(zip(head, parsed[1]))["p_best"]) < 1


def test_chosen_C_is_blank_without_a_grid():
    assert chosen_C([{"chosen": {"C": 1.0}}]) == ""
    assert chosen_C([{"chosen": {"C": 1.0, "C_grid": [0.1, 1.0, 10.0]}},
                     {"chosen": {"C": 10.0, "C_grid": [0.1, 1.0, 10.0, 100.0]}},
                     {"chosen": {"C": 1.0, "C_grid": [1.0, 10.0]}}]) == "1 (2/3), 10 (1/3); at an end 1/3"


def test_map_rows_get_bootstrap_intervals_and_tests():
    import numpy as np
    rng = np.random.default_rng(0)

    def map_rec(method, key, split, noise, order=2):
        labels = rng.integers(0, 3, 40)
        scores = np.eye(3)[labels] + rng.normal(0, noise, (40, 3))
        preds = [{"id": f"{split}/v{i}", "true": [int(l)], "pred": int(s.argmax()),
                  "scores": [float(v) for v in s]} for i, (l, s) in enumerate(zip(labels, scores))]
        from pipeline.results.metrics import mean_average_precision
        return dict(dataset="mpii", protocol="mpii", split=split, method=method, metric="map",
                    score=mean_average_precision(labels, scores), n_train=100, n_test=40,
                    config={"descriptors": {"order": order}}, config_key=key, predictions=preds)
    one = [map_rec("first-order (mean)", "k1", "s08", 2.0, order=1), map_rec("TO", "k2", "s08", 0.3)]
    rows = cells(paper_table(one))
    lo, hi = (float(v) for v in rows["TO"]["95% CI"].strip("[]").split(","))
    assert lo < 100 * one[1]["score"] < hi
    assert rows["TO"]["vs best"] == "best" and rows["first-order (mean)"]["vs best"] == "worse"
    several = one + [map_rec("first-order (mean)", "k1", "s10", 2.0, order=1),
                     map_rec("TO", "k2", "s10", 0.3)]
    rows = cells(paper_table(several))
    assert rows["TO"]["p vs first-order"] and rows["TO"]["pooled [95% CI]"]
