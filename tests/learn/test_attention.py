"""Attention classifiers (pipeline.learn.attention): HoT's cached SO/TO mixing against pooling weighted
windows directly, gradcheck in float64, AP's trace identity and its average-pooling case, STPA's
unit rows and losses, self-attention, a learned informative group, determinism, save/load."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from pipeline.pooling import epn as E
from pipeline.pooling import packing as PK
from pipeline.pooling import tensor_pool as TP
from pipeline.learn.attention import ATTENTIONS, build_attention, get_attention, load_attention
from pipeline.learn.attention.attentional_pooling import AttentionalPooling
from pipeline.learn.attention.hot import (GroupAttention, HoTAttentionClassifier, HoTModule,
                                          NoAttentionClassifier)
from pipeline.pooling.differentiable import build_cache, hot_descriptor_torch
from pipeline.learn.attention.pyramid import (PyramidAttention, attention_loss, interaction_loss,
                                        pyramid_positions)
from pipeline.learn.attention.self_attention import LearnedQueryPooling, MultiHeadSelfAttention
from pipeline.learn.training import pad_samples

FN = E.make_epn("maxexp", eta=3.0)
QUICK = dict(max_epochs=3, patience=3)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _video(N, d, G, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.integers(0, G, N)


def _grouped(n_per_class=12, d=8, C=3, seed=0, informative=3, noisy=6):
    """Group 0 carries the label (windows near e_class, marked by e_7); groups 1, 2 are noise
    (windows near a random e_k, marked by e_6) and outnumber it."""
    rng = np.random.default_rng(seed)
    videos, y = [], []
    for c in range(C):
        for _ in range(n_per_class):
            rows, groups = [], []
            for g, count in ((0, informative), (1, noisy), (2, noisy)):
                for _ in range(count):
                    v = 0.3 * rng.standard_normal(d)
                    v[c if g == 0 else rng.integers(0, C)] += 2.0
                    v[7 if g == 0 else 6] += 1.0
                    rows.append(v)
                    groups.append(g)
            videos.append((np.array(rows), np.array(groups)))
            y.append(c)
    return videos, np.array(y)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
def test_registry_and_unknown_name():
    assert set(ATTENTIONS) == {"none", "hot", "ap", "ap_windows", "pyramid", "pyramid_windows",
                               "self", "self_cells", "learned_query"}
    assert get_attention("hot").classifier is HoTAttentionClassifier
    assert {n: s.inputs for n, s in ATTENTIONS.items()} == {
        "none": "groups", "hot": "groups", "ap": "cells", "ap_windows": "windows",
        "pyramid": "levels", "pyramid_windows": "window_levels", "self": "windows",
        "self_cells": "cells", "learned_query": "windows"}
    with pytest.raises(ValueError, match="known: .*hot.*learned_query"):
        build_attention("transformer")


# --------------------------------------------------------------------------------------------
# HoT: the cached economy is exact
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,d", [(7, 6), (5, 9), (16, 8)])  # N < d uses the range basis
def test_so_mixing_of_cached_group_matrices_equals_pooling_weighted_windows(N, d):
    phi, groups = _video(N, d, 3, seed=N)
    w_group = np.array([0.5, 1.7, 1.1])
    cache = build_cache(phi, groups, 2)
    a = torch.as_tensor(w_group[cache.present.numpy()]) ** 2 / N
    mixed = torch.einsum("g,gij->ij", a, cache.blocks)
    if cache.Q is not None:
        mixed = cache.Q @ mixed @ cache.Q.T
    direct = TP.pool(_unit(phi), 2, weights=w_group[groups])
    np.testing.assert_allclose(mixed.numpy(), direct, atol=1e-13)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("N,d", [(7, 6), (5, 9)])
def test_cached_descriptor_equals_epn_of_directly_pooled_tensor(order, center, N, d):
    phi, groups = _video(N, d, 3, seed=10 * N + d)
    w_group = np.array([0.5, 1.7, 1.1])
    cache = build_cache(phi, groups, order, center=center)
    out = hot_descriptor_torch(cache, torch.as_tensor(w_group[cache.present.numpy()]), order, FN)
    X = TP.pool(_unit(phi), order, weights=w_group[groups], center=center)
    ref = E.epn_so(X, FN) if order == 2 else E.epn_to(X, FN)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    fast = TP.hot_descriptor(_unit(phi), order=order, epn=FN, weights=w_group[groups],
                             center=center)
    np.testing.assert_allclose(PK.pack(out.numpy(), order), fast, atol=1e-12)


def test_to_gram_form_of_the_unfolding():
    """X_(1) X_(1)^T = Psi^T A (G o G) A Psi with a_n = w_n^3 / N: what the TO cache relies on."""
    phi, groups = _video(9, 5, 3, seed=1)
    w = np.array([0.5, 1.7, 1.1])[groups]
    psi = _unit(phi)
    X = TP.pool(psi, 3, weights=w)
    X1 = X.reshape(5, 25)
    A = np.diag(w ** 3 / 9)
    G = psi @ psi.T
    np.testing.assert_allclose(X1 @ X1.T, psi.T @ A @ (G * G) @ A @ psi, atol=1e-14)
    cache = build_cache(phi, groups, 3)
    np.testing.assert_allclose(cache.H.numpy(), G * G, atol=1e-13)  # N >= d: Y = psi


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("N,d", [(7, 5), (4, 6)])
def test_hot_descriptor_gradcheck_in_group_weights(order, N, d):
    phi, groups = _video(N, d, 3, seed=order + N)
    cache = build_cache(phi, groups, order)
    w0 = torch.linspace(0.7, 1.4, len(cache.present), dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda w: hot_descriptor_torch(cache, w, order, FN), (w0,),
                     eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("nonneg,hidden", [("softplus", 0), ("sigmoid", 3), ("softmax", 0)])
def test_hot_module_gradcheck_through_attention_network(order, nonneg, hidden):
    d = 5
    caches = [build_cache(*_video(N, d, 3, seed=N), order) for N in (6, 4)]
    torch.manual_seed(0)
    module = HoTModule(d, 3, order=order, fn=E.make_epn("maxexp"), spectrum_norm="sum",
                       hidden=hidden, nonneg=nonneg).double()
    for p in module.attention.parameters():  # move off the zero initialisation
        torch.nn.init.normal_(p, std=0.3)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    logits = lambda *ps: functional_call(module, dict(zip(names, ps)), (caches,))  # noqa: E731
    assert logits(*params).shape == (2, 3)
    assert gradcheck(logits, params, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("order", [2, 3])
def test_hot_module_batched_logits_equal_the_linear_layer_on_per_video_descriptors(order):
    """Videos of equal shapes go through EPN as one batch (in any order), and SO logits come from
    the unpacked form <U_c, E>_F / ||E||_F + b: the same as the linear layer on each video's
    l2-normalised Frobenius-scaled packed descriptor."""
    d = 6
    caches = [build_cache(*_video(N, d, 3, seed=i), order) for i, N in enumerate((4, 9, 4, 7, 9))]
    torch.manual_seed(0)
    module = HoTModule(d, 4, order=order, fn=E.make_epn("maxexp", eta="N"), spectrum_norm="sum",
                       hidden=0, nonneg="softplus").double()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    with torch.no_grad():
        rows = []
        for cache, w in zip(caches, module.group_weights(caches)):
            X = hot_descriptor_torch(cache, w, order, module.fn)
            rows.append(PK.frobenius_scale(PK.pack(X, order), d, order))
        rows = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
        torch.testing.assert_close(module.descriptors(caches), rows, rtol=0, atol=1e-13)
        torch.testing.assert_close(module(caches), module.classifier(rows), rtol=0, atol=1e-13)


def test_group_attention_nonneg_choices():
    means = torch.randn(5, 4)
    for nonneg in ("softplus", "sigmoid", "softmax"):
        att = GroupAttention(4, hidden=0, nonneg=nonneg)
        np.testing.assert_allclose(att(means, [2, 3]).detach().numpy(), 1.0)  # uniform at start
        torch.nn.init.normal_(att.score.weight)
        w = att(means, [2, 3])
        assert w.shape == (5,) and bool((w >= 0).all())
    torch.testing.assert_close(w[:2].sum(), torch.tensor(2.0))  # softmax: averages 1 per video
    torch.testing.assert_close(w[2:].sum(), torch.tensor(3.0))
    with pytest.raises(ValueError, match="known: softplus, sigmoid, softmax"):
        GroupAttention(4, nonneg="relu")


# --------------------------------------------------------------------------------------------
# HoT: training
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order,nonneg", [(2, "softplus"), (3, "softmax")])
def test_trained_attention_finds_the_informative_group(order, nonneg):
    videos, y = _grouped(n_per_class=24)
    clf = HoTAttentionClassifier(order=order, nonneg=nonneg, max_epochs=40, patience=40)
    clf.fit(videos, y, group_names=["L16_s1", "L16_s2", "L32_s1"])
    test, y_test = _grouped(seed=1)
    w = clf.group_weights(test)
    assert w.shape == (len(test), 3)
    mean = w.mean(axis=0)
    # a window's share of X goes with w^r: the informative group's windows count > 2.5x more
    assert (mean[0] / max(mean[1], mean[2])) ** order > 2.5, mean
    assert np.mean(w.argmax(axis=1) == 0) >= 0.9
    assert np.mean(clf.predict(test) == y_test) >= 0.8


def test_hot_trained_twice_identical_and_save_load(tmp_path):
    videos, y = _grouped(n_per_class=4)
    params = dict(order=2, hidden=3, weight_decay=(0.0, 1e-3), **QUICK)
    a = HoTAttentionClassifier(**params).fit(videos, y)
    b = HoTAttentionClassifier(**params).fit(videos, y)
    np.testing.assert_array_equal(a.decision_function(videos), b.decision_function(videos))
    assert a.chosen_params_ == b.chosen_params_
    loaded = load_attention(a.save(tmp_path / "hot"))
    assert isinstance(loaded, HoTAttentionClassifier) and loaded.get_params() == a.get_params()
    np.testing.assert_array_equal(loaded.decision_function(videos), a.decision_function(videos))
    np.testing.assert_array_equal(loaded.group_weights(videos), a.group_weights(videos))
    assert loaded.transform(videos).shape == (len(videos), PK.n_unique(8, 2))
    np.testing.assert_allclose(np.linalg.norm(loaded.transform(videos), axis=1), 1.0)


def test_no_attention_weighs_every_group_one_and_absent_groups_are_nan():
    videos, y = _grouped(n_per_class=4)
    clf = NoAttentionClassifier(order=3, **QUICK).fit(videos, y)
    phi, groups = videos[0]
    keep = groups != 2
    w = clf.group_weights([(phi[keep], groups[keep])])
    np.testing.assert_array_equal(w[0, :2], 1.0)
    assert np.isnan(w[0, 2])
    with pytest.raises(ValueError, match="group indices"):
        clf.predict([(phi, groups + 5)])


# --------------------------------------------------------------------------------------------
# attentional pooling
# --------------------------------------------------------------------------------------------
def test_ap_score_is_the_trace_form_and_rank_p_sums():
    torch.manual_seed(0)
    X = torch.randn(1, 7, 5, dtype=torch.float64)
    mask = torch.ones(1, 7, dtype=torch.bool)
    ap = AttentionalPooling(5, 3, rank=1, mean_over_positions=False, bias=False).double()
    s = ap(X, mask)[0]
    x = X[0]
    for k in range(3):
        a, b = ap.a[k, 0], ap.b[0]
        torch.testing.assert_close(s[k], torch.trace(x.T @ x @ torch.outer(b, a)))
        torch.testing.assert_close(s[k], (x @ a) @ (x @ b))
    ap2 = AttentionalPooling(5, 3, rank=2, per_class_bottom_up=True, bias=False).double()
    s2 = ap2(X, mask)[0]
    W = torch.einsum("kpf,kpg->kfg", ap2.b, ap2.a)  # sum_p b_kp a_kp^T
    ref = torch.stack([torch.trace(x.T @ x @ W[k]) for k in range(3)]) / 7  # mean over n
    torch.testing.assert_close(s2, ref)


def test_average_pooling_is_the_top_down_only_case():
    torch.manual_seed(1)
    X = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    avg = AttentionalPooling(4, 3, bottom_up=False).double()
    torch.nn.init.normal_(avg.bias)
    ref = X.mean(dim=1) @ avg.a[:, 0].T + avg.bias
    torch.testing.assert_close(avg(X, mask), ref)
    # the same as full AP with a constant feature whose bottom-up weight makes X b = 1
    Xc = torch.cat([X, torch.ones(2, 6, 1, dtype=X.dtype)], dim=-1)
    ap = AttentionalPooling(5, 3).double()
    with torch.no_grad():
        ap.a.copy_(torch.cat([avg.a, torch.zeros(3, 1, 1, dtype=X.dtype)], dim=-1))
        ap.b.copy_(torch.tensor([[0.0, 0, 0, 0, 1]]))
        ap.bias.copy_(avg.bias)
    torch.testing.assert_close(ap(Xc, mask), ref)


def test_ap_padding_and_gradcheck():
    torch.manual_seed(2)
    samples = [torch.randn(n, 4, dtype=torch.float64) for n in (3, 5)]
    X, mask = pad_samples(samples)
    for bottom_up in (True, False):
        ap = AttentionalPooling(4, 3, rank=2, bottom_up=bottom_up).double()
        batched = ap(X, mask)
        for i, s in enumerate(samples):
            torch.testing.assert_close(batched[i], ap(s[None], torch.ones(1, len(s),
                                                                          dtype=torch.bool))[0])
        names = [n for n, _ in ap.named_parameters()]
        params = tuple(p.detach().clone().requires_grad_() for p in ap.parameters())
        fn = lambda x, *ps: functional_call(ap, dict(zip(names, ps)), (x, mask))  # noqa: E731
        assert gradcheck(fn, (X.clone().requires_grad_(), *params), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# pyramid attention
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["product", "sum", "max"])
def test_pyramid_rows_unit_norm_and_losses_exactly(fusion):
    torch.manual_seed(3)
    layers = [torch.randn(2, 6, 5, dtype=torch.float64), torch.randn(2, 6, 4, dtype=torch.float64)]
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    layers = [x * mask[..., None] for x in layers]
    net = PyramidAttention([5, 4], 3, n_maps=3, fusion=fusion).double()
    with torch.no_grad():
        logits, A, Ys = net(layers, mask)
    assert logits.shape == (2, 3) and A.shape == (2, 3, 6)
    torch.testing.assert_close(A.norm(dim=-1), torch.ones(2, 3, dtype=A.dtype))
    assert float(A[1, :, 4:].detach().abs().max()) == 0.0  # padded positions get no attention
    for b, n in ((0, 6), (1, 4)):  # the losses, written out with numpy on the valid part
        a = A[b, :, :n].detach().numpy()
        x = layers[1][b, :n].numpy()
        AA = a @ a.T
        inter = -np.trace(a @ x @ x.T @ a.T) + (AA ** 2).sum() - (np.diag(AA) ** 2).sum()
        np.testing.assert_allclose(float(interaction_loss(A, layers[1])[b]), inter, rtol=1e-12)
        total = 0.0
        for Y in Ys:
            y = Y[b, :, :n].detach().numpy()
            sm = np.exp(y - y.max(axis=1, keepdims=True))
            sm /= sm.sum(axis=1, keepdims=True)
            total += (1 - np.abs(a - sm) ** 2).sum()
        np.testing.assert_allclose(float(attention_loss(A, Ys, mask)[b]), np.sqrt(total),
                                   rtol=1e-12)


def test_pyramid_gradcheck_with_losses():
    torch.manual_seed(4)
    layers = [torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)]
    mask = torch.ones(2, 5, dtype=torch.bool)
    net = PyramidAttention([3, 4], 2, n_maps=2).double()

    def total(x0, x1):
        logits, A, Ys = net([x0, x1], mask)
        return logits.sum() + interaction_loss(A, x1).sum() + attention_loss(A, Ys, mask).sum()

    assert gradcheck(total, tuple(x.clone().requires_grad_() for x in layers), eps=1e-6,
                     atol=1e-6)


def test_pyramid_positions_max_pool_lower_maps_to_the_top_grid():
    rng = np.random.default_rng(0)
    low, top = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 5, 2, 2))
    (xl, xt), shape = pyramid_positions([low, top])
    assert shape == (3, 2, 2) and xl.shape == (12, 2) and xt.shape == (12, 5)
    pooled = low.reshape(3, 2, 2, 2, 2, 2).max(axis=(3, 5))  # 2x2 blocks
    np.testing.assert_allclose(xl, pooled.transpose(0, 2, 3, 1).reshape(12, 2))
    np.testing.assert_allclose(xt, top.transpose(0, 2, 3, 1).reshape(12, 5))


# --------------------------------------------------------------------------------------------
# self-attention pooling
# --------------------------------------------------------------------------------------------
def test_learned_query_formula_masking_and_gradcheck():
    torch.manual_seed(5)
    samples = [torch.randn(n, 4, dtype=torch.float64) for n in (3, 5)]
    X, mask = pad_samples(samples)
    net = LearnedQueryPooling(4, 3, n_queries=2, key_dim=3).double()
    att = net.attention(X, mask)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, dtype=att.dtype))
    s0 = samples[0]
    ref = torch.softmax(net.query @ net.key(s0).T / 3 ** 0.5, dim=-1)
    torch.testing.assert_close(att[0, :, :3], ref)
    assert float(att[0, :, 3:].detach().abs().max()) == 0.0
    torch.testing.assert_close(net(X, mask)[0], net.fc((ref @ s0).flatten()))
    assert gradcheck(lambda x: net(x, mask), (X.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# estimators over positions: learn, maps, determinism, save/load
# --------------------------------------------------------------------------------------------
def _levels(samples, name):
    """Pyramid attention fuses two or more levels: the sample and a rescaled copy of it."""
    return [[x, 0.5 * x] for x in samples] if name == "pyramid" else samples


def _positions_problem(maps=False, n=90, f=6, seed=0):
    """One window of each sample carries its class prototype; maps repeat it over 2x2 cells."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((3, f)) * 3
    y = np.arange(n) % 3
    samples = []
    for c in y:
        k = int(rng.integers(3, 7))
        x = rng.standard_normal((k, f))
        x[rng.integers(k)] += protos[c]
        if maps:
            x = np.repeat(x[:, :, None, None], 4, axis=2).reshape(k, f, 2, 2)
        samples.append(x)
    return samples, y


@pytest.mark.parametrize("name", ["ap", "pyramid", "self", "learned_query"])
@pytest.mark.parametrize("maps", [False, True])
def test_position_classifiers_learn_and_map_positions(name, maps):
    samples, y = _positions_problem(maps)
    plain, samples = samples, _levels(samples, name)
    clf = build_attention(name, max_epochs=40).fit(samples[:60], y[:60])
    assert clf.decision_function(samples[60:]).shape == (30, 3)
    assert np.mean(clf.predict(samples[60:]) == y[60:]) >= 0.8
    maps_out = clf.attention_map(samples[:2])
    for m, s in zip(maps_out, plain[:2]):
        assert m.shape[-(s.ndim - 1 if maps else 1):] == ((s.shape[0], 2, 2) if maps
                                                          else (s.shape[0],))
    if name == "pyramid":
        A = maps_out[0].reshape(maps_out[0].shape[0], -1)
        np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, rtol=1e-6)   # float32


@pytest.mark.parametrize("name", ["ap", "pyramid", "self"])
def test_position_classifiers_do_not_depend_on_the_features_scale(name):
    """The demo's random-weight flow maps have norms near 3e-6: unscaled, AP's quadratic score
    stalled at chance. A scalar per level fitted on the training part makes scale irrelevant."""
    samples, y = _positions_problem(maps=True)
    samples = _levels(samples, name)
    tiny = [[1e-6 * x for x in s] if isinstance(s, list) else 1e-6 * s for s in samples]
    a = build_attention(name, max_epochs=40).fit(samples[:60], y[:60])
    b = build_attention(name, max_epochs=40).fit(tiny[:60], y[:60])
    assert np.mean(b.predict(tiny[60:]) == y[60:]) >= 0.8
    np.testing.assert_allclose(b.decision_function(tiny[60:]), a.decision_function(samples[60:]),
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["ap", "pyramid", "self", "learned_query"])
def test_position_classifiers_deterministic_and_save_load(name, tmp_path):
    samples, y = _positions_problem()
    samples = _levels(samples, name)
    a = build_attention(name, weight_decay=(0.0, 1e-3), **QUICK).fit(samples, y)
    b = build_attention(name, weight_decay=(0.0, 1e-3), **QUICK).fit(samples, y)
    np.testing.assert_array_equal(a.decision_function(samples), b.decision_function(samples))
    loaded = load_attention(a.save(tmp_path / name))
    assert type(loaded) is type(a) and loaded.get_params() == a.get_params()
    np.testing.assert_array_equal(loaded.decision_function(samples), a.decision_function(samples))
    for m1, m2 in zip(loaded.attention_map(samples[:3]), a.attention_map(samples[:3])):
        np.testing.assert_array_equal(m1, m2)


def _last_layer(clf, rows: np.ndarray) -> np.ndarray:
    """The trained classifier's last layer applied to transform()'s rows (float64)."""
    m = clf.module_.double()
    r = torch.as_tensor(rows)
    with torch.no_grad():
        if hasattr(m, "a"):                                  # AP: score_k = sum_p a_kp . pooled_p
            K, P, f = m.a.shape
            if m.b is None:                                  # pooled = mean(X) (B, f)
                s = r @ m.a.sum(1).T
            elif m.b.ndim == 2:                              # shared b: (B, P, f)
                s = torch.einsum("kpf,bpf->bk", m.a, r.view(-1, P, f))
            else:                                            # per-class b: (B, K, P, f)
                s = torch.einsum("kpf,bkpf->bk", m.a, r.view(-1, K, P, f))
            return (s + m.bias).numpy()
        layer = getattr(m, "classifier", None) or m.fc
        return layer(r).numpy()


@pytest.mark.parametrize("name,params", [
    ("hot", dict(order=2)), ("hot", dict(order=3)), ("none", dict(order=2)),
    ("ap", dict(rank=2)), ("ap", dict(bottom_up=False)), ("ap", dict(per_class_bottom_up=True)),
    ("pyramid", {}), ("self", dict(heads=2, width=8)), ("learned_query", dict(n_queries=2))])
def test_transform_rows_are_what_the_last_layer_reads(name, params):
    """transform() is the learned representation a new head is fitted on (make train head=svm):
    the trained last layer applied to it gives decision_function exactly."""
    if name in ("hot", "none"):
        samples, y = _grouped(n_per_class=4)
    else:
        samples, y = _positions_problem(n=30)
        samples = _levels(samples, name)
    clf = build_attention(name, dtype="float64", **params, **QUICK).fit(samples, y)
    rows = clf.transform(samples)
    assert rows.shape[0] == len(samples) and np.isfinite(rows).all()
    np.testing.assert_allclose(_last_layer(clf, rows), clf.decision_function(samples),
                               rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# the papers' models: independent numpy oracles (docs/method.md, "Attention")
# --------------------------------------------------------------------------------------------
def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("fusion", ["product", "sum", "max"])
def test_pyramid_attention_map_and_fusion_against_numpy_stpa_eq_2_to_4(fusion):
    """STPA eq. 2: Y_j = W_j X_j^T + b_j; eq. 3: fused across levels; eq. 4: A = softmax over
    positions, rows l2-normalised, M = A X_top; written out with numpy from the weights."""
    torch.manual_seed(7)
    rng = np.random.default_rng(7)
    low, top = rng.standard_normal((9, 5)), rng.standard_normal((9, 4))
    net = PyramidAttention([5, 4], 3, n_maps=2, fusion=fusion).double()
    mask = torch.ones(1, 9, dtype=torch.bool)
    with torch.no_grad():
        logits, A, _ = net([torch.as_tensor(low)[None], torch.as_tensor(top)[None]], mask)
    W = [p.weight.detach().numpy() for p in net.proj]
    b = [p.bias.detach().numpy() for p in net.proj]
    Ys = [W[j] @ x.T + b[j][:, None] for j, x in enumerate((low, top))]       # (d, P) each
    fused = {"product": Ys[0] * Ys[1], "sum": Ys[0] + Ys[1], "max": np.maximum(*Ys)}[fusion]
    S = _softmax(fused, axis=1)
    A_ref = S / np.linalg.norm(S, axis=1, keepdims=True)
    np.testing.assert_allclose(A[0].numpy(), A_ref, rtol=1e-10, atol=1e-12)
    M = A_ref @ top
    fc = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    np.testing.assert_allclose(logits[0].numpy(), fc[0] @ M.reshape(-1) + fc[1], rtol=1e-10)


def test_two_level_pyramid_differs_from_one_level():
    """The lower level changes the attention: the fusion is not a no-op."""
    torch.manual_seed(8)
    top = torch.randn(1, 6, 4, dtype=torch.float64)
    low = torch.randn(1, 6, 5, dtype=torch.float64)
    mask = torch.ones(1, 6, dtype=torch.bool)
    two = PyramidAttention([5, 4], 3, n_maps=2).double()
    one = PyramidAttention([4], 3, n_maps=2).double()
    one.proj[0].load_state_dict(two.proj[1].state_dict())
    with torch.no_grad():
        A2, _ = two.attention([low, top], mask)
        A1, _ = one.attention([top], mask)
    assert float((A2 - A1).abs().max()) > 1e-3


def test_pyramid_classifier_refuses_one_level():
    samples, y = _positions_problem(n=6)
    with pytest.raises(ValueError, match="two or more levels"):
        build_attention("pyramid", **QUICK).fit(samples, y)


def test_multi_head_self_attention_against_numpy_and_masking():
    torch.manual_seed(9)
    samples = [torch.randn(n, 5, dtype=torch.float64) for n in (4, 6)]
    X, mask = pad_samples(samples)
    net = MultiHeadSelfAttention(5, 3, heads=2, width=6).double()
    with torch.no_grad():
        logits = net(X, mask)
        A = net.attention(X, mask)
    p = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    for b, x in enumerate(s.numpy() for s in samples):
        Q, K, V = (x @ p[f"{k}.weight"].T + p[f"{k}.bias"] for k in "qkv")
        heads = []
        for h in range(2):
            cols = slice(3 * h, 3 * h + 3)
            a = _softmax(Q[:, cols] @ K[:, cols].T / np.sqrt(3), axis=1)
            np.testing.assert_allclose(A[b, h, :len(x), :len(x)].numpy(), a, rtol=1e-10)
            heads.append(a @ V[:, cols])
        Y = np.concatenate(heads, axis=1) @ p["out.weight"].T + p["out.bias"]
        ref = p["fc.weight"] @ Y.mean(axis=0) + p["fc.bias"]
        np.testing.assert_allclose(logits[b].numpy(), ref, rtol=1e-10)
    assert float(A[0, :, :, 4:].abs().max()) == 0.0            # padded keys get no attention


def test_self_attention_is_permutation_equivariant_before_pooling():
    torch.manual_seed(10)
    X = torch.randn(1, 7, 5, dtype=torch.float64)
    mask = torch.ones(1, 7, dtype=torch.bool)
    net = MultiHeadSelfAttention(5, 3, heads=2, width=4).double()
    perm = torch.randperm(7)
    with torch.no_grad():
        Y, Yp = net.encoded(X, mask), net.encoded(X[:, perm], mask)
        torch.testing.assert_close(Yp, Y[:, perm])
        torch.testing.assert_close(net(X[:, perm], mask), net(X, mask))


def test_trained_ap_bottom_up_map_peaks_on_the_cell_that_holds_the_label():
    """Synthetic videos of 2 windows x 3 x 3 cells: the class lives in cell (1, 2) only (marked,
    as an actor is, by its own appearance: feature 0), every other cell holds a random class's
    pattern; the bottom-up saliency |X b| learned by AP peaks on that cell."""
    rng = np.random.default_rng(11)
    C, D, n = 3, 8, 120
    protos = 2.0 * rng.standard_normal((C, D))
    y = np.arange(n) % C
    samples = []
    for c in y:
        x = 0.3 * rng.standard_normal((2, D, 3, 3))
        for t in range(2):
            for h in range(3):
                for w in range(3):
                    x[t, :, h, w] += protos[c if (h, w) == (1, 2) else rng.integers(C)]
            x[t, 0, 1, 2] += 3.0
        samples.append(x)
    clf = build_attention("ap", lr=3e-2, max_epochs=200, patience=30, seed=0)
    clf.fit(samples[:90], y[:90])
    assert np.mean(clf.predict(samples[90:]) == y[90:]) >= 0.8
    saliency = np.mean([np.abs(m[0]).mean(axis=0) for m in clf.attention_map(samples[90:])],
                       axis=0)                                              # (3, 3)
    assert np.unravel_index(saliency.argmax(), saliency.shape) == (1, 2)


def test_a_new_type_is_one_registration_with_its_own_keys():
    """Adding a type touches nothing else: its registration brings its flat key into the
    training settings (built from the registry) and train.py reads its inputs and row name."""
    from pipeline.learn import settings
    from pipeline.learn.attention import registry
    from pipeline.learn.train import samples
    spec = registry.AttentionSpec(
        name="test_mean", classifier=type(build_attention("ap_windows")), inputs="windows",
        options={"test_width": registry.Option(3, int, "a test option", registry.integer(1))},
        params=lambda t, d: {"rank": t.test_width},
        row_name=lambda p, pooling: f"mean (rank-{p['rank']})")
    try:
        registry.register_attention(spec)
        cls = settings._train_config()
        tcfg = cls(attention="test_mean", test_width=2)
        assert tcfg.test_width == 2
        with pytest.raises(ValueError, match="test_width=0 must be an integer >= 1"):
            cls(attention="test_mean", test_width=0)
        x = np.ones((4, 5))
        assert samples("test_mean", [(x, np.zeros(4, int))])[0] is x
        assert spec.params(tcfg, None) == {"rank": 2}
    finally:
        registry.ATTENTIONS.pop("test_mean", None)
        registry._OPTIONS.pop("test_width", None)
