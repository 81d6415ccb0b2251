"""sklearn API of pipeline.pooling.transformers: params, fitted state, clone, and a Pipeline of count
sketch -> HoT pooling -> LinearSVC that fits and predicts on separable synthetic videos."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from pipeline.pooling import epn as E
from pipeline.pooling import packing as PK
from pipeline.pooling import tensor_pool as TP
from pipeline.pooling.transformers import CountSketchTransformer, HighOrderPooling


def _videos(n_per_class=12, D=30, seed=0):
    """Two classes of videos whose windows scatter around different directions; N varies."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2, D)) * 2
    X, y = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            n = int(rng.integers(4, 9))
            X.append(centers[label] + rng.standard_normal((n, D)))
            y.append(label)
    return X, np.array(y)


def test_count_sketch_transformer_params_fit_transform():
    X, _ = _videos()
    t = CountSketchTransformer(out_dim=8, seed=3)
    assert t.get_params() == {"out_dim": 8, "seed": 3}
    with pytest.raises(NotFittedError):
        t.transform(X)
    assert t.fit(X) is t
    assert t.in_dim_ == 30 and t.sketch_.seed == 3
    out = t.transform(X)
    assert isinstance(out, list) and [o.shape for o in out] == [(len(v), 8) for v in X]
    np.testing.assert_array_equal(out[0], t.sketch_.transform(X[0]))
    flat = CountSketchTransformer(out_dim=8, seed=3).fit(X[0])  # one 2-D array
    assert flat.n_features_in_ == 30
    np.testing.assert_array_equal(flat.transform(X[0]), out[0])
    bad = CountSketchTransformer(out_dim=0)  # __init__ only stores
    with pytest.raises(ValueError, match="out_dim=0"):
        bad.fit(X)
    with pytest.raises(ValueError, match="disagree"):
        t.fit([X[0], X[1][:, :5]])


def test_high_order_pooling_output_and_frobenius_kernel():
    X, _ = _videos(n_per_class=2, D=5)
    X = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in X]
    for order in (2, 3):
        hop = HighOrderPooling(order=order, epn="maxexp").fit(X)
        assert hop.d_ == 5 and hop.n_features_out_ == PK.n_unique(5, order)
        Z = hop.transform(X)
        assert Z.shape == (4, PK.n_unique(5, order))
        # linear kernel of the outputs == Frobenius inner product of the EPN tensors
        G = [(E.epn_so if order == 2 else E.epn_to)(TP.pool(x, order), "maxexp", n_windows=len(x))
             for x in X]
        np.testing.assert_allclose(Z @ Z.T, [[np.sum(a * b) for b in G] for a in G],
                                   rtol=1e-9, atol=1e-12)
        raw = HighOrderPooling(order=order, frobenius=False).fit_transform(X)
        np.testing.assert_allclose(raw, TP.hot_descriptors(X, order=order), rtol=0, atol=0)


def test_high_order_pooling_validation_and_stateless_tag():
    X, _ = _videos(n_per_class=1, D=4)
    hop = HighOrderPooling(order=7, epn="nope")  # __init__ only stores
    assert hop.get_params()["order"] == 7
    with pytest.raises(ValueError, match="order=7"):
        hop.fit(X)
    with pytest.raises(ValueError, match="epn='nope' is unknown"):
        HighOrderPooling(epn="nope").fit(X)
    with pytest.raises(ValueError, match="gamma=3"):
        HighOrderPooling(epn="gamma", epn_params={"gamma": 3}).fit(X)
    with pytest.raises(ValueError, match="spectrum_norm='l2'"):
        HighOrderPooling(spectrum_norm="l2").fit(X)
    # stateless: requires_fit=False, so transform works without fit
    np.testing.assert_array_equal(HighOrderPooling().transform(X),
                                  HighOrderPooling().fit(X).transform(X))
    fitted = HighOrderPooling().fit(X)
    with pytest.raises(ValueError, match="fitted with d=4"):
        fitted.transform([x[:, :3] for x in X])


def test_pipeline_with_linear_svc_fits_predicts_and_clones():
    X, y = _videos()
    pipe = Pipeline([("sketch", CountSketchTransformer(out_dim=8, seed=0)),
                     ("hot", HighOrderPooling(order=2, epn="maxexp", center=False)),
                     ("svm", LinearSVC(C=10.0, max_iter=20000))])
    pipe.fit(X[::2], y[::2])
    assert (pipe.predict(X[1::2]) == y[1::2]).mean() >= 0.9
    twin = clone(pipe)
    assert twin.get_params()["hot__order"] == 2 and twin.get_params()["sketch__out_dim"] == 8
    with pytest.raises(NotFittedError):
        twin.named_steps["sketch"].transform(X)
    twin.set_params(hot__order=3, sketch__out_dim=6)
    twin.fit(X[::2], y[::2])
    assert twin.named_steps["hot"].n_features_out_ == PK.n_unique(6, 3)
    assert (twin.predict(X[1::2]) == y[1::2]).mean() >= 0.9
    np.testing.assert_array_equal(clone(pipe).fit(X[::2], y[::2]).predict(X), pipe.predict(X))
