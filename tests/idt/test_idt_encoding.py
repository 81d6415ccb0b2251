"""IDT encoding (pipeline.idt): DenseTrackStab's text format, Fisher vectors, HoT/IDT fusion."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from pipeline.idt import (FisherVectorEncoder, IDTConfig, fisher_vector, read_idt_text,
                          write_idt_text)
from pipeline.idt.fusion import (cross_validate_weights, fuse_kernels, fuse_scores,
                                 select_fusion_weight)

DIMS = {"header": 10, "traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}


def fake_features(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: rng.random((n, d)).astype(np.float32) for k, d in DIMS.items()}
    out["header"][:, 0] = rng.integers(15, 500, n)
    return out


# --- text format ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["video.features", "video.features.gz"])
def test_text_format_round_trips(tmp_path, name):
    feats = fake_features(5)
    write_idt_text(tmp_path / name, feats)
    back = read_idt_text(tmp_path / name)
    assert list(back) == list(DIMS)
    for key in DIMS:
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], feats[key])


def test_text_format_reads_the_original_layout(tmp_path):
    """Tab-separated, a trailing tab, %f header and %.7f descriptors, as DenseTrackStab prints."""
    feats = fake_features(2)
    lines = []
    for row in np.concatenate([feats[k] for k in DIMS], axis=1):
        lines.append(f"{int(row[0])}\t" + "".join(f"{v:f}\t" for v in row[1:10])
                     + "".join(f"{v:.7f}\t" for v in row[10:]))
    (tmp_path / "orig.txt").write_text("\n".join(lines) + "\n\n")
    back = read_idt_text(tmp_path / "orig.txt")
    assert back["hof"].shape == (2, 108)
    np.testing.assert_allclose(back["mbhy"], feats["mbhy"], atol=1e-6)


def test_text_format_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    back = read_idt_text(tmp_path / "empty.txt")
    assert all(back[k].shape == (0, d) for k, d in DIMS.items())


@pytest.mark.parametrize("edit, message", [
    (lambda parts: parts[:-1], r"line 2: 435 values, expected 436"),
    (lambda parts: parts + ["0.1"], r"line 2: 437 values, expected 436"),
    (lambda parts: parts[:7] + ["1.2.3"] + parts[8:], r"line 2: value 8 '1.2.3' is not a number"),
    (lambda parts: parts[:20] + ["nan"] + parts[21:], r"line 2: value 21 is 'nan', not finite"),
    (lambda parts: ["-3"] + parts[1:], r"line 2: frame number '-3' is not an integer"),
])
def test_malformed_line_names_file_and_line(tmp_path, edit, message):
    path = tmp_path / "bad.txt"
    write_idt_text(path, fake_features(3))
    lines = path.read_text().splitlines()
    lines[1] = "\t".join(edit(lines[1].split()))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.txt, {message}"):
        read_idt_text(path)


def test_text_format_other_layouts(tmp_path):
    cfg = IDTConfig(idt_length=10, idt_t_cells=2)
    dims = cfg.dims()
    rng = np.random.default_rng(0)
    feats = {k: rng.random((3, d)).astype(np.float32) for k, d in dims.items()}
    feats["header"][:, 0] = 12
    write_idt_text(tmp_path / "f.txt", feats)
    assert read_idt_text(tmp_path / "f.txt", cfg)["hof"].shape == (3, 72)
    with pytest.raises(ValueError, match="expected 436"):
        read_idt_text(tmp_path / "f.txt")


# --- Fisher vectors -------------------------------------------------------------------------

def direct_fisher(x, w, mu, var):
    """Sanchez et al. (IJCV 2013) Eqs. 17-18 term by term, with explicit loops."""
    n, (K, D) = len(x), mu.shape
    dens = np.array([[w[k] * np.prod(np.exp(-(xi - mu[k]) ** 2 / (2 * var[k]))
                                     / np.sqrt(2 * np.pi * var[k])) for k in range(K)] for xi in x])
    gamma = dens / dens.sum(axis=1, keepdims=True)
    g_mu, g_sigma = np.zeros((K, D)), np.zeros((K, D))
    for k in range(K):
        for i in range(n):
            u = (x[i] - mu[k]) / np.sqrt(var[k])
            g_mu[k] += gamma[i, k] * u
            g_sigma[k] += gamma[i, k] * (u ** 2 - 1)
        g_mu[k] /= n * np.sqrt(w[k])
        g_sigma[k] /= n * np.sqrt(2 * w[k])
    return np.concatenate([g_mu.ravel(), g_sigma.ravel()])


def test_fisher_vector_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    w, mu = np.array([0.3, 0.7]), rng.normal(size=(2, 3))
    var = rng.uniform(0.5, 2.0, (2, 3))
    x = rng.normal(size=(6, 3))
    np.testing.assert_allclose(fisher_vector(x, w, mu, var), direct_fisher(x, w, mu, var),
                               rtol=1e-10, atol=1e-12)
    assert np.all(fisher_vector(np.zeros((0, 3)), w, mu, var) == 0)


def test_fisher_vector_matches_scikit_image():
    """skimage.feature.fisher_vector = [G_w (K), G_mu (KD), -G_sigma (KD)] (no normalisation)."""
    skfeature = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 4))
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(train)
    x = rng.normal(size=(30, 4))
    ours = fisher_vector(x, gmm.weights_, gmm.means_, gmm.covariances_)
    theirs = skfeature.fisher_vector(x, gmm)
    K, KD = 3, 12
    np.testing.assert_allclose(ours[:KD], theirs[K:K + KD], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours[KD:], -theirs[K + KD:], rtol=1e-8, atol=1e-10)


@pytest.fixture(scope="module")
def videos() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{k: rng.normal(loc=i % 2, size=(40 + 5 * i, d)).astype(np.float32)
             for k, d in DIMS.items() if k != "header"} for i in range(6)]


@pytest.fixture(scope="module")
def encoder(videos) -> FisherVectorEncoder:
    return FisherVectorEncoder(n_components=4, n_samples=150, seed=0).fit(videos)


def test_encoder_dimensions_and_normalisation(encoder, videos):
    fv = encoder.transform(videos)
    half = {k: d // 2 for k, d in DIMS.items() if k != "header"}
    sizes = [2 * 4 * d for d in half.values()]
    assert fv.shape == (6, sum(sizes)) and fv.dtype == np.float32
    for part in np.split(fv, np.cumsum(sizes)[:-1], axis=1):
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1, rtol=1e-5)
    raw = fisher_vector((videos[0]["hog"] - encoder.models_["hog"]["pca_mean"])
                        @ encoder.models_["hog"]["pca_components"].T,
                        *(encoder.models_["hog"][k] for k in ("gmm_weights", "gmm_means",
                                                               "gmm_covariances")))
    expected = np.sign(raw) * np.sqrt(np.abs(raw))
    start = sizes[0]
    np.testing.assert_allclose(fv[0, start:start + sizes[1]], expected / np.linalg.norm(expected),
                               rtol=1e-4, atol=1e-6)


def test_encoder_state_round_trips_as_plain_arrays(encoder, videos, tmp_path):
    h5py = pytest.importorskip("h5py")
    state = encoder.state()
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "fiu" for v in state.values())
    with h5py.File(tmp_path / "fv.h5", "w") as f:
        for key, value in state.items():
            f[key] = value
    with h5py.File(tmp_path / "fv.h5", "r") as f:
        loaded = {key: f[key][()] for key in state}
    again = FisherVectorEncoder.from_state(loaded)
    assert again.kinds == encoder.kinds and again.n_components == 4
    np.testing.assert_array_equal(again.transform(videos), encoder.transform(videos))


def test_encoder_is_seeded_and_checks_its_input(videos):
    a = FisherVectorEncoder(n_components=4, n_samples=150, seed=3).fit(videos).transform(videos)
    b = FisherVectorEncoder(n_components=4, n_samples=150, seed=3).fit(videos).transform(videos)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="traj: 30 training descriptors for n_components=64"):
        FisherVectorEncoder(n_components=64).fit([{k: v[:30] for k, v in videos[0].items()}])
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        FisherVectorEncoder().transform(videos)


# --- fusion ---------------------------------------------------------------------------------

def toy_kernels(seed: int = 0):
    """Labels of 4 classes; feature A separates {0, 1} from {2, 3}, feature B {0, 2} from
    {1, 3}, noise N nothing. Linear kernels of l2-normalised features."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 12)
    lin = lambda X: (X := X / np.linalg.norm(X, axis=1, keepdims=True)) @ X.T  # noqa: E731
    a = np.c_[np.where(y < 2, 1.0, -1.0), np.zeros(len(y))] + rng.normal(0, 0.3, (len(y), 2))
    b = np.c_[np.where(y % 2 == 0, 1.0, -1.0), np.zeros(len(y))] + rng.normal(0, 0.3, (len(y), 2))
    a, b = np.c_[a, np.ones(len(y))], np.c_[b, np.ones(len(y))]
    return y, lin(a), lin(b), lin(rng.normal(size=(len(y), 3)))


def test_fuse_kernels_and_scores():
    k1, k2 = np.eye(3), np.ones((3, 3))
    np.testing.assert_allclose(fuse_kernels(k1, k2, 0.25), 0.75 * k1 + 0.25 * k2)
    np.testing.assert_allclose(fuse_scores(k1, k2, 1.0), k2)
    with pytest.raises(ValueError, match=r"a=1.5 must be in \[0, 1\]"):
        fuse_kernels(k1, k2, 1.5)


@pytest.mark.parametrize("mode", ["kernel", "late"])
def test_fusion_weight_leans_to_the_informative_kernel(mode):
    """Kernel A against noise: the weight chosen does at least as well as A alone and far better
    than noise alone; late fusion (where noise scores hurt at once) leans to A. Swapping the
    kernels mirrors everything: a -> 1 - a."""
    y, k_good, _, k_noise = toy_kernels()
    y = y < 2                                            # the classes kernel A separates
    a, acc = select_fusion_weight(k_good, k_noise, y, mode=mode, seed=0)
    i = int(round(a * 10))
    assert acc[i] >= acc[0] and acc[i] > acc[-1] + 0.3
    if mode == "late":
        assert a < 0.5
    b, acc_b = select_fusion_weight(k_noise, k_good, y, mode=mode, seed=0)
    np.testing.assert_allclose(acc_b, acc[::-1])
    assert b == pytest.approx(1 - a)


def test_fusion_weight_combines_complementary_kernels():
    y, k_a, k_b, _ = toy_kernels()
    a, acc = select_fusion_weight(k_a, k_b, y, seed=0)
    assert 0 < a < 1
    assert acc.max() > max(acc[0], acc[-1]) + 0.2        # fused beats either kernel alone
    np.testing.assert_array_equal(acc, cross_validate_weights(k_a, k_b, y, seed=0))


def test_fusion_checks_its_input():
    y, k_a, k_b, _ = toy_kernels()
    with pytest.raises(ValueError, match="mode='early'"):
        select_fusion_weight(k_a, k_b, y, mode="early")
    with pytest.raises(ValueError, match="smallest class has 1"):
        select_fusion_weight(k_a[:13, :13], k_b[:13, :13], y[:13])
    with pytest.raises(ValueError, match=r"\(n, n\)"):
        select_fusion_weight(k_a[:, :5], k_b, y)
