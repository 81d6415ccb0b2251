"""The C-grid edge rule of select_by_cv: a winner at an end is re-tried one log step further until
interior, or reported with its value; plateaus and interior winners never extend."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.learn.heads import build_head
from pipeline.learn.selection import select_by_cv

CODES = np.repeat([0, 1, 2], 6)


def scorer(peak: float, calls: list):
    """A validation accuracy that peaks at C = peak (log scale) and records which C were tried."""
    def score(C, a, b):
        calls.append(C)
        return 1.0 - 0.05 * abs(np.log10(C) - np.log10(peak))
    return score


def test_top_edge_extends_until_interior():
    calls = []
    C, means = select_by_cv(CODES, (0.1, 1.0, 10.0, 100.0), scorer(1000.0, calls), n_folds=3,
                            seed=0, extend=3)
    assert C == 1000.0
    assert sorted(means) == [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]     # 2 steps: 1e3 then 1e4
    assert max(calls) == 10000.0


def test_bottom_edge_extends_down():
    C, means = select_by_cv(CODES, (0.1, 1.0, 10.0), scorer(0.01, []), n_folds=3, seed=0, extend=3)
    assert C == pytest.approx(0.01) and min(means) == pytest.approx(0.001)


def test_still_at_edge_warns_with_value(caplog):
    with caplog.at_level(logging.WARNING):
        C, means = select_by_cv(CODES, (0.1, 1.0, 10.0, 100.0), scorer(1e9, []), n_folds=3,
                                seed=0, extend=2)
    assert C == 10000.0 and "C=10000 is at the top of the grid" in caplog.text


def test_interior_or_plateau_never_extends():
    calls = []
    C, means = select_by_cv(CODES, (0.1, 1.0, 10.0, 100.0), scorer(10.0, calls), n_folds=3,
                            seed=0, extend=3)
    assert C == 10.0 and sorted(means) == [0.1, 1.0, 10.0, 100.0]
    flat = select_by_cv(CODES, (0.1, 1.0, 10.0), lambda C, a, b: 1.0, n_folds=3, seed=0, extend=3)
    assert flat == (0.1, {0.1: 1.0, 1.0: 1.0, 10.0: 1.0})
    # extend=0 (the heads' default): the old behaviour, the edge value kept
    assert select_by_cv(CODES, (0.1, 1.0), scorer(1e3, []), n_folds=3, seed=0)[0] == 1.0


@pytest.mark.parametrize("name", ["svm", "logreg"])
def test_heads_report_the_searched_grid(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0.5).astype(int)    # imbalanced: a tiny C
                                                                   # predicts the majority only
    head = build_head(name, C=(0.01, 0.1), C_extend=2).fit(X, y)
    grid = head.chosen_params_["C_grid"]
    assert grid == sorted(head.cv_scores_) and head.chosen_params_["C"] in grid
    assert len(grid) > 2            # 0.1 beats 0.01 at the top: the grid grew upwards
