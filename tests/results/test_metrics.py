"""Metrics against scikit-learn on hand-checked cases and random ones (ties included)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, precision_score

from pipeline.results.metrics import (METRICS, accuracy, average_precision, get_metric,
                              labels_to_indicator, mean_average_precision)


def test_accuracy_hand_checked():
    y_true, y_pred = [0, 1, 2, 2], [0, 2, 2, 1]
    assert accuracy(y_true, y_pred) == 0.5 == accuracy_score(y_true, y_pred)
    assert accuracy([3], [3]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="n = 0"):
        accuracy([], [])


def test_average_precision_hand_checked():
    # ranks: + - + -  -> precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    y, s = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    assert average_precision(y, s) == pytest.approx(5 / 6)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_average_precision_ties_form_one_threshold():
    # the top two tie: at that threshold P = 1/2, R = 1/2; then P = 2/3, R = 1
    y, s = [1, 0, 1], [0.5, 0.5, 0.2]
    assert average_precision(y, s) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_map_is_true_ap_not_macro_precision():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    expected = np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(2)])
    assert mean_average_precision(y, scores) == pytest.approx(expected)
    macro_precision = precision_score(y.argmax(1), scores.argmax(1), average="macro")
    assert not np.isclose(mean_average_precision(y, scores), macro_precision)
    assert mean_average_precision(y.argmax(1), scores) == mean_average_precision(y, scores)


def test_map_leaves_out_classes_without_positives(caplog):
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.2, 0.3, 0.9], [0.1, 0.8, 0.2], [0.7, 0.4, 0.3]])
    with caplog.at_level(logging.WARNING):
        value = mean_average_precision(y, scores)
    assert "1 of 3 classes have no positive item" in caplog.text and "[2]" in caplog.text
    assert value == pytest.approx(average_precision_score(y[:, :2], scores[:, :2],
                                                          average="macro"))
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(np.zeros((2, 2)), np.ones((2, 2)))


def test_map_input_checks():
    with pytest.raises(ValueError, match=r"must both be \(n, C\)"):
        mean_average_precision(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="binary"):
        mean_average_precision(np.full((2, 2), 2), np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision(np.eye(2), np.array([[np.nan, 0], [0, 1]]))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4), st.integers(0, 2**31 - 1), st.booleans())
def test_map_matches_sklearn_on_random_multilabel_data(n, c, seed, ties):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.4).astype(int)
    y[rng.integers(n, size=c), np.arange(c)] = 1                   # every class has a positive
    scores = rng.integers(0, 3, (n, c)).astype(float) if ties else rng.normal(size=(n, c))
    expected = average_precision_score(y, scores, average="macro")
    assert mean_average_precision(y, scores) == pytest.approx(expected, abs=1e-12)


def test_registry_says_what_each_metric_consumes():
    assert set(METRICS) == {"accuracy", "map"}
    assert METRICS["accuracy"].needs == "labels" and METRICS["map"].needs == "scores"
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4]])
    assert METRICS["accuracy"]([1, 0, 1], [1, 0, 0]) == pytest.approx(2 / 3)
    assert METRICS["accuracy"].from_scores([1, 0, 1], scores) == pytest.approx(2 / 3)
    assert METRICS["map"].from_scores([1, 0, 1], scores) == mean_average_precision([1, 0, 1],
                                                                                   scores)
    assert get_metric("MAP") is METRICS["map"]
    with pytest.raises(ValueError, match=r"'top5' is unknown; choose one of \['accuracy', 'map'\]"):
        get_metric("top5")


def test_labels_to_indicator():
    out = labels_to_indicator([(0,), (1, 2), ()], 3)
    assert out.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert labels_to_indicator(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"item 0 \(\[3\]\) must lie in \[0, 3\)"):
        labels_to_indicator([(3,)], 3)
