"""Evaluation heads on cached descriptors: the Gram matrix accumulated in slabs equals that of the
prepared rows, the kernel coordinates give the same scores as the full-width models (and as the
earlier full-width evaluation path), and paper-style names."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from pipeline.learn import scoring as scoring_module
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.datasets import TEST, TRAIN
from pipeline.pooling.descriptors import compute_descriptors, descriptors_dir, load_view
from pipeline.learn.evaluate import evaluate
from pipeline.learn.naming import method_name
from pipeline.learn.scoring import (Gram, fit_scores, fused_scores, gram_matrix, label_matrix, prepare,
                                    training_coordinates)
from pipeline.extract.features import extract_features
from pipeline.learn.heads import build_head
from pipeline.pooling.packing import n_unique


def full_width_scores(x, y, train, test, *, metric, cfg):
    """The evaluation before the Gram form (reference): the D-wide prepared rows, the SVM and
    logistic regression through an orthonormal basis of the training rows (QR)."""
    C = cfg.C if not isinstance(cfg.C, tuple) else cfg.C[0]
    if metric == "map":
        clf = OneVsRestClassifier(LinearSVC(C=C, dual="auto", max_iter=10000))
        clf.fit(x[train], y[train])
        return clf.decision_function(x[test])
    if cfg.head in ("svm", "logreg") and x.shape[1] > train.sum():
        x = x @ np.linalg.qr(x[train].T)[0]
    params = {"C": cfg.C} if cfg.head in ("svm", "logreg") else {}
    head = build_head(cfg.head, seed=0, **params).fit(x[train], y[train].argmax(1))
    scores = np.full((int(test.sum()), y.shape[1]), -np.inf)
    scores[:, head.classes_] = head.decision_function(x[test])
    return scores


def labelled_rows(n=60, D=500, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    y = np.eye(classes, dtype=int)[rng.integers(0, classes, n)]
    x[:, :classes] += 0.5 * y
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


# ---------------------------------------------------------------- the Gram matrix


@pytest.mark.parametrize("order, d", [(1, 7), (2, 6), (3, 5)])
@pytest.mark.parametrize("layout", ["array", "contiguous", "chunked"])
def test_gram_matrix_equals_the_prepared_rows_gram(order, d, layout, tmp_path):
    rng = np.random.default_rng(order)
    m = d if order == 1 else n_unique(d, order)
    x = rng.normal(size=(21, m)).astype(np.float32)
    x[4] = 0                                             # a zero row stays zero, as in prepare
    x[7] = x[3]                                          # duplicates: rank-deficient
    before = x.copy()
    expected = prepare(x, d=d, order=order) @ prepare(x, d=d, order=order).T
    slab_mb = 21 * 8 * 4 / 2 ** 20                       # 4 columns a slab: several slabs
    if layout == "array":
        K = gram_matrix(x, d=d, order=order, chunk_mb=slab_mb)
        assert np.array_equal(x, before)                 # the caller's rows are not touched
    else:
        with h5py.File(tmp_path / "v.h5", "w") as f:
            f.create_dataset("descriptors", data=x, chunks=(5, 3) if layout == "chunked" else None)
        with h5py.File(tmp_path / "v.h5", "r") as f:
            K = gram_matrix(f["descriptors"], d=d, order=order, chunk_mb=slab_mb)
    assert K.shape == (21, 21) and K.dtype == np.float64 and K.flags.c_contiguous
    assert np.array_equal(K, K.T)
    np.testing.assert_allclose(K, expected, rtol=0, atol=1e-12)
    assert K[4].max() == 0 and abs(K[3, 7] - 1) < 1e-12


def test_gram_matrix_crosses_its_mirroring_blocks():
    x = np.random.default_rng(1).normal(size=(1100, 9)).astype(np.float32)
    K = gram_matrix(x, d=9, order=1, chunk_mb=1100 * 8 * 2 / 2 ** 20)
    assert np.array_equal(K, K.T)
    np.testing.assert_allclose(K, prepare(x, d=9, order=1) @ prepare(x, d=9, order=1).T, atol=1e-12)


# ---------------------------------------------------------------- kernel coordinates


def test_training_coordinates_reproduce_every_product_with_a_training_row():
    x, _ = labelled_rows(n=50, D=300)
    x[10] = x[11]                                        # two equal training rows: rank 39
    train = np.arange(50) < 40
    K = x @ x.T
    z = training_coordinates(K, train)
    assert z.shape == (50, 39)
    np.testing.assert_allclose(z @ z[train].T, K[:, train], atol=1e-10)
    # x Q Q^T x^T with Q Q^T the projection onto the training rows' span
    projected = K[:, train] @ np.linalg.pinv(K[np.ix_(train, train)], hermitian=True) @ K[train]
    np.testing.assert_allclose(z @ z.T, projected, atol=1e-10)


def test_training_coordinates_of_zero_rows_are_one_zero_column():
    z = training_coordinates(np.zeros((5, 5)), np.arange(5) < 3)
    assert z.shape == (5, 1) and not z.any()


@pytest.mark.parametrize("head, C", [("svm", 1.0), ("svm", (0.1, 1.0, 10.0)), ("logreg", 1.0)])
def test_kernel_coordinates_give_the_full_width_scores(head, C):
    x, y = labelled_rows()
    train = np.arange(60) < 40
    cfg = EvaluateConfig(head=head, C=C, C_extend=0)     # the grid as given (edge rule: test_c_grid)
    fast, chosen = fit_scores(Gram(x @ x.T), y, train, ~train, metric="accuracy", cfg=cfg)
    full = build_head(head, C=C, seed=0).fit(x[train], y[train].argmax(1)).decision_function(x[~train])
    np.testing.assert_allclose(fast, full, atol=1e-3)
    assert (fast.argmax(1) == full.argmax(1)).all()
    rows, _ = fit_scores(x, y, train, ~train, metric="accuracy", cfg=cfg)   # rows still accepted
    np.testing.assert_allclose(rows, fast, atol=1e-8)
    if isinstance(C, tuple):
        assert chosen["C"] in C


@pytest.mark.parametrize("head, D", [("svm", 500), ("svm", 12), ("logreg", 12)])
def test_kernel_coordinates_match_the_earlier_full_width_path(head, D):
    x, y = labelled_rows(D=D)                            # D = 12 < n_train: rows used as they are
    train = np.arange(60) < 40
    cfg = EvaluateConfig(head=head, C=1.0)
    ours, _ = fit_scores(Gram(x @ x.T), y, train, ~train, metric="accuracy", cfg=cfg)
    np.testing.assert_allclose(ours, full_width_scores(x, y, train, ~train, metric="accuracy",
                                                       cfg=cfg), atol=1e-3)


def test_multi_label_scores_match_the_full_width_one_vs_rest_svms():
    x, y = labelled_rows(n=70, D=400, classes=4)
    y[::3, 0] = 1                                        # several labels per video
    train = np.arange(70) < 50
    cfg = EvaluateConfig(C=1.0)
    ours, _ = fit_scores(Gram(x @ x.T), y, train, ~train, metric="map", cfg=cfg)
    full = full_width_scores(x, y, train, ~train, metric="map", cfg=cfg)
    assert ours.shape == (20, 4)
    np.testing.assert_allclose(ours, full, atol=1e-3)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_torch_heads_train_on_the_kernel_coordinates(head):
    x, y = labelled_rows(n=90, D=400)
    y[:] = np.eye(3, dtype=int)[np.arange(90) % 3]
    x[:, :3] += 2.0 * y
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    train = np.arange(90) < 60
    scores, chosen = fit_scores(Gram(x @ x.T), y, train, ~train, metric="accuracy",
                                cfg=EvaluateConfig(head=head))
    assert scores.shape == (30, 3) and "weight_decay" in chosen
    assert np.mean(scores.argmax(1) == y[~train].argmax(1)) > 0.8


@pytest.mark.parametrize("idt, fusion", [("on", "kernel"), ("on", "late"), ("only", "kernel")])
def test_fusion_with_idt_reads_the_gram_blocks(idt, fusion):
    """The fused scores are those of HoT alone's head (the SVM on the kernel's training
    coordinates, C by the same cross-validation) on the fused kernel, or of the two heads' scores
    fused, with a chosen by that same head on the training part."""
    from pipeline.idt.fusion import fuse_kernels, select_fusion_weight
    x, y = labelled_rows(n=45, D=200)
    u, _ = labelled_rows(n=45, D=30, seed=5)
    train = np.arange(45) < 30
    test = ~train
    kidt = (u[train] @ u[train].T, u[test] @ u[train].T)
    cfg = EvaluateConfig(idt=idt, fusion=fusion)                    # the default C grid
    ours, chosen = fused_scores(Gram(x @ x.T), y, train, test, kidt, cfg=cfg)
    k_train, k_test, labels = x[train] @ x[train].T, x[test] @ x[train].T, y[train].argmax(1)

    def head_scores(kt, kv, yt=labels):   # HoT alone's head written out: coordinates, SVM, C grid
        lam, V = np.linalg.eigh(kt)
        keep = lam > 1e-10 * lam.max()
        basis = V[:, keep][:, ::-1] / np.sqrt(lam[keep][::-1])
        head = build_head("svm", C=cfg.C, C_extend=cfg.C_extend).fit(kt @ basis, yt)
        return head.decision_function(kv @ basis)
    a = 1.0 if idt == "only" else select_fusion_weight(
        k_train, kidt[0], labels, mode=fusion,
        scorer=lambda kt, yt, kv: (np.unique(yt), head_scores(kt, kv, yt)))[0]
    assert chosen["idt_weight"] == a
    if fusion == "kernel" or a in (0.0, 1.0):
        ref = head_scores(fuse_kernels(k_train, kidt[0], a), fuse_kernels(k_test, kidt[1], a))
    else:
        ref = (1 - a) * head_scores(k_train, k_test) + a * head_scores(kidt[0], kidt[1])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_fusion_with_an_uninformative_weight_scores_as_hot_alone():
    """With the IDT kernel equal to HoT's, every weight a fuses to the HoT kernel: the fusion
    row then scores exactly as the HoT row (same SVM family, same C selection)."""
    x, y = labelled_rows(n=45, D=200)
    train = np.arange(45) < 30
    test = ~train
    K = x @ x.T
    kidt = (K[np.ix_(train, train)], K[np.ix_(test, train)])
    cfg = EvaluateConfig(idt="on")
    fused, _ = fused_scores(Gram(K), y, train, test, kidt, cfg=cfg)
    alone, _ = fit_scores(Gram(K), y, train, test, metric="accuracy", cfg=EvaluateConfig())
    np.testing.assert_allclose(fused, alone, atol=1e-9)


# ---------------------------------------------------------------- the stage


def test_evaluate_reads_the_descriptors_in_slabs_and_scores_as_the_full_width_path(
        tiny_args, monkeypatch):
    e, d, v = parse_overrides(tiny_args + ["sketch_dim=8", "order=3", "C=1.0"],
                              ExtractConfig, DescriptorConfig, EvaluateConfig)
    extract_features(e)
    folder = compute_descriptors(e, d).folder
    ids, descriptors, attrs = load_view(folder)
    real, calls = scoring_module.gram_matrix, []

    def small_slabs(rows, **kw):                         # several slabs, and no full read
        calls.append(rows.shape)
        assert isinstance(rows, h5py.Dataset)
        return real(rows, **{**kw, "chunk_mb": rows.shape[0] * 8 * 16 / 2 ** 20})

    monkeypatch.setattr(scoring_module, "gram_matrix", small_slabs)
    out, results = evaluate(e, d, v)
    assert calls == [descriptors.shape]
    x = prepare(descriptors, d=int(attrs["d"]), order=int(attrs["order"]))
    dataset = descriptors_dir(e, d)[1].dataset
    y = label_matrix(dataset, ids)
    for name, split in dataset.splits().items():
        role = np.array([split.get(i, "") for i in ids])
        train, test = role == TRAIN, role == TEST
        full = full_width_scores(x, y, train, test, metric=dataset.metric, cfg=v)
        saved = json.loads((out / "splits" / f"{name}.json").read_text())
        assert [p["id"] for p in saved["predictions"]] == [i for i, t in zip(ids, test) if t]
        np.testing.assert_allclose([p["scores"] for p in saved["predictions"]], full, atol=1e-3)
        assert saved["score"] == pytest.approx(np.mean(full.argmax(1) == y[test].argmax(1)))


def test_paper_style_names():
    e = ExtractConfig()
    assert method_name(e, DescriptorConfig(order=2, epn="maxexp")) == "SO+MaxExp"
    assert method_name(e, DescriptorConfig(order=3, epn="none")) == "TO (no EPN)"
    # every EPN parameter and normalisation that differs from the defaults is in the name
    assert method_name(e, DescriptorConfig(order=2, epn="maxexp", epn_params={"eta": "N"})) == \
        "SO+MaxExp"
    assert method_name(e, DescriptorConfig(order=2, epn="maxexp", spectrum_norm="kappa")) == \
        "SO+MaxExp (kappa norm)"
    assert method_name(e, DescriptorConfig(order=3, epn="sigme", epn_params={"eta": 5.0},
                                           center=True)) == "TO+SigmE (eta=5.0, covariance)"
    assert method_name(e, DescriptorConfig(order=2, epn="none", spectrum_norm="kappa")) == \
        "SO (no EPN)"                  # without EPN the normalisation changes no number
    assert method_name(e, DescriptorConfig(order=1)) == "first-order (mean)"
    assert method_name(e, DescriptorConfig(order=3, epn="maxexp"),
                       EvaluateConfig(idt="on")) == "TO+MaxExp+IDT"
    assert method_name(e, DescriptorConfig(), EvaluateConfig(idt="only")) == "IDT (Fisher vectors)"
    assert method_name(e, DescriptorConfig(), EvaluateConfig(name="mine")) == "mine"
