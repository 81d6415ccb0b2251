"""Heads (pipeline.learn.heads): registry, float32 chunked row sources (numpy and h5py), SVM/logistic
against scikit-learn, seeded determinism, hyper-parameters chosen on the training part only
(poisoned test labels change nothing), no float64 copy of all rows, and save/load round trips."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, LinearSVC

from pipeline.learn.heads import HEADS, build_head, load_head
from pipeline.learn.rows import RowSource, as_row_source
from pipeline.learn.selection import stratified_folds, stratified_holdout
from pipeline.learn.heads.svm import linear_kernel

FAST = {  # small settings that keep each fit well under a second
    "svm": dict(C=(0.1, 1.0)),
    "logreg": dict(C=(0.1, 1.0)),
    "linear": dict(weight_decay=(0.0, 1e-2), max_epochs=30, patience=5, batch_size=16),
    "mlp": dict(hidden=16, weight_decay=(0.0, 1e-2), max_epochs=30, patience=5, batch_size=16),
}


def _problem(n=120, D=12, C=3, seed=0, noise=1.0):
    """Gaussian classes around random centres: rows (n, D) float32, labels (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((C, D)) * 1.5
    y = np.arange(n) % C
    rng.shuffle(y)
    X = (centres[y] + noise * rng.standard_normal((n, D))).astype(np.float32)
    return X, y


class CountingSource:
    """A RowSource wrapper that records the largest read and the dtypes handed out."""

    def __init__(self, X):
        self.X, self.max_rows, self.calls = X, 0, 0

    def read(self, idx):
        assert np.all(np.diff(idx) > 0), "reads must be strictly increasing (h5py)"
        self.max_rows, self.calls = max(self.max_rows, len(idx)), self.calls + 1
        return self.X[idx]

    def source(self):
        return RowSource(self.read, *self.X.shape)


def test_registry_and_unknown_name():
    assert set(HEADS) == {"svm", "logreg", "linear", "mlp"}
    with pytest.raises(ValueError, match="known: svm, logreg, linear, mlp"):
        build_head("forest")


def test_row_source_reads_h5py_chunkwise_in_any_order(tmp_path):
    X, _ = _problem(n=30)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("descriptors", data=X)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        src = as_row_source(f["descriptors"])
        idx = np.array([5, 3, 3, 29, 0])
        np.testing.assert_array_equal(src.rows(idx), X[idx])
        chunks = list(src.chunks(np.arange(30)[::-1], chunk_mb=4 * 12 * 7 / 2 ** 20))
        assert [c.shape[0] for _, c in chunks] == [7, 7, 7, 7, 2]
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), X[::-1])
        assert all(c.dtype == np.float32 for _, c in chunks)
    fn = as_row_source(lambda idx: X[idx], n_rows=30)
    assert (fn.n_rows, fn.n_features) == (30, 12)
    with pytest.raises(ValueError, match="n_rows"):
        as_row_source(lambda idx: X[idx])


def test_stratified_splits_are_seeded_and_stratified():
    codes = np.repeat([0, 1, 2], [10, 5, 1])
    fit, val = stratified_holdout(codes, 0.2, seed=3)
    assert np.bincount(codes[val], minlength=3).tolist() == [2, 1, 0]  # singleton stays in fit
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(16))
    again = stratified_holdout(codes, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((fit, val), again))
    assert not np.array_equal(val, stratified_holdout(codes, 0.2, seed=4)[1])
    folds = stratified_folds(codes, 3, seed=0)
    assert len(folds) == 3
    assert sorted(np.concatenate([b for _, b in folds]).tolist()) == list(range(16))


@pytest.mark.parametrize("name", list(HEADS))
def test_head_learns_and_scores_have_class_columns(name):
    X, y = _problem()
    head = build_head(name, **FAST[name]).fit(X[:90], y[:90])
    scores = head.decision_function(X[90:])
    assert scores.shape == (30, 3)
    np.testing.assert_array_equal(head.predict(X[90:]), head.classes_[scores.argmax(1)])
    assert np.mean(head.predict(X[90:]) == y[90:]) >= 0.8
    assert set(head.chosen_params_) >= ({"C"} if name in ("svm", "logreg")
                                        else {"weight_decay", "epochs"})


@pytest.mark.parametrize("name", list(HEADS))
def test_binary_and_string_labels(name):
    X, y = _problem(n=60, C=2)
    labels = np.array(["run", "walk"])[y]
    head = build_head(name, **FAST[name]).fit(X, labels)
    assert head.decision_function(X).shape == (60, 2)
    assert set(head.predict(X)) <= {"run", "walk"}
    assert np.mean(head.predict(X) == labels) >= 0.8


@pytest.mark.parametrize("name", list(HEADS))
def test_trained_twice_gives_identical_results(name):
    X, y = _problem()
    a = build_head(name, **FAST[name]).fit(X, y)
    b = build_head(name, **FAST[name]).fit(X, y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert a.chosen_params_ == b.chosen_params_


@pytest.mark.parametrize("name", list(HEADS))
def test_poisoned_test_labels_change_no_choice(name):
    """Hyper-parameters (C, weight decay, epochs) are chosen on the training part only: the
    source serves every row (train and test) and y labels every row, yet replacing every test
    label changes neither the choices nor the scores; poisoning training labels does."""
    X, y = _problem(n=150, noise=2.0)
    train = np.setdiff1d(np.arange(150), np.arange(1, 150, 3))
    test = np.arange(1, 150, 3)
    poisoned = y.copy()
    poisoned[test] = (y[test] + 1) % 3
    fits = [build_head(name, **FAST[name]).fit_stream(X, labels, train)
            for labels in (y, poisoned)]
    assert fits[0].chosen_params_ == fits[1].chosen_params_
    np.testing.assert_array_equal(fits[0].decision_function(X, test),
                                  fits[1].decision_function(X, test))
    if hasattr(fits[0], "cv_scores_"):
        assert fits[0].cv_scores_ == fits[1].cv_scores_
    bad_train = y.copy()
    bad_train[train[:20]] = (y[train[:20]] + 1) % 3
    changed = build_head(name, **FAST[name]).fit_stream(X, bad_train, train)
    assert not np.array_equal(changed.decision_function(X, test),
                              fits[0].decision_function(X, test))


@pytest.mark.parametrize("name,params", [
    ("linear", FAST["linear"]), ("mlp", FAST["mlp"]),
    ("svm", dict(C=(0.1, 1.0), solver="kernel")), ("logreg", FAST["logreg"])])
def test_heads_stream_float32_chunks_and_match_in_memory(name, params, tmp_path):
    """Each read is a chunk, never every row; results equal the in-memory fit (h5py too)."""
    X, y = _problem(n=120, D=16)
    chunk_mb = 16 * 4 * 20 / 2 ** 20  # 20 rows
    counting = CountingSource(X)
    streamed = build_head(name, chunk_mb=chunk_mb, **params).fit_stream(counting.source(), y)
    if name != "logreg":  # lbfgs needs every row each iteration: held in float32 (no float64)
        assert counting.max_rows <= 32 < 120
    in_memory = build_head(name, **params).fit(X, y)
    np.testing.assert_allclose(streamed.decision_function(X), in_memory.decision_function(X),
                               rtol=1e-6, atol=1e-6)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("descriptors", data=X)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        from_h5 = build_head(name, chunk_mb=chunk_mb, **params).fit(f["descriptors"], y)
        np.testing.assert_allclose(from_h5.decision_function(f["descriptors"]),
                                   in_memory.decision_function(X), rtol=1e-6, atol=1e-6)


def test_linear_kernel_chunkwise_equals_dense():
    X, _ = _problem(n=37, D=8)
    Z = X[:11] * 2
    K = linear_kernel(X, chunk_mb=8 * 4 * 5 / 2 ** 20)
    np.testing.assert_allclose(K, X.astype(np.float64) @ X.T.astype(np.float64), atol=1e-10)
    np.testing.assert_array_equal(K, K.T)
    Kxz = linear_kernel(Z, other=X, chunk_mb=8 * 4 * 5 / 2 ** 20)
    np.testing.assert_allclose(Kxz, Z.astype(np.float64) @ X.T.astype(np.float64), atol=1e-10)


def test_svm_liblinear_equals_sklearn_linearsvc():
    X, y = _problem()
    head = build_head("svm", C=0.5, solver="liblinear").fit(X, y)
    ref = LinearSVC(C=0.5, dual="auto", max_iter=10000, random_state=0).fit(X, y)
    np.testing.assert_allclose(head.decision_function(X), ref.decision_function(X), atol=1e-8)
    assert head.chosen_params_ == {"C": 0.5, "solver": "liblinear"}


def test_svm_kernel_solver_equals_one_vs_rest_svc_and_recovers_primal():
    X, y = _problem()
    X64 = X.astype(np.float64)
    head = build_head("svm", C=0.5, solver="kernel").fit(X, y)
    for c in range(3):
        svc = SVC(kernel="linear", C=0.5, tol=1e-4).fit(X64, y == c)
        np.testing.assert_allclose(head.decision_function(X)[:, c], svc.decision_function(X64),
                                   atol=1e-6)
    # the precomputed-kernel head on the same Gram matrix: the fusion path
    K = X64 @ X64.T
    pre = build_head("svm", C=0.5, kernel="precomputed").fit(K, y)
    np.testing.assert_allclose(pre.decision_function(K[:10]), head.decision_function(X[:10]),
                               atol=1e-8)


def test_svm_refuses_a_float64_copy_over_budget_and_auto_switches():
    X, y = _problem(n=60, D=16)  # 60 * 16 * 8 bytes = 7.5 KiB
    budget = 4 / 1024  # 4 KiB
    with pytest.raises(ValueError, match="use solver='kernel'"):
        build_head("svm", solver="liblinear", max_float64_mb=budget).fit(X, y)
    auto = build_head("svm", max_float64_mb=budget).fit(X, y)
    assert auto.chosen_params_["solver"] == "kernel"
    assert build_head("svm").fit(X, y).chosen_params_["solver"] == "liblinear"


def test_logistic_equals_sklearn():
    X, y = _problem()
    head = build_head("logreg", C=2.0).fit(X, y)
    ref = LogisticRegression(C=2.0, tol=1e-4, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(head.decision_function(X), ref.decision_function(X), atol=1e-5)


@pytest.mark.parametrize("name", list(HEADS))
def test_save_load_round_trip_without_pickle(name, tmp_path):
    X, y = _problem()
    head = build_head(name, **FAST[name]).fit(X, np.array(["a", "b", "c"])[y])
    head.save(tmp_path / name)
    names = {p.name for p in (tmp_path / name).iterdir()}
    assert "params.json" in names and names & {"state.pt", "arrays.npz"}
    loaded = load_head(tmp_path / name)
    assert type(loaded) is type(head)
    assert loaded.get_params() == head.get_params()
    assert loaded.chosen_params_ == head.chosen_params_
    np.testing.assert_array_equal(loaded.classes_, head.classes_)
    np.testing.assert_array_equal(loaded.decision_function(X), head.decision_function(X))


def test_precomputed_svm_save_load(tmp_path):
    X, y = _problem(n=60)
    K = X.astype(np.float64) @ X.T
    head = build_head("svm", C=(0.5, 2.0), kernel="precomputed").fit(K, y)
    loaded = load_head(head.save(tmp_path / "svm"))
    np.testing.assert_array_equal(loaded.decision_function(K), head.decision_function(K))
    assert loaded.cv_scores_ == head.cv_scores_


@pytest.mark.parametrize("name", list(HEADS))
def test_a_head_fitted_on_training_coordinates_becomes_the_same_head_on_rows(name, tmp_path):
    """in_basis: a head fitted on z = x rows^T A (evaluate's training coordinates, r << D) is
    made a head on the D-wide rows x with the same scores, and saves and loads as one."""
    from pipeline.learn.scoring import coordinate_basis
    X, y = _problem(n=90, D=40)
    X = X.astype(np.float64)
    train = np.arange(len(X)) < 60
    A = coordinate_basis(X[train] @ X[train].T)
    Z = X @ X[train].T @ A
    head = build_head(name, **FAST[name]).fit(Z[train].astype(np.float32), y[train])
    expected = head.decision_function(Z[~train].astype(np.float32))
    wide = load_head(head.in_basis(X[train].astype(np.float32), A).save(tmp_path / name))
    assert wide.n_features_in_ == 40
    np.testing.assert_allclose(wide.decision_function(X[~train].astype(np.float32)), expected,
                               atol=1e-4 * np.abs(expected).max())


def test_in_basis_refuses_a_precomputed_kernel_svm():
    X, y = _problem(n=30)
    K = X.astype(np.float64) @ X.T
    head = build_head("svm", C=1.0, kernel="precomputed").fit(K, y)
    with pytest.raises(ValueError, match="kernel rows"):
        head.in_basis(X, np.eye(30))
