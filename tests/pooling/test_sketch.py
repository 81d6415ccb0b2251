"""Oracles for pipeline.pooling.sketch: the count-sketch definition, unbiased inner products with their
exact variance over many seeds, sklearn's PolynomialCountSketch (degree 1) hash for hash, state."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.kernel_approximation import PolynomialCountSketch

from pipeline.pooling.sketch import CountSketch, make_sketches, sketch_parts


def _definition(x, h, s, out_dim):
    """p(x)_j = sum_{i: h(i) = j} s_i x_i, written as a loop (Charikar et al.)."""
    out = np.zeros(x.shape[:-1] + (out_dim,))
    for i in range(x.shape[-1]):
        out[..., h[i]] += s[i] * x[..., i]
    return out


def test_hashes_come_from_the_seeded_generator():
    sk = CountSketch(50, 7, seed=3)
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(sk.h, rng.integers(0, 7, size=50, dtype=np.int64))
    np.testing.assert_array_equal(sk.s, 2 * rng.integers(0, 2, size=50) - 1)
    assert sk.h.dtype == np.int64 and sk.s.dtype == np.float32
    assert set(np.unique(sk.s)) == {-1.0, 1.0} and sk.h.min() >= 0 and sk.h.max() < 7
    other = CountSketch(50, 7, seed=4)
    assert not np.array_equal(sk.h, other.h)


def test_transform_matches_definition_dense_sparse_torch():
    rng = np.random.default_rng(0)
    sk = CountSketch(20, 6, seed=1)
    x = rng.standard_normal((2, 3, 20))
    want = _definition(x, sk.h, sk.s, 6)
    np.testing.assert_allclose(sk.transform(x), want, atol=1e-14)
    assert sk.transform(x.astype(np.float32)).dtype == np.float32
    assert sk.transform(np.ones((2, 20), dtype=np.int64)).dtype == np.float64
    xs = sp.random(5, 20, density=0.3, random_state=0, format="csc")
    np.testing.assert_allclose(sk.transform(xs), _definition(xs.toarray(), sk.h, sk.s, 6),
                               atol=1e-14)
    xt = torch.tensor(x, requires_grad=True)
    out = sk.transform(xt)
    np.testing.assert_allclose(out.detach().numpy(), want, atol=1e-14)
    w = torch.randn(6, dtype=torch.float64)
    (out * w).sum().backward()  # d/dx_i sum_j w_j p(x)_j = s_i w_{h(i)}
    np.testing.assert_allclose(xt.grad.numpy(), np.broadcast_to(sk.s * w.numpy()[sk.h], x.shape))
    assert sk.transform(xt.float()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_transform_on_cuda():
    sk = CountSketch(20, 6, seed=1)
    x = torch.randn(4, 20, device="cuda")
    np.testing.assert_allclose(sk.transform(x).cpu().numpy(), sk.transform(x.cpu().numpy()),
                               rtol=1e-5, atol=1e-5)


def test_inner_products_unbiased_with_the_exact_variance():
    """E<p(x), p(y)> = <x, y>; Var = (1/d') sum_{i<j} (x_i y_j + x_j y_i)^2. Over M = 3000 seeds
    the mean must lie within 5 standard errors and the sample variance within 15% (chi-square
    scale: its own standard error is ~ sqrt(2/M) (1 + kurtosis) ~ 5%)."""
    rng = np.random.default_rng(42)
    D, d_out, M = 24, 8, 3000
    x, y = rng.standard_normal(D), rng.standard_normal(D)
    y = 0.6 * x + 0.8 * y  # correlated, <x, y> far from 0
    est = np.array([CountSketch(D, d_out, seed).transform(np.stack([x, y])).prod(0).sum()
                    for seed in range(M)])
    cross = np.outer(x, y)
    var = ((cross + cross.T)[np.triu_indices(D, 1)] ** 2).sum() / d_out
    assert abs(est.mean() - x @ y) < 5 * np.sqrt(var / M)
    assert abs(est.var() / var - 1) < 0.15


def test_sklearn_polynomial_count_sketch_degree_1_hash_for_hash():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 30))
    ref = PolynomialCountSketch(degree=1, n_components=9, random_state=0).fit(X)
    ours = CountSketch.from_state({"h": ref.indexHash_[0], "s": ref.bitHash_[0], "in_dim": 30,
                                   "out_dim": 9, "seed": 0})
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=1e-12)
    Xs = sp.csr_matrix(np.where(rng.random(X.shape) < 0.3, X, 0.0))
    np.testing.assert_allclose(ours.transform(Xs), ref.transform(Xs), atol=1e-12)


def test_state_round_trip_and_validation():
    sk = CountSketch(40, 5, seed=9)
    state = sk.state()
    assert set(state) == {"h", "s", "in_dim", "out_dim", "seed"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    back = CountSketch.from_state(state)
    np.testing.assert_array_equal(back.h, sk.h)
    np.testing.assert_array_equal(back.s, sk.s)
    assert (back.in_dim, back.out_dim, back.seed) == (40, 5, 9)
    x = np.random.default_rng(0).standard_normal((3, 40))
    np.testing.assert_array_equal(back.transform(x), sk.transform(x))
    with pytest.raises(ValueError, match="missing"):
        CountSketch.from_state({"h": state["h"]})
    with pytest.raises(ValueError, match=r"h must lie in \[0, out_dim=5\)"):
        CountSketch.from_state({**state, "h": state["h"] + 5})
    with pytest.raises(ValueError, match="-1 and \\+1"):
        CountSketch.from_state({**state, "s": state["s"] * 2})


@pytest.mark.parametrize("args, name", [((0, 4, 0), "in_dim=0"), ((5, 0, 0), "out_dim=0"),
                                        ((5, 4, -1), "seed=-1"), ((5, 2.5, 0), "out_dim=2.5"),
                                        ((5, True, 0), "out_dim=True")])
def test_argument_validation_names_the_parameter(args, name):
    with pytest.raises(ValueError, match=name):
        CountSketch(*args)


def test_out_dim_at_least_in_dim_is_still_a_sketch_not_identity():
    eye = np.eye(6)
    outs = [CountSketch(6, 6, seed).transform(eye) for seed in range(10)]
    assert any(not np.array_equal(o, eye) for o in outs)
    wide = CountSketch(6, 10, seed=0)
    assert wide.transform(eye).shape == (6, 10)
    np.testing.assert_array_equal(wide.transform(eye), _definition(eye, wide.h, wide.s, 10))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 6\)"):
        wide.transform(np.ones((2, 5)))


def test_make_sketches_and_sketch_parts():
    sks = make_sketches([10, 12, 10], 4, seed=5)
    assert [(s.in_dim, s.out_dim) for s in sks] == [(10, 4), (12, 4), (10, 4)]
    assert len({s.seed for s in sks}) == 3  # independent parts
    again = make_sketches([10, 12, 10, 8], 4, seed=5)  # adding a part keeps earlier ones
    for a, b in zip(sks, again):
        np.testing.assert_array_equal(a.h, b.h)
        np.testing.assert_array_equal(a.s, b.s)
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((3, D)) for D in (10, 12, 10)]
    out = sketch_parts(parts, sks)
    assert out.shape == (3, 12)
    np.testing.assert_array_equal(out[:, 4:8], sks[1].transform(parts[1]))
    out_t = sketch_parts([torch.tensor(p) for p in parts], sks)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-14)
    assert [s.out_dim for s in make_sketches([3, 3], [2, 5], seed=0)] == [2, 5]
    with pytest.raises(ValueError, match="one per part"):
        sketch_parts(parts[:2], sks)
    with pytest.raises(ValueError, match="leading shape"):
        sketch_parts([parts[0], parts[1][:2], parts[2]], sks)
    with pytest.raises(ValueError, match="out_dim has 1 entries for 3 parts"):
        make_sketches([10, 12, 10], [4], seed=0)


def test_sketched_parts_inner_product_unbiased():
    """Concatenated part sketches estimate sum_p <x_p, y_p> without bias (M = 1500 seeds)."""
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(D) for D in (8, 12)]
    ys = [0.5 * x + rng.standard_normal(x.shape) for x in xs]
    exact = sum(x @ y for x, y in zip(xs, ys))
    var = 0.0
    for x, y in zip(xs, ys):
        c = np.outer(x, y)
        var += ((c + c.T)[np.triu_indices(len(x), 1)] ** 2).sum() / 4
    est = []
    for seed in range(1500):
        sks = make_sketches([8, 12], 4, seed)
        est.append(sketch_parts([x[None] for x in xs], sks)[0]
                   @ sketch_parts([y[None] for y in ys], sks)[0])
    assert abs(np.mean(est) - exact) < 5 * np.sqrt(var / 1500)
