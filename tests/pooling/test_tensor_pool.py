"""Oracles for pipeline.pooling.tensor_pool: pooling against explicit einsum, exact pack/unpack, packed
Frobenius products, and the fast hot_descriptor against the slow pool -> epn_to -> pack route."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pooling import epn as E
from pipeline.pooling import packing as PK
from pipeline.pooling import tensor_pool as TP
from pipeline.pooling import threads

EPN_PARAMS = {"none": {}, "gamma": {"gamma": 0.5}, "maxexp": {"eta": "N"}, "asinhe": {"gamma": 3.0},
              "sigme": {"eta": 5.0}, "hdp": {"t": 1e-3}}


def _phi(n, d, seed=0, dtype=np.float64):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _sym(X):
    perms = itertools.permutations(range(X.ndim))
    return sum(X.transpose(p) for p in perms) / math.factorial(X.ndim)


# ------------------------------------------------------------------------------------ pooling
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("order", [2, 3])
def test_pool_matches_explicit_einsum(order, center):
    phi = _phi(7, 4, seed=1)
    w = np.random.default_rng(2).uniform(0, 2, 7)
    psi = phi - phi.mean(0) if center else phi
    spec = "n,ni,nj->ij" if order == 2 else "n,ni,nj,nk->ijk"
    want = np.einsum(spec, w ** order, *([psi] * order)) / 7
    np.testing.assert_allclose(TP.pool(phi, order, weights=w, center=center), want, atol=1e-15)
    got_t = TP.pool(torch.tensor(phi), order, weights=torch.tensor(w), center=center)
    np.testing.assert_allclose(got_t.numpy(), want, atol=1e-15)
    ones = np.einsum(spec, np.ones(7), *([psi] * order)) / 7
    np.testing.assert_allclose(TP.pool(phi, order, center=center), ones, atol=1e-15)


def test_pool_validation():
    phi = _phi(3, 2)
    with pytest.raises(ValueError, match="order=4"):
        TP.pool(phi, 4)
    with pytest.raises(ValueError, match=r"weights has shape \(2,\); expected \(3,\)"):
        TP.pool(phi, 2, weights=np.ones(2))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        TP.pool(phi, 2, weights=np.array([1.0, -1.0, 1.0]))


# ------------------------------------------------------------------------------------ packing
@pytest.mark.parametrize("order", [2, 3])
def test_pack_order_is_lexicographic_and_counts(order):
    d = 5
    idx = np.stack(PK.pack_indices(d, order), 1)
    want = np.array(list(itertools.combinations_with_replacement(range(d), order)))
    np.testing.assert_array_equal(idx, want)  # lexicographic over i <= j (<= k)
    assert len(idx) == PK.n_unique(d, order) == (d * (d + 1) // 2 if order == 2
                                                  else d * (d + 1) * (d + 2) // 6)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), order=st.sampled_from([2, 3]), seed=st.integers(0, 2 ** 16))
def test_pack_unpack_round_trip_and_frobenius(d, order, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(PK.n_unique(d, order))
    X = PK.unpack(v, d, order)  # exactly symmetric
    for p in itertools.permutations(range(order)):
        np.testing.assert_array_equal(X, X.transpose(p))
    np.testing.assert_array_equal(PK.pack(X), v)  # exact both ways
    np.testing.assert_array_equal(PK.unpack(PK.pack(X), d, order), X)
    Y = _sym(rng.standard_normal((d,) * order))
    w = PK.pack_weights(d, order)
    frob = float(np.sum(X * Y))
    assert math.isclose(float(np.sum(w * v * PK.pack(Y))), frob, rel_tol=1e-12, abs_tol=1e-12)
    a, b = PK.frobenius_scale(v, d, order), PK.frobenius_scale(PK.pack(Y), d, order)
    assert math.isclose(float(a @ b), frob, rel_tol=1e-12, abs_tol=1e-12)
    assert w.sum() == d ** order  # every full entry counted once


def test_pack_weights_values_and_batches_and_torch():
    np.testing.assert_array_equal(PK.pack_weights(2, 2), [1, 2, 1])
    w3 = dict(zip(zip(*PK.pack_indices(3, 3)), PK.pack_weights(3, 3)))
    assert (w3[(0, 0, 0)], w3[(0, 0, 1)], w3[(0, 1, 1)], w3[(0, 1, 2)]) == (1, 3, 3, 6)
    Xb = np.stack([_sym(x) for x in np.random.default_rng(0).standard_normal((2, 4, 4, 4))])
    vb = PK.pack(Xb, 3)
    assert vb.shape == (2, 20)
    np.testing.assert_array_equal(vb[1], PK.pack(Xb[1]))
    np.testing.assert_allclose(PK.unpack(vb, 4, 3), Xb, atol=1e-15)
    vt = PK.pack(torch.tensor(Xb), 3)
    np.testing.assert_array_equal(vt.numpy(), vb)
    np.testing.assert_allclose(PK.unpack(vt, 4, 3).numpy(), Xb, atol=1e-15)
    with pytest.raises(ValueError, match="needs 20"):
        PK.unpack(np.ones(19), 4, 3)
    with pytest.raises(ValueError, match="order=5"):
        PK.pack(np.ones((2,) * 5))


# ----------------------------------------------------------------------------- descriptors
def _slow(phi, order, name, params, spectrum_norm="sum", weights=None, center=False):
    X = TP.pool(phi, order, weights=weights, center=center)
    fn = E.resolve_epn(name, params, n_windows=phi.shape[0])
    return PK.pack((E.epn_so if order == 2 else E.epn_to)(X, fn, spectrum_norm))


@pytest.mark.parametrize("n, d", [(9, 5), (4, 7)])  # N >= d (full space) and N < d (span of phi)
@pytest.mark.parametrize("name", list(EPN_PARAMS))
@pytest.mark.parametrize("order", [2, 3])
def test_hot_descriptor_equals_slow_reference(order, name, n, d):
    phi = _phi(n, d, seed=3)
    for spectrum_norm in ("sum", "kappa"):
        got = TP.hot_descriptor(phi, order=order, epn=name, epn_params=EPN_PARAMS[name],
                                spectrum_norm=spectrum_norm)
        want = _slow(phi, order, name, EPN_PARAMS[name], spectrum_norm)
        assert got.shape == (PK.n_unique(d, order),) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("order", [2, 3])
def test_hot_descriptor_weights_center_float32_and_explicit_einsum(order):
    phi = _phi(6, 5, seed=4)
    w = np.random.default_rng(5).uniform(0.1, 2.0, 6)
    got = TP.hot_descriptor(phi, order=order, epn="maxexp", weights=w, center=True)
    np.testing.assert_allclose(got, _slow(phi, order, "maxexp", {}, weights=w, center=True),
                               rtol=1e-8, atol=1e-12)
    # fully explicit TO reference: einsum pooling, unfolding, eigh, mode products
    if order == 3:
        psi = phi - phi.mean(0)
        X = np.einsum("n,ni,nj,nk->ijk", w ** 3 / 6, psi, psi, psi)
        _, U = np.linalg.eigh(X.reshape(5, 25) @ X.reshape(5, 25).T)
        c = np.einsum("abc,ai,bj,ck->ijk", X, U, U, U)
        y = c / np.abs(c).sum()
        g = np.sign(y) * (1 - (1 - np.minimum(np.abs(y), 1)) ** 6)
        np.testing.assert_allclose(PK.unpack(got, 5, 3),
                                   np.einsum("ijk,ai,bj,ck->abc", g, U, U, U), atol=1e-12)
    got32 = TP.hot_descriptor(phi.astype(np.float32), order=order, epn="maxexp", weights=w,
                              center=True)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, got, rtol=0, atol=1e-5 * np.abs(got).max())


def test_hot_descriptor_rank_deficient_gamma_is_not_noise():
    """N < d: the slow full-space route sees rounding noise where the fast one has exact zeros;
    Gamma (gamma = 0.1) would inflate (1e-17)^0.1 = 0.02 -- the numerical-zero snap makes both
    agree."""
    phi = _phi(3, 8, seed=6)
    for order in (2, 3):
        got = TP.hot_descriptor(phi, order=order, epn="gamma", epn_params={"gamma": 0.1})
        want = _slow(phi, order, "gamma", {"gamma": 0.1})
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_hot_descriptors_batch_and_blocked_reconstruction():
    phis = [_phi(n, 37, seed=n) for n in (5, 40, 12)]  # 37: not a multiple of the block size
    out = TP.hot_descriptors(phis, order=3)
    assert out.shape == (3, PK.n_unique(37, 3))
    for row, phi in zip(out, phis):  # equal to rounding: BLAS threads differ (threaded batch)
        np.testing.assert_allclose(row, TP.hot_descriptor(phi, order=3), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[0], _slow(phis[0], 3, "maxexp", {}), rtol=1e-8, atol=1e-12)
    rng = np.random.default_rng(0)
    core = _sym(rng.standard_normal((4, 4, 4)))
    U = np.linalg.qr(rng.standard_normal((11, 4)))[0]
    full = np.einsum("abc,ia,jb,kc->ijk", core, U, U, U)
    for block in (1, 3, 4, 16):
        np.testing.assert_allclose(TP._reconstruct_pack_to(core, U, block), PK.pack(full),
                                   atol=1e-14)
    # stacked: (B, k, k, k) cores and (B, d, k) factors at once, as hot_descriptors runs them
    cores = np.stack([core, _sym(rng.standard_normal((4, 4, 4)))])
    Us = np.stack([U, np.linalg.qr(rng.standard_normal((11, 4)))[0]])
    for block in (3, 8):
        got = TP._reconstruct_pack_to(cores, Us, block)
        for b in range(2):
            want = PK.pack(np.einsum("abc,ia,jb,kc->ijk", cores[b], Us[b], Us[b], Us[b]))
            np.testing.assert_allclose(got[b], want, atol=1e-14)


@pytest.mark.parametrize("blas_threads", [1, 2])  # videos one after another / on 2 threads
@pytest.mark.parametrize("order", [2, 3])
def test_hot_descriptors_stacks_and_threads_equal_lone_calls(order, blas_threads):
    """Consecutive videos with equal N are stacked into shared numpy calls and stacks run on
    threads; every row still equals its lone hot_descriptor (to rounding), weights included,
    and BLAS gets its thread count back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ns = (6, 6, 6, 9, 6, 6)
    phis = [_phi(n, 7, seed=10 + b) for b, n in enumerate(ns)]
    ws = [np.random.default_rng(20 + b).uniform(0.1, 2.0, n) for b, n in enumerate(ns)]
    assert TP._stacks(list(ns), 7, 8, threads=2) == [(0, 3), (3, 4), (4, 6)]
    assert TP._stacks(list(ns), 7, 8, threads=1) == [(0, 3), (3, 4), (4, 6)]
    assert TP._stacks([6] * 8, 7, 8, threads=2) == [(0, 4), (4, 8)]
    with threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas"):
        before = threads.blas_threads()
        out = TP.hot_descriptors(phis, order=order, weights=ws, center=True)
        assert threads.blas_threads() == before
    for row, phi, w in zip(out, phis, ws):
        want = TP.hot_descriptor(phi, order=order, weights=w, center=True)
        np.testing.assert_allclose(row, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[4], _slow(phis[4], order, "maxexp", {}, weights=ws[4],
                                             center=True), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match=r"weights has shape \(5,\); expected \(6,\)"):
        TP.hot_descriptors(phis[:2], order=order, weights=[ws[0], ws[1][:5]])


def test_hot_descriptor_validation_and_cost_model():
    phi = _phi(4, 3)
    with pytest.raises(ValueError, match="order=1"):
        TP.hot_descriptor(phi, order=1)
    with pytest.raises(ValueError, match=r"expected \(N, d\)"):
        TP.hot_descriptor(phi[0], order=2)
    with pytest.raises(ValueError, match="NaN"):
        TP.hot_descriptor(np.full((2, 2), np.nan), order=2)
    with pytest.raises(ValueError, match="gamma=2"):
        TP.hot_descriptor(phi, order=2, epn="gamma", epn_params={"gamma": 2})
    with pytest.raises(ValueError, match="share d"):
        TP.hot_descriptors([phi, _phi(4, 2)], order=2)
    with pytest.raises(TypeError, match="numpy"):
        TP.hot_descriptor(torch.tensor(phi), order=2)
    assert np.allclose(TP.hot_descriptor(np.zeros((3, 4)), order=3), 0)  # all-zero: 0, not NaN
    # the cost model is dominated by ~k^3 d + k^2 d^2 / 2 + k d^3 / 6 multiply-adds
    f = TP.descriptor_flops(64, 128, 3)
    assert 2 * (64 ** 3 * 128 + 64 ** 2 * 128 ** 2 / 2 + 64 * 128 ** 3 / 6) < f < 3e8


def test_the_cholesky_basis_serves_only_where_it_is_orthonormal():
    """float32 windows of full numerical rank skip the eigendecomposition (Q = (L^-1 psi)^T,
    Y = L); rank-deficient or nearly dependent ones take the rank-revealing route, and both give
    the descriptors of the float64 reference."""
    well = _phi(16, 32, seed=3).astype(np.float32)
    x = well[None].astype(np.float64)
    basis = TP._cholesky_basis(x, x @ x.mT)
    assert basis is not None
    Q, Y = basis
    np.testing.assert_allclose(Q[0].T @ Q[0], np.eye(16), atol=1e-6)
    np.testing.assert_allclose(Y[0] @ Q[0].T, well, atol=1e-6)
    duplicate = well.copy()
    duplicate[5] = duplicate[4]                              # rank 15
    nearly = well.copy()
    nearly[5] = nearly[4] + 1e-5 * well[6]                   # kappa(gram) ~ 1e10
    for bad in (duplicate, nearly):
        x = bad[None].astype(np.float64)
        assert TP._cholesky_basis(x, x @ x.mT) is None
    for phi in (well, duplicate, nearly):
        for order in (2, 3):
            fast = TP.hot_descriptor(phi, order=order)
            ref = TP.hot_descriptor(phi.astype(np.float64), order=order)
            np.testing.assert_allclose(fast, ref, atol=1e-4 * np.abs(ref).max())  # float32 TO: ~3e-5
