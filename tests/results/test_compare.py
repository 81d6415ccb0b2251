"""`make compare`: two ledger configurations per split and overall (intervals, discordant counts,
p), a report section against its best row, and clear errors for names that match nothing or
several configurations."""
from __future__ import annotations

import pytest

from pipeline.results.compare import (compare_section, compare_two, find_configuration,
                                      group_configurations)
from pipeline.results.ledger import Ledger
from pipeline.results.stats import corrected_resampled_ttest, mcnemar_p
from stages import compare as stage

pytest.importorskip("statsmodels")
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


def rec(method, key, split, right, *, order=2, n=30):
    preds = [{"id": f"{split}/v{i}", "true": [0], "pred": 0 if i in right else 1,
              "scores": [1.0, 0.0]} for i in range(n)]
    return dict(dataset="folder-clips", protocol="splits", split=split, method=method,
                metric="accuracy", score=len(right) / n, n_train=120, n_test=n, config_key=key,
                config={"descriptors": {"order": order}, "evaluate": {"idt": "off"}},
                predictions=preds)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    # f1: first order right on 0-17, SO on 0-25 -> only SO: 18-25 (8), only first: none
    # f2: first order right on 0-19 and 29, SO on 0-24 -> only SO: 20-24 (5), only first: 29 (1)
    led.append(rec("first-order (mean)", "aaaa1111", "f1", set(range(18)), order=1))
    led.append(rec("first-order (mean)", "aaaa1111", "f2", set(range(20)) | {29}, order=1))
    led.append(rec("SO+MaxExp", "bbbb2222", "f1", set(range(26))))
    led.append(rec("SO+MaxExp", "bbbb2222", "f2", set(range(25))))
    led.append(rec("SO+MaxExp", "cccc3333", "f1", set(range(25))))
    return led


def test_compare_two_per_split_and_overall(ledger):
    configs = group_configurations(ledger.records())
    text = compare_two(configs["bbbb2222"], configs["aaaa1111"])
    lines = {l.split("|")[1].strip(): [c.strip() for c in l.strip().strip("|").split("|")]
             for l in text.splitlines() if l.startswith("| ")}
    f1, f2 = lines["f1"], lines["f2"]
    assert f1[4:8] == ["8", "0", f"{mcnemar_p(8, 0):.3g}", "mcnemar"]
    assert f2[4:8] == ["5", "1", f"{mcnemar_p(5, 1):.3g}", "mcnemar"]
    lo, hi = proportion_confint(26, 30, method="wilson")
    assert f1[2] == f"86.67 [{100 * lo:.1f}, {100 * hi:.1f}]"
    overall = lines["overall (mean of 2 splits)"]
    t = corrected_resampled_ttest([26 / 30, 25 / 30], [18 / 30, 21 / 30], 120, 30)
    assert overall[4:8] == ["13", "1", f"{t.p:.3g}", "corrected t"]
    pooled = lines["pooled predictions"]
    assert pooled[4:7] == ["13", "1", f"{mcnemar_p(13, 1):.3g}"]
    assert "A scores" in text and "points higher" in text


def test_find_configuration_by_key_or_name(ledger):
    configs = group_configurations(ledger.records())
    assert find_configuration(configs, "first-order (mean)", what="a") == "aaaa1111"
    assert find_configuration(configs, "cccc", what="a") == "cccc3333"
    with pytest.raises(ValueError, match="a='SO\\+MaxExp' names 2 configurations"):
        find_configuration(configs, "SO+MaxExp", what="a")
    with pytest.raises(ValueError, match="b='zzz' names no configuration"):
        find_configuration(configs, "zzz", what="b")


def test_section_lists_every_row_against_the_best(ledger):
    configs = group_configurations(ledger.records())
    text = compare_section(configs, "folder-clips (splits, accuracy)")
    assert "every row against the best, SO+MaxExp [bbbb2222" in text
    assert "| first-order (mean) [aaaa1111] | 2 |" in text
    with pytest.raises(ValueError, match="sections: \\['folder-clips \\(splits, accuracy\\)'\\]"):
        compare_section(configs, "nope (splits, accuracy)")


def test_stage_prints_and_fails_clearly(ledger, capsys, caplog):
    path = f"ledger={str(ledger.path)!r}"
    assert stage.main(["a=bbbb2222", "b=aaaa1111", path]) == 0
    out = capsys.readouterr().out
    assert "| f1 | 30 |" in out and "corrected t" in out
    assert stage.main(["section=folder-clips (splits, accuracy)", path]) == 0
    assert "against the best" in capsys.readouterr().out
    assert stage.main(["a=bbbb2222", path]) == 2                      # b missing
    assert stage.main(["a=SO+MaxExp", "b=aaaa", path]) == 2           # ambiguous name
    assert "names 2 configurations" in caplog.text
    assert stage.main(["a=x", "b=y", "ledger='/nonexistent/ledger.sqlite'"]) == 2
    assert "no results ledger" in caplog.text
