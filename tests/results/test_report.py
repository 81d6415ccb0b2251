"""Paper tables from a hand-built ledger: means and std computed by hand, the latest record wins,
name clashes get a key suffix, YUP++ and MPII columns, missing-video notes, CSV."""
from __future__ import annotations

import csv
import io

import pytest

from pipeline.results.ledger import Ledger
from pipeline.results.tables import paper_table, results_table


def rec(split, score, *, method="SO+MaxExp", key="aaaaaa11", dataset="hmdb51", protocol="splits",
        metric="accuracy", missing=(0, 0)) -> dict:
    return dict(dataset=dataset, protocol=protocol, split=split, method=method, metric=metric,
                score=score, n_train=70, n_test=30, n_missing_train=missing[0],
                n_missing_test=missing[1], config={}, config_key=key)


def rows(markdown: str) -> list[list[str]]:
    """The cells of a markdown table's lines (header first, rule dropped)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|") and "---" not in line]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def test_results_table_unchanged():
    table = results_table({"SO": {"sp1": 0.5, "sp2": 0.7, "mean": 0.6}}, metric="accuracy")
    assert rows(table) == [["method (accuracy, %)", "sp1", "sp2", "mean"],
                           ["SO", "50.00", "70.00", "60.00"]]


def test_splits_table_from_a_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for split, score in [("sp1", 0.50), ("sp2", 0.60), ("sp3", 0.70)]:
        ledger.append(rec(split, score, method="SO+MaxExp", key="aaaaaa11"))
    for split, score in [("sp1", 0.40), ("sp2", 0.41), ("sp3", 0.45)]:
        ledger.append(rec(split, score, method="TO+MaxExp+IDT", key="bbbbbb22"))
    ledger.append(rec("sp2", 0.90, method="SO+MaxExp", key="aaaaaa11"))   # a rerun: latest wins
    ledger.append(rec("sp10", 0.30, method="first-order (mean)", key="cccccc33"))
    table = paper_table(ledger.records(dataset="hmdb51"))
    header, so, to, first = rows(table)
    assert header[:6] == ["method (hmdb51, accuracy, %)", "sp1", "sp2", "sp3", "sp10", "mean"]
    assert header[6:] == ["95% CI", "pooled [95% CI]", "p vs first-order", "p vs best", "vs best"]
    so, to, first = so[:6], to[:6], first[:6]
    # SO: (50 + 90 + 70) / 3 = 70, sample std sqrt(((-20)^2 + 20^2 + 0) / 2) = 20
    assert so == ["SO+MaxExp", "50.00", "90.00", "70.00", "", "70.00 ± 20.00 (3/4 splits)"]
    # TO: mean 42, deviations -2, -1, 3 -> std sqrt(14 / 2) = 2.6458
    assert to == ["TO+MaxExp+IDT", "40.00", "41.00", "45.00", "", "42.00 ± 2.65 (3/4 splits)"]
    assert first == ["first-order (mean)", "", "", "", "30.00", "30.00 (1/4 splits)"]
    assert "Unscored" not in table

    parsed = list(csv.reader(io.StringIO(paper_table(ledger.records(), fmt="csv"))))
    assert parsed[0][:7] == ["method", "sp1", "sp2", "sp3", "sp10", "mean", "std"]
    assert parsed[1][:7] == ["SO+MaxExp", "50.00", "90.00", "70.00", "", "70.00", "20.00"]
    assert parsed[0][7:] == ["ci_lo", "ci_hi", "pooled", "pooled_lo", "pooled_hi",
                             "p_first_order", "p_best", "vs_best"]


def test_same_method_name_gets_a_key_suffix():
    records = [rec("sp1", 0.5, key="abcdef0001"), rec("sp1", 0.6, key="abcdef0002"),
               rec("sp1", 0.7, method="other", key="ffffff")]
    names = [row[0] for row in rows(paper_table(records))[1:]]
    assert names == ["SO+MaxExp [abcdef0001]", "SO+MaxExp [abcdef0002]", "other"]


def test_yup_table_columns_and_means():
    records = [rec(s, v, protocol="yup", dataset="yup") for s, v in
               [("static", 0.90), ("dynamic", 0.80), ("mixed", 0.85)]]
    records += [rec("static", 0.5, protocol="yup", dataset="yup", method="partial", key="k2")]
    header, full, partial = rows(paper_table(records))
    assert header[:6] == ["method (yup, accuracy, %)", "static", "dynamic", "mixed",
                          "mean(stat/dyn)", "mean(all)"]
    assert full[:6] == ["SO+MaxExp", "90.00", "80.00", "85.00", "85.00", "85.00"]
    assert partial[:6] == ["partial", "50.00", "", "", "", ""]
    with pytest.raises(ValueError, match="expected only"):
        paper_table([rec("sp1", 0.5, protocol="yup")])


def test_mpii_table_columns_and_map():
    subjects = ["s08", "s10", "s16", "s17", "s18", "s19", "s20"]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    records = [rec(s, v, protocol="mpii", dataset="mpii_cooking", metric="map")
               for s, v in zip(subjects, scores)]
    header, row = rows(paper_table(records))
    assert header[:9] == ["method (mpii_cooking, mAP, %)", *subjects, "mAP"]
    assert row[:9] == ["SO+MaxExp", "10.00", "20.00", "30.00", "40.00", "50.00", "60.00", "70.00",
                       "40.00"]
    parsed = list(csv.reader(io.StringIO(paper_table(records, fmt="csv"))))
    assert parsed[0][:9] == ["method", *subjects, "mAP"] and parsed[1][8] == "40.00"


def test_missing_videos_are_reported():
    records = [rec("sp1", 0.5, missing=(2, 1)), rec("sp2", 0.5)]
    table = paper_table(records)
    assert ("- SO+MaxExp: sp1 scored 70/30, missing 2/1; sp2 scored 70/30, missing 0/0 "
            "(train/test videos)") in table
    parsed = list(csv.reader(io.StringIO(paper_table(records, fmt="csv"))))
    assert parsed[0][-1] == "missing" and "missing 2/1" in parsed[1][-1]


def test_mixed_records_are_refused_with_the_filter_to_use():
    records = [rec("sp1", 0.5), rec("static", 0.5, protocol="yup", dataset="yup")]
    with pytest.raises(ValueError, match=r"Ledger.records\(dataset=\.\.\.\)"):
        paper_table(records)
