"""Evaluation heads on cached descriptors: the training-span shortcut gives the same scores as
the full-width model, and paper-style names."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig
from pipeline.evaluate import fit_scores, method_name
from pipeline.heads import build_head


@pytest.mark.parametrize("head, C", [("svm", 1.0), ("svm", (0.1, 1.0, 10.0)), ("logreg", 1.0)])
def test_training_span_gives_the_full_width_scores(head, C):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 500))
    y = np.eye(3, dtype=int)[rng.integers(0, 3, 60)]
    x[:, :3] += 0.5 * y
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    train = np.arange(60) < 40
    fast, _ = fit_scores(x, y, train, ~train, metric="accuracy", cfg=EvaluateConfig(head=head, C=C))
    full = build_head(head, C=C, seed=0).fit(x[train], y[train].argmax(1)).decision_function(x[~train])
    np.testing.assert_allclose(fast, full, atol=1e-3)
    assert (fast.argmax(1) == full.argmax(1)).all()


def test_paper_style_names():
    e = ExtractConfig()
    assert method_name(e, DescriptorConfig(order=2, epn="maxexp")) == "SO+MaxExp"
    assert method_name(e, DescriptorConfig(order=3, epn="none")) == "TO (no EPN)"
    assert method_name(e, DescriptorConfig(order=1)) == "first-order (mean)"
    assert method_name(e, DescriptorConfig(order=3), EvaluateConfig(idt="on")) == "TO+MaxExp+IDT"
    assert method_name(e, DescriptorConfig(), EvaluateConfig(idt="only")) == "IDT (Fisher vectors)"
    assert method_name(e, DescriptorConfig(), EvaluateConfig(name="mine")) == "mine"
