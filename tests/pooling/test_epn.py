"""Oracles for pipeline.pooling.epn: each g against its PN formula, SO EPN against dense eigh, TO HOSVD
against an explicit einsum route and TensorLy, Daleckii-Krein gradients by gradcheck (float64)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from pipeline.pooling import epn as E
from pipeline.pooling.differentiable import build_cache, hot_descriptor_torch

# Parameters chosen off the defaults so that a wrong default or a swapped name shows up.
PARAMS = {"none": {}, "gamma": {"gamma": 0.3}, "maxexp": {"eta": 7.0}, "asinhe": {"gamma": 2.0},
          "sigme": {"eta": 3.0}, "hdp": {"t": 0.05}}
FORMULAS = {  # docs/method.md table, written literally, for lambda >= 0
    "none": lambda l, p: l,
    "gamma": lambda l, p: l ** p["gamma"],
    "maxexp": lambda l, p: 1 - (1 - l) ** p["eta"],
    "asinhe": lambda l, p: np.arcsinh(p["gamma"] * l),
    "sigme": lambda l, p: 2 / (1 + np.exp(-p["eta"] * l)) - 1,
    "hdp": lambda l, p: np.where(l > 0, np.exp(-p["t"] / np.where(l > 0, l, 1)), 0.0),
}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------- g itself
def test_registry_is_the_method_table():
    assert set(E.EPN) == {"none", "gamma", "maxexp", "asinhe", "sigme", "hdp"}
    assert set(E.SPECTRUM_NORMS) == {"sum", "kappa", "none"}


@pytest.mark.parametrize("name", list(PARAMS))
def test_g_matches_formula_and_is_odd(name):
    fn = E.make_epn(name, **PARAMS[name])
    lam = np.concatenate([[0.0], np.linspace(1e-3, 1.0, 50)])
    want = FORMULAS[name](lam, PARAMS[name])
    np.testing.assert_allclose(fn(lam), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fn(-lam), -want, rtol=1e-12, atol=1e-15)  # sign kept
    assert fn(np.array(0.0)) == 0.0  # g(0) = 0 for every entry (HDP by definition)
    t = fn(torch.from_numpy(lam))
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(PARAMS))
def test_derivative_matches_central_difference(name):
    fn = E.make_epn(name, **PARAMS[name])
    lam = np.linspace(0.05, 0.95, 19)
    h = 1e-6
    fd = (fn(lam + h) - fn(lam - h)) / (2 * h)
    np.testing.assert_allclose(fn.derivative(lam), fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fn.derivative(-lam), fd, rtol=1e-6, atol=1e-8)  # g' is even


def test_maxexp_saturates_above_one_and_hdp_derivative_has_no_nan():
    fn = E.make_epn("maxexp", eta=3.0)
    np.testing.assert_array_equal(fn(np.array([1.0, 1.5, 7.0])), [1.0, 1.0, 1.0])
    assert fn.derivative(np.array([1.5]))[0] == 0.0
    hdp = E.make_epn("hdp", t=1.0)
    d = hdp.derivative(np.array([1e-300, 1e-3, 0.0]))
    assert np.isfinite(d).all() and d[0] == 0.0


def test_tol_snaps_noise_to_the_tangent_at_zero():
    gamma = E.make_epn("gamma", gamma=0.1)
    noise = np.array([1e-17, -1e-17, 0.5])
    assert gamma(noise)[0] > 0.01  # (1e-17)^0.1 = 0.02: rounding noise blown up ...
    np.testing.assert_array_equal(gamma(noise, tol=1e-12)[:2], [0.0, 0.0])  # ... unless snapped
    assert gamma(noise, tol=1e-12)[2] == 0.5 ** 0.1
    maxexp = E.make_epn("maxexp", eta=4.0)
    np.testing.assert_allclose(maxexp(noise, tol=1e-12)[:2], 4.0 * noise[:2])  # slope g'(0) = eta


def test_maxexp_is_probability_of_at_least_one_event():
    """HoT slides: with eta = N, g(p) = 1 - (1 - p)^N is P(at least one of N independent events
    of probability p). Constructed example: a diagonal SO matrix of co-occurrence probabilities,
    normalised by nothing, against the exact enumeration of all 2^N outcomes."""
    n = 5
    p = np.array([0.05, 0.2, 0.5, 0.9])
    outcomes = np.array(list(itertools.product([0, 1], repeat=n)))  # (2^N, N)
    k = outcomes.sum(1)
    exact = np.array([(pi ** k * (1 - pi) ** (n - k))[k > 0].sum() for pi in p])
    np.testing.assert_allclose(exact, scipy.stats.binom.sf(0, n, p), rtol=1e-12)
    Q = scipy.stats.ortho_group.rvs(4, random_state=1)
    X = Q @ np.diag(p) @ Q.T  # eigenvalues = event probabilities
    G = E.epn_so(X, E.make_epn("maxexp", eta="N"), "none", n_windows=n)
    np.testing.assert_allclose(np.linalg.eigvalsh(G), np.sort(exact), atol=1e-12)
    # and with spectrum_norm="kappa" the probability is lambda / kappa (kappa = 1/2 for SO)
    G2 = E.epn_so(X * 0.5, E.make_epn("maxexp", eta="N"), "kappa", n_windows=n)
    np.testing.assert_allclose(np.linalg.eigvalsh(G2), np.sort(exact), atol=1e-12)


def test_kappa_is_the_largest_value_of_a_unit_vector():
    # (1/sqrt(r))^r = max over unit phi of prod of r distinct coordinates (AM-GM), r = 2, 3
    for r in (2, 3):
        phi = _unit_rows(_rng(r).standard_normal((2000, r)))
        kappa = E.spectrum_scale(np.ones(1), "kappa", r)
        assert np.abs(phi.prod(1)).max() <= kappa + 1e-15
        assert math.isclose(np.prod(np.full(r, 1 / math.sqrt(r))), kappa)


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name, params, message", [
    ("gamma", {"gamma": 1.5}, "gamma=1.5: Gamma needs 0 < gamma <= 1"),
    ("gamma", {"gamma": 0}, "gamma=0: Gamma needs 0 < gamma <= 1"),
    ("maxexp", {"eta": 0.5}, "eta=0.5: MaxExp needs eta >= 1 or eta='N'"),
    ("maxexp", {"eta": "M"}, "eta='M': MaxExp needs"),
    ("asinhe", {"gamma": 0.0}, "gamma=0.0: AsinhE needs gamma > 0"),
    ("sigme", {"eta": 0.9}, "eta=0.9: SigmE needs eta >= 1"),
    ("hdp", {"t": 0}, "t=0: HDP needs t > 0"),
    ("hdp", {"t": float("nan")}, "t=nan: HDP needs t > 0"),
    ("gamma", {"gamma": True}, "gamma=True"),
    ("gamma", {"eta": 2}, "unknown parameter(s) ['eta'] for epn='gamma'"),
    ("power", {}, "epn='power' is unknown; known: none, gamma, maxexp, asinhe, sigme, hdp"),
])
def test_make_epn_validation(name, params, message):
    with pytest.raises(ValueError) as err:
        E.make_epn(name, **params)
    assert message in str(err.value)


def test_unresolved_eta_n_and_bad_spectrum_norm():
    fn = E.make_epn("maxexp")  # default eta='N' (HoT slides)
    assert fn.param_dict == {"eta": "N"}
    with pytest.raises(ValueError, match="eta='N'"):
        fn(np.ones(2))
    with pytest.raises(ValueError, match="n_windows=0"):
        fn.resolve(0)
    assert fn.resolve(12).param_dict == {"eta": 12.0}
    with pytest.raises(ValueError, match="eta='N'"):
        E.epn_so(np.eye(2), "maxexp")
    with pytest.raises(ValueError, match="'trace' is unknown; known: sum, kappa, none"):
        E.epn_so(np.eye(2), "none", "trace")
    with pytest.raises(ValueError, match=r"expected \(\.\.\., d, d\)"):
        E.epn_so(np.ones((2, 3)), "none")


# ----------------------------------------------------------------------------------- SO EPN
def _so_reference(X, name, params, spectrum_norm):
    lam, U = scipy.linalg.eigh(X)
    scale = {"sum": np.abs(lam).sum(), "kappa": 0.5, "none": 1.0}[spectrum_norm]
    y = lam / scale
    g = np.sign(y) * FORMULAS[name](np.minimum(np.abs(y), 1.0) if name == "maxexp" else np.abs(y),
                                    params)
    return U @ np.diag(g) @ U.T


@pytest.mark.parametrize("spectrum_norm", ["sum", "kappa", "none"])
@pytest.mark.parametrize("name", list(PARAMS))
def test_epn_so_matches_dense_eigh(name, spectrum_norm):
    phi = _unit_rows(_rng(1).standard_normal((9, 5)))
    X = phi.T @ phi / 9
    fn = E.make_epn(name, **PARAMS[name])
    got = E.epn_so(X, fn, spectrum_norm)
    np.testing.assert_allclose(got, _so_reference(X, name, PARAMS[name], spectrum_norm),
                               rtol=1e-10, atol=1e-12)
    got_t = E.epn_so(torch.from_numpy(X), fn, spectrum_norm)
    np.testing.assert_allclose(got_t.numpy(), got, rtol=1e-10, atol=1e-12)
    batch = E.epn_so(np.stack([X, 2 * X]), fn, spectrum_norm)
    np.testing.assert_allclose(batch[0], got, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------- TO EPN
def _sym_tensor(d, n, seed=0):
    phi = _unit_rows(_rng(seed).standard_normal((n, d)))
    return np.einsum("ni,nj,nk->ijk", phi, phi, phi) / n, phi


def test_hosvd_orthogonal_and_reconstructs_exactly():
    X, _ = _sym_tensor(5, 8)
    U, core, mu = E.hosvd_sym(X)
    np.testing.assert_allclose(U.T @ U, np.eye(5), atol=1e-12)
    assert np.all(np.diff(mu) <= 1e-15)  # descending
    np.testing.assert_allclose(np.einsum("abc,ia,jb,kc->ijk", core, U, U, U), X, atol=1e-14)
    # core is super-symmetric and has the unfolding's eigenvalues as its slice norms
    np.testing.assert_allclose(core, core.transpose(1, 0, 2), atol=1e-14)
    np.testing.assert_allclose((core ** 2).sum((1, 2)), mu, atol=1e-14)
    # g = identity with no normalisation gives X back
    np.testing.assert_allclose(E.epn_to(X, "none", "none"), X, atol=1e-14)


def test_hosvd_agrees_with_tensorly_up_to_sign():
    tl = pytest.importorskip("tensorly", reason="tensorly is not installed (pip install tensorly)")
    from tensorly.decomposition import tucker

    tl.set_backend("numpy")
    X, _ = _sym_tensor(4, 6, seed=3)
    U, core, mu = E.hosvd_sym(X)
    assert np.min(-np.diff(mu)) > 1e-6  # distinct singular values: factors unique up to sign
    tl_core, factors = tucker(X, rank=[4, 4, 4], init="svd", n_iter_max=0)
    signs = []
    for F in factors:
        s = np.sign(np.sum(F * U, axis=0))
        np.testing.assert_allclose(F * s, U, atol=1e-8)
        signs.append(s)
    np.testing.assert_allclose(np.einsum("abc,a,b,c->abc", tl_core, *signs), core, atol=1e-10)


def _to_reference(X, name, params, spectrum_norm):
    """Independent einsum route: unfold, eigh, mode products, formula on the core, rebuild."""
    d = X.shape[0]
    X1 = X.reshape(d, -1)
    _, U = scipy.linalg.eigh(X1 @ X1.T)
    core = np.einsum("abc,ai,bj,ck->ijk", X, U, U, U)
    scale = {"sum": np.abs(core).sum(), "kappa": 3 ** -1.5, "none": 1.0}[spectrum_norm]
    y = core / scale
    a = np.minimum(np.abs(y), 1.0) if name == "maxexp" else np.abs(y)
    return np.einsum("ijk,ai,bj,ck->abc", np.sign(y) * FORMULAS[name](a, params), U, U, U)


@pytest.mark.parametrize("spectrum_norm", ["sum", "kappa"])
@pytest.mark.parametrize("name", list(PARAMS))
def test_epn_to_matches_einsum_reference(name, spectrum_norm):
    X, _ = _sym_tensor(4, 7, seed=2)  # N >= d: full rank, distinct spectrum
    fn = E.make_epn(name, **PARAMS[name])
    got = E.epn_to(X, fn, spectrum_norm)
    np.testing.assert_allclose(got, _to_reference(X, name, PARAMS[name], spectrum_norm),
                               rtol=1e-9, atol=1e-12)
    got_t = E.epn_to(torch.from_numpy(X), fn, spectrum_norm)
    np.testing.assert_allclose(got_t.numpy(), got, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------- Daleckii-Krein
def test_divided_differences_stable_for_equal_and_close_eigenvalues():
    fn = E.make_epn("maxexp", eta=5.0)
    for lam in (np.full(4, 0.25), 0.25 + np.array([0.0, 1e-13, 2e-11, 0.3])):
        K = E.divided_differences(lam, fn)
        assert np.isfinite(K).all()
        np.testing.assert_allclose(K[0, 1], fn.derivative(np.array(0.25)), rtol=1e-9)
    lam = np.array([0.1, 0.4])
    K = E.divided_differences(lam, fn)
    np.testing.assert_allclose(K[0, 1], (fn(lam[0]) - fn(lam[1])) / (lam[0] - lam[1]), rtol=1e-14)
    np.testing.assert_allclose(np.diag(K), fn.derivative(lam), rtol=1e-14)


def _spd(d, seed, rank=None):
    a = _rng(seed).standard_normal((rank or d + 2, d))
    X = a.T @ a
    return X / np.trace(X)


def _gradcheck(f, x, eps=1e-6, atol=1e-6):
    return torch.autograd.gradcheck(f, (x,), eps=eps, atol=atol, rtol=1e-4, nondet_tol=1e-12)


@pytest.mark.parametrize("spectrum_norm", ["sum", "kappa"])
@pytest.mark.parametrize("name", list(PARAMS))
def test_gradcheck_so(name, spectrum_norm):
    fn = E.make_epn(name, **PARAMS[name])
    X = torch.tensor(_spd(4, 5), requires_grad=True)
    assert _gradcheck(lambda x: E.epn_so(x, fn, spectrum_norm), X)


@pytest.mark.parametrize("name", list(PARAMS))
def test_gradcheck_so_repeated_eigenvalues(name):
    """Identity and identity + 1e-12 noise: a raw 1/(l_i - l_j) would give Inf/NaN or garbage."""
    fn = E.make_epn(name, **PARAMS[name])
    noise = _rng(7).standard_normal((4, 4)) * 1e-12
    for X0 in (np.eye(4) / 4, np.eye(4) / 4 + noise + noise.T):
        X = torch.tensor(X0, requires_grad=True)
        assert _gradcheck(lambda x: E.epn_so(x, fn, "sum"), X)
        Xr = torch.tensor(X0, requires_grad=True)
        E.epn_so(Xr, fn, "none").pow(2).sum().backward()
        assert torch.isfinite(Xr.grad).all()


def _phi_full_rank_core(d, n, name):
    """A seed whose non-zero TO core entries stay away from 0 (Gamma is not differentiable at 0;
    the exact zeros of a rank-deficient X stay exact under perturbations of phi)."""
    for seed in range(50):
        X, phi = _sym_tensor(d, n, seed)
        a = np.abs(E.hosvd_sym(X)[1]) / np.abs(X).max()
        if name != "gamma" or not ((a > 1e-10) & (a < 1e-3)).any():
            return X, phi
    raise AssertionError("no suitable seed")


@pytest.mark.parametrize("name", list(PARAMS))
def test_gradcheck_to_from_tensor(name):
    fn = E.make_epn(name, **PARAMS[name])
    X0, _ = _phi_full_rank_core(3, 6, name)
    X = torch.tensor(X0, requires_grad=True)
    assert _gradcheck(lambda x: E.epn_to(x, fn, "sum"), X)


@pytest.mark.parametrize("name", list(PARAMS))
def test_gradcheck_to_in_weights_including_repeated_null_eigenvalues(name):
    """N = 3 < d = 5: X_(1) X_(1)^T has a repeated eigenvalue 0 (twice); the EPN does not
    depend on the basis of that null space, so the gradient in the window weights (what HoT's
    attention trains) is exact there. The torch face: pooling.differentiable."""
    fn = E.make_epn(name, **PARAMS[name])
    for n, d, center in ((5, 3, True), (3, 5, False)):
        phi = _phi_full_rank_core(d, n, name)[1]
        cache = build_cache(phi, np.arange(n), 3, center=center, normalize=False)
        w = torch.tensor(np.linspace(0.5, 2.0, n), requires_grad=True)
        assert _gradcheck(lambda w_: hot_descriptor_torch(cache, w_, 3, fn, "sum"), w)


@pytest.mark.parametrize("name", ["none", "maxexp", "asinhe", "sigme", "hdp"])
def test_gradcheck_to_rank_deficient_tensor(name):
    """X from N = 2 windows in d = 3 (null space of X_(1) X_(1)^T): gradient w.r.t. all of X.

    Perturbations make core entries that are exactly 0 here of order h, where the odd extension
    sign(x) f(|x|) has a kink in its second derivative: finite differences converge as O(h), not
    O(h^2), hence the smaller step (the analytic gradient was checked to match as h -> 0)."""
    fn = E.make_epn(name, **PARAMS[name])
    X0, _ = _sym_tensor(3, 2, seed=4)
    for spectrum_norm in ("sum", "kappa"):
        X = torch.tensor(X0, requires_grad=True)
        assert _gradcheck(lambda x: E.epn_to(x, fn, spectrum_norm), X, eps=1e-8, atol=1e-5)


@pytest.mark.parametrize("name", list(PARAMS))
def test_to_identity_like_tensor_has_finite_gradient(name):
    """sum_i e_i^(x)3: X_(1) X_(1)^T = I, every eigenvalue repeated. The TO EPN depends on the
    basis there (no true gradient); the documented stable route must still be finite."""
    fn = E.make_epn(name, **PARAMS[name])
    X0 = np.zeros((4, 4, 4))
    X0[range(4), range(4), range(4)] = 1.0
    X = torch.tensor(X0, requires_grad=True)
    out = E.epn_to(X, fn, "sum")
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert torch.isfinite(X.grad).all()
    phi = np.repeat(_unit_rows(_rng(0).standard_normal((2, 4))), 3, 0)  # duplicated windows
    w = torch.ones(6, dtype=torch.float64, requires_grad=True)
    cache = build_cache(phi, np.arange(6), 3, normalize=False)
    hot_descriptor_torch(cache, w, 3, fn, "sum").pow(2).sum().backward()
    assert torch.isfinite(w.grad).all()


def test_stable_eigh_gradcheck_distinct_spectrum():
    A = torch.tensor(_spd(4, 11), requires_grad=True)

    def top_projector(a):
        lam, U = E.stable_eigh(0.5 * (a + a.mT))
        return U[:, :2] @ U[:, :2].mT + lam.sum()

    assert _gradcheck(top_projector, A)
