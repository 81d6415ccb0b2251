"""Fisher-vector encoding of IDT descriptors (Wang & Schmid, ICCV 2013; Perronnin et al., ECCV
2010): per descriptor type PCA to half the dimension, a diagonal GMM, first- and second-order
Fisher vectors, signed square root and l2 normalisation per type, concatenated.
"""
from __future__ import annotations

import logging
import warnings
from typing import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from pipeline.idt.settings import IDTConfig

log = logging.getLogger(__name__)

KINDS = ("traj", "hog", "hof", "mbhx", "mbhy")
PARAMS = ("n_components", "pca_ratio", "n_samples", "seed")
_MODEL = ("pca_mean", "pca_components", "gmm_weights", "gmm_means", "gmm_covariances")
_CHUNK = 8192   # descriptors per block: bounds the (chunk, K) posterior matrix


def fit_gmm(gmm: GaussianMixture, x: np.ndarray, kind: str) -> GaussianMixture:
    """gmm.fit(x) one EM iteration at a time (warm start: the same iterations and result as one
    fit), reporting each iteration's log-likelihood bound: a bar on a terminal, else a log
    line every 10 s (fitting 256 Gaussians on 150 videos takes minutes per descriptor type)."""
    from pipeline.core.progress import Progress
    max_iter, tol = gmm.max_iter, gmm.tol
    gmm.set_params(max_iter=1, warm_start=True)
    progress, bound = Progress(max_iter, f"EM iterations ({kind})", logger=log), -np.inf
    converged = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(max_iter):
            gmm.fit(x)
            change, bound = gmm.lower_bound_ - bound, gmm.lower_bound_
            progress.step(f"log-likelihood bound {bound:.4f}")
            if abs(change) < tol:
                converged = True
                break
    progress.close()
    gmm.set_params(max_iter=max_iter, warm_start=False)
    gmm.converged_, gmm.n_iter_ = converged, progress.n
    return gmm


def gmm_posteriors(x: np.ndarray, weights: np.ndarray, means: np.ndarray,
                   variances: np.ndarray) -> np.ndarray:
    """Posteriors gamma (N, K) of a diagonal GMM (weights (K,), means (K, D), variances (K, D))
    for x (N, D), computed in float64 with log-sum-exp."""
    x = np.asarray(x, dtype=np.float64)
    prec = 1.0 / variances
    log_det = np.log(variances).sum(axis=1)
    quad = (x ** 2) @ prec.T - 2.0 * x @ (means * prec).T + (means ** 2 * prec).sum(axis=1)
    log_p = np.log(weights) - 0.5 * (x.shape[1] * np.log(2 * np.pi) + log_det + quad)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def fisher_vector(x: np.ndarray, weights: np.ndarray, means: np.ndarray,
                  variances: np.ndarray) -> np.ndarray:
    """Fisher vector of descriptors x (N, D) under a diagonal GMM, no normalisation -> (2KD,).

    Sanchez et al. (IJCV 2013) Eqs. 17-18, gradients w.r.t. the means and standard deviations:
    G_mu_k = 1/(N sqrt(w_k)) sum_n gamma_nk (x_n - mu_k) / sigma_k,
    G_sigma_k = 1/(N sqrt(2 w_k)) sum_n gamma_nk [((x_n - mu_k) / sigma_k)^2 - 1],
    laid out [G_mu (K, D) row-major, G_sigma (K, D)]. skimage.feature.fisher_vector returns
    [G_w (K), G_mu, -G_sigma]: the same mean part, the variance part with the opposite sign.
    No descriptors (N = 0) give zeros.
    """
    K, D = means.shape
    x = np.asarray(x, dtype=np.float64).reshape(-1, D)
    s0, s1, s2 = np.zeros(K), np.zeros((K, D)), np.zeros((K, D))
    for i in range(0, len(x), _CHUNK):
        block = x[i:i + _CHUNK]
        gamma = gmm_posteriors(block, weights, means, variances)
        s0 += gamma.sum(axis=0)
        s1 += gamma.T @ block
        s2 += gamma.T @ block ** 2
    n = max(len(x), 1)
    sigma = np.sqrt(variances)
    g_mu = (s1 - s0[:, None] * means) / (n * np.sqrt(weights)[:, None] * sigma)
    g_sigma = ((s2 - 2 * s1 * means + s0[:, None] * (means ** 2 - variances))
               / (n * np.sqrt(2 * weights)[:, None] * variances))
    return np.concatenate([g_mu.ravel(), g_sigma.ravel()])


def normalise_fisher(fv: np.ndarray) -> np.ndarray:
    """Improved Fisher vector normalisation (Perronnin et al. 2010): signed square root, then l2
    (a zero vector stays zero). fv: (..., d)."""
    fv = np.sign(fv) * np.sqrt(np.abs(fv))
    norm = np.linalg.norm(fv, axis=-1, keepdims=True)
    return fv / np.where(norm > 0, norm, 1.0)


class FisherVectorEncoder(TransformerMixin, BaseEstimator):
    """Per-video IDT Fisher vectors.

    X: a sequence of videos, each a mapping kind -> (n_i, d_kind) descriptors (the dict of
    pipeline.idt.extract_idt or read_idt_text; h5py groups work too) -> (n_videos, sum over kinds
    of 2 K round(pca_ratio d_kind)) float32: 109,056 for the default kinds, K = 256 and half
    dimensions. fit samples n_samples descriptors per kind over all videos (seeded, uniformly
    without replacement), fits PCA on them and a K-component diagonal GaussianMixture on their
    projection. The learned state is plain arrays: state() / from_state(), no pickle.
    """

    def __init__(self, n_components: int = 256, pca_ratio: float = 0.5,
                 n_samples: int = 256_000, kinds: Sequence[str] = KINDS, seed: int = 0):
        self.n_components = n_components
        self.pca_ratio = pca_ratio
        self.n_samples = n_samples
        self.kinds = kinds
        self.seed = seed

    @classmethod
    def from_config(cls, config: IDTConfig, **kw) -> "FisherVectorEncoder":
        """An encoder with the idt_gmm_components, idt_pca_ratio, idt_gmm_samples, idt_seed."""
        return cls(n_components=config.idt_gmm_components, pca_ratio=config.idt_pca_ratio,
                   n_samples=config.idt_gmm_samples, seed=config.idt_seed, **kw)

    def _sample(self, videos: Sequence[Mapping], kind: str, rng: np.random.Generator
                ) -> np.ndarray:
        counts = np.array([len(v[kind]) for v in videos], dtype=np.int64)
        total = int(counts.sum())
        if total < self.n_components:
            raise ValueError(f"{kind}: {total} training descriptors for n_components="
                             f"{self.n_components} Gaussians; need at least as many")
        pick = np.sort(rng.choice(total, size=min(self.n_samples, total), replace=False))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        parts = []
        for i, v in enumerate(videos):
            rows = pick[(pick >= bounds[i]) & (pick < bounds[i + 1])] - bounds[i]
            if len(rows):
                parts.append(np.asarray(v[kind][rows], dtype=np.float64))
        return np.concatenate(parts)

    def fit(self, X: Sequence[Mapping], y=None) -> "FisherVectorEncoder":
        if not len(X):
            raise ValueError("X is empty; expected one mapping of descriptors per video")
        if not 0 < self.pca_ratio <= 1:
            raise ValueError(f"pca_ratio={self.pca_ratio} must be in (0, 1]")
        rng = np.random.default_rng(self.seed)
        self.models_ = {}
        for kind in self.kinds:
            sample = self._sample(X, kind, rng)
            dim = max(1, int(round(self.pca_ratio * sample.shape[1])))
            pca = PCA(n_components=dim, svd_solver="full").fit(sample)
            gmm = fit_gmm(GaussianMixture(self.n_components, covariance_type="diag",
                                          random_state=self.seed), pca.transform(sample), kind)
            if not gmm.converged_:
                log.warning("%s: the GMM did not converge in %d EM iterations", kind,
                            gmm.max_iter)
            self.models_[kind] = {
                "pca_mean": pca.mean_, "pca_components": pca.components_,
                "gmm_weights": gmm.weights_, "gmm_means": gmm.means_,
                "gmm_covariances": gmm.covariances_}
            log.info("%s: %d descriptors sampled, %d -> %d dims, %d Gaussians", kind,
                     len(sample), sample.shape[1], dim, self.n_components)
        return self

    def encode(self, video: Mapping) -> np.ndarray:
        """One video's mapping of descriptors -> its normalised Fisher vector (D_fv,) float32."""
        check_is_fitted(self)
        parts = []
        for kind in self.kinds:
            m = self.models_[kind]
            x = np.asarray(video[kind], dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != len(m["pca_mean"]):
                raise ValueError(f"{kind}: descriptors of shape {x.shape}; expected (n, "
                                 f"{len(m['pca_mean'])})")
            z = (x - m["pca_mean"]) @ m["pca_components"].T
            fv = fisher_vector(z, m["gmm_weights"], m["gmm_means"], m["gmm_covariances"])
            parts.append(normalise_fisher(fv))
        return np.concatenate(parts).astype(np.float32)

    def transform(self, X: Sequence[Mapping]) -> np.ndarray:
        check_is_fitted(self)
        return np.stack([self.encode(v) for v in X])

    def state(self) -> dict[str, np.ndarray]:
        """Parameters and learned state as plain numpy arrays ("<kind>/<array>" and the
        numeric parameters), e.g. for one HDF5 group."""
        check_is_fitted(self)
        out = {name: np.asarray(getattr(self, name)) for name in PARAMS}
        for kind, model in self.models_.items():
            out.update({f"{kind}/{name}": np.asarray(model[name]) for name in _MODEL})
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "FisherVectorEncoder":
        """Rebuild a fitted encoder from state() (arrays or anything np.asarray reads)."""
        kinds = tuple(k for k in KINDS if f"{k}/pca_mean" in state)
        kinds += tuple(sorted({key.split("/")[0] for key in state if "/" in key} - set(kinds)))
        enc = cls(n_components=int(np.asarray(state["n_components"])),
                  pca_ratio=float(np.asarray(state["pca_ratio"])),
                  n_samples=int(np.asarray(state["n_samples"])), kinds=kinds,
                  seed=int(np.asarray(state["seed"])))
        enc.models_ = {kind: {name: np.asarray(state[f"{kind}/{name}"], dtype=np.float64)
                              for name in _MODEL} for kind in kinds}
        return enc
