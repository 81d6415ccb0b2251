"""Scoring heads on fixed descriptors, split by split: rows whose dot products are Frobenius
inner products, their Gram matrix (read in slabs), the training-part coordinates a head is fitted
in, fitting with C chosen on the training part only, IDT fusion, and the per-split summary (score,
confusion, per-class scores, predictions)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import h5py
import numpy as np
from scipy.linalg.blas import dsyrk
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC
from tqdm import tqdm

from pipeline.core.cache import StageError
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.datasets import TEST, TRAIN, Dataset
from pipeline.pooling.descriptors import VIEW
from pipeline.learn.heads import build_head
from pipeline.results.ledger import Ledger
from pipeline.results.metrics import METRICS
from pipeline.pooling.packing import frobenius_scale

log = logging.getLogger(__name__)

def prepare(descriptors: np.ndarray, *, d: int, order: int) -> np.ndarray:
    """Packed descriptors -> rows whose dot products are Frobenius inner products, l2-normalised
    (first-order vectors are l2-normalised as they are)."""
    x = descriptors.astype(np.float64)
    return normalize(x if order == 1 else frobenius_scale(x, d, order))


def label_matrix(dataset: Dataset, ids: list[str]) -> np.ndarray:
    """(n, C) binary matrix of each item's labels."""
    labels = {item.id: item.labels for item in dataset.items()}
    y = np.zeros((len(ids), len(dataset.classes)), dtype=np.int64)
    for row, item_id in enumerate(ids):
        y[row, list(labels[item_id])] = 1
    return y


def gram_matrix(rows, *, d: int, order: int, chunk_mb: float = 64.0) -> np.ndarray:
    """K = X X^T (n, n) float64 of X = prepare(rows), without ever holding X.

    rows: packed descriptors (n, n_unique) float32, an array or an h5py Dataset. They are read
    in slabs of all n rows by w columns (about chunk_mb MiB in float64), each slab read once:
    converted to float64, Frobenius-scaled (order > 1), and added to the upper triangle of K by
    one BLAS syrk. The rows' l2 normalisation is applied to K at the end,
    K_ij / (||x_i|| ||x_j||) with ||x_i||^2 = K_ii (zero rows stay zero, as in prepare).
    Column slabs rather than pairs of row chunks: every pair of videos meets in each slab, so
    the file is read once instead of once per row chunk. Memory: K plus one slab (float32 read,
    float64 copy)."""
    n, m = rows.shape
    width = max(1, int(chunk_mb * 2 ** 20) // (8 * max(n, 1)))
    chunks = getattr(rows, "chunks", None)
    if chunks:                                   # whole HDF5 chunks per slab
        width = max(chunks[1], width // chunks[1] * chunks[1])
    scale = None if order == 1 else frobenius_scale(np.ones(m), d, order)
    K = np.zeros((n, n), order="F")
    for c0 in tqdm(range(0, m, width), desc="gram", unit="slab", disable=None):
        slab = np.array(rows[:, c0:c0 + width], dtype=np.float64, order="C")  # (n, w) copy
        if scale is not None:
            slab *= scale[c0:c0 + width]
        K = dsyrk(1.0, slab.T, beta=1.0, c=K, trans=1, overwrite_c=1)  # K += slab slab^T (upper)
        del slab                                 # before the next slab is read
    norms = np.sqrt(np.diag(K))
    norms[norms == 0] = 1.0
    K /= norms[:, None]
    K /= norms[None, :]
    block = 1024
    for b0 in range(0, n, block):                # mirror the upper triangle, block by block
        b1 = min(n, b0 + block)
        K[b0:b1, :b0] = K[:b0, b0:b1].T
        diag = K[b0:b1, b0:b1]
        K[b0:b1, b0:b1] = np.triu(diag) + np.triu(diag, 1).T
    return K.T                                   # symmetric: the C-ordered view of K


def load_gram(folder: Path, *, chunk_mb: float = 64.0) -> tuple[list[str], np.ndarray, dict]:
    """(ids, K (n, n) = gram_matrix of the view's descriptors, attrs) of a complete descriptors
    folder: load_view's counterpart that never holds the descriptors."""
    with h5py.File(Path(folder) / VIEW, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]]
        attrs = dict(f.attrs)
        K = gram_matrix(f["descriptors"], d=int(attrs["d"]), order=int(attrs["order"]),
                        chunk_mb=chunk_mb)
    return ids, K, attrs


@dataclasses.dataclass(frozen=True, eq=False)
class Gram:
    """The Gram matrix K = X X^T (n, n) float64 of prepared rows X (n, D): all that evaluation
    needs of X. fit_scores, fused_scores and score_split take it in place of the rows."""

    K: np.ndarray


def as_gram(x) -> np.ndarray:
    """Prepared rows x (n, D) or a Gram -> K (n, n) float64."""
    if isinstance(x, Gram):
        return x.K
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def training_coordinates(K: np.ndarray, train: np.ndarray, *, rtol: float = 1e-10) -> np.ndarray:
    """K (n, n) Gram matrix of rows x, train (n,) bool -> z (n, r), r <= n_train: the rows'
    coordinates in an orthonormal basis Q (D, r) of the training rows' span, from K alone.

    K_tt = K[train][:, train] = V diag(lam) V^T; on the eigenvalues lam > rtol * max(lam),
    Q = x_train^T V diag(lam^-1/2) is orthonormal and z = x Q = K[:, train] V diag(lam^-1/2),
    so z_i . z_j = x_i . x_j whenever x_j is a training row. An L2-regularised linear model's
    weights lie in that span (representer theorem), so w.x = w.(Q Q^T x): the SVM / logistic
    regression on z is the same model with the same scores, in r dimensions instead of D (the
    bias and the L2 penalty are invariant to the rotation). A dropped direction holds less than
    rtol of the largest eigenvalue. Columns are ordered by decreasing eigenvalue."""
    train = np.asarray(train, dtype=bool)
    return K[:, train] @ coordinate_basis(K[np.ix_(train, train)], rtol=rtol)


def coordinate_basis(K_tt: np.ndarray, *, rtol: float = 1e-10) -> np.ndarray:
    """A = V diag(lam^-1/2) (n_train, r) of training_coordinates, from the training rows' Gram
    matrix K_tt: z = K(x, train) A, and Q = x_train^T A is the basis itself (D, r), with which a
    head fitted on z becomes a head on rows x (heads' in_basis). All-zero training rows: one zero
    column (no direction)."""
    lam, V = np.linalg.eigh(K_tt)
    keep = lam > rtol * max(float(lam.max(initial=0.0)), 0.0)
    if not keep.any():
        return np.zeros((len(K_tt), 1))
    lam, V = lam[keep][::-1], V[:, keep][:, ::-1]
    return V / np.sqrt(lam)


def single_C(cfg: EvaluateConfig) -> float:
    """One C where a path takes no grid (one-vs-rest mAP, IDT fusion): the value itself, or
    from a grid 1.0 when it holds it (the common SVM default), else its middle value."""
    if not isinstance(cfg.C, tuple):
        return float(cfg.C)
    return 1.0 if 1.0 in cfg.C else float(sorted(cfg.C)[len(cfg.C) // 2])


def fit_scores(x, y: np.ndarray, train: np.ndarray, test: np.ndarray, *,
               metric: str, cfg: EvaluateConfig, seed: int = 0,
               keep: dict | None = None) -> tuple[np.ndarray, dict]:
    """Class scores (n_test, C) of a head trained on the train rows, and its chosen settings.
    x: prepared rows (n, D) or their Gram. mAP (multi-label) uses one-vs-rest linear SVMs;
    accuracy any registered head, which `keep` (a dict) receives with its coordinate basis:
    keep["head"] fitted on z = K(x, train) keep["basis"] (see coordinate_basis).

    Every head sees the videos through training_coordinates (n, r <= n_train): for the SVM and
    logistic regression (L2-regularised, linear) that is the full-width model exactly; the torch
    heads (linear, mlp) are trained on these coordinates too (ours: Adam's per-coordinate steps
    and the layers' initialisation are not rotation invariant, so they are not the D-wide torch
    models, which a D of 2.8M would make impractical anyway)."""
    K = as_gram(x)
    train = np.asarray(train, dtype=bool)
    basis = coordinate_basis(K[np.ix_(train, train)])
    z = K[:, train] @ basis
    if metric == "map":
        svm = LinearSVC(C=single_C(cfg), dual="auto",
                        max_iter=10000)
        clf = OneVsRestClassifier(svm).fit(z[train], y[train])
        return clf.decision_function(z[test]), {}
    params = {"C": cfg.C, "C_extend": cfg.C_extend} if cfg.head in ("svm", "logreg") else {}
    head = build_head(cfg.head, seed=seed, **params).fit(z[train], y[train].argmax(1))
    scores = np.full((int(test.sum()), y.shape[1]), -np.inf)
    scores[:, head.classes_] = head.decision_function(z[test])
    if keep is not None:
        keep.update(head=head, basis=basis)
    return scores, dict(getattr(head, "chosen_params_", {}))


def kernel_head_scorer(cfg: EvaluateConfig, seed: int = 0):
    """The head that scores HoT alone (fit_scores: the SVM on the training coordinates of the
    Gram matrix, C chosen by the same cross-validation on the training rows), as a scorer of a
    precomputed kernel (pipeline.idt.fusion.Scorer): HoT and HoT+IDT rows differ by the fusion
    only, never by the classifier (docs/method.md, "IDT and fusion")."""
    def score(k_train: np.ndarray, y_train: np.ndarray, k_val: np.ndarray):
        basis = coordinate_basis(k_train)
        params = {"C": cfg.C, "C_extend": cfg.C_extend} if cfg.head in ("svm", "logreg") else {}
        head = build_head(cfg.head, seed=seed, **params).fit(k_train @ basis, y_train)
        return head.classes_, head.decision_function(k_val @ basis)
    return score


def fused_scores(x, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 idt: tuple[np.ndarray, np.ndarray], *, cfg: EvaluateConfig) -> tuple[np.ndarray, dict]:
    """Class scores of HoT fused with IDT (HoT+IDT, HAF/HoT): the kernels (or the scores)
    summed with weight a on IDT, a cross-validated on the training part only; idt="only" is
    a = 1. The classifier is the one HoT alone is scored with (kernel_head_scorer: the same SVM
    family, C chosen by the same cross-validation). x: prepared rows (n, D) or their Gram; idt:
    the split's IDT kernels (train x train, test x train)."""
    from pipeline.idt.fusion import fuse_kernels, select_fusion_weight
    k_idt_train, k_idt_test = idt
    K = as_gram(x)
    k_train, k_test = K[np.ix_(train, train)], K[np.ix_(test, train)]
    labels = y[train].argmax(1)
    scorer = kernel_head_scorer(cfg)
    if cfg.idt == "only":
        a, acc = 1.0, None
    else:
        a, acc = select_fusion_weight(k_train, k_idt_train, labels, mode=cfg.fusion,
                                      scorer=scorer)
    if cfg.fusion == "kernel" or a in (0.0, 1.0):
        classes, raw = scorer(fuse_kernels(k_train, k_idt_train, a), labels,
                              fuse_kernels(k_test, k_idt_test, a))
    else:
        classes, s_hot = scorer(k_train, labels, k_test)
        _, s_idt = scorer(k_idt_train, labels, k_idt_test)
        raw = (1 - a) * s_hot + a * s_idt
    scores = np.full((int(test.sum()), y.shape[1]), -np.inf)
    scores[:, classes] = raw.reshape(len(raw), -1) if raw.ndim == 2 else raw[:, None]
    return scores, {"idt_weight": a, "classifier": f"{cfg.head}, C={cfg.C} (as HoT alone)",
                    **({"cv_accuracy": [float(v) for v in acc]} if acc is not None else {})}


def score_split(x, y: np.ndarray, split: dict[str, str], ids: list[str], *,
                metric: str, cfg: EvaluateConfig, classes: tuple[str, ...] = (),
                idt=None, keep: dict | None = None) -> dict:
    """Train on the split's train items that have descriptors, score its test items.
    x: prepared rows (n, D) or their Gram (n, n), rows in the order of ids.

    Returns score, counts (n_train, n_test, and the split's videos without a descriptor:
    missing_train, missing_test), per-class scores, the confusion matrix and each test video's
    prediction and class scores. keep: as fit_scores (not with idt)."""
    have = set(ids)
    missing = {role: sum(1 for i, r in split.items() if r == role and i not in have)
               for role in (TRAIN, TEST)}
    role = np.array([split.get(i, "") for i in ids])
    train, test = role == TRAIN, role == TEST
    if not train.any() or not test.any():
        raise StageError(f"split has {train.sum()} train and {test.sum()} test items with "
                         f"descriptors ({missing[TRAIN]} and {missing[TEST]} missing); both "
                         f"must be non-empty")
    x = x if isinstance(x, Gram) else Gram(as_gram(x))
    if idt is not None:
        train_ids = [i for i, t in zip(ids, train) if t]
        test_ids = [i for i, t in zip(ids, test) if t]
        scores, chosen = fused_scores(x, y, train, test, idt(train_ids, test_ids), cfg=cfg)
    else:
        scores, chosen = fit_scores(x, y, train, test, metric=metric, cfg=cfg, keep=keep)
    test_ids = [i for i, t in zip(ids, test) if t]
    return {"n_train": int(train.sum()), "n_test": int(test.sum()),
            "missing_train": missing[TRAIN], "missing_test": missing[TEST], "chosen": chosen,
            **summarise(scores, y[test], test_ids, metric=metric, classes=classes)}


def summarise(scores: np.ndarray, truth: np.ndarray, test_ids: list[str], *, metric: str,
              classes: tuple[str, ...]) -> dict:
    """Score, per-class scores, confusion and per-video predictions of test scores (n_test, C)
    against truth (n_test, C) binary, as score_split and train record them."""
    if metric == "map":
        score, per_class, confusion = METRICS[metric](truth, scores), {}, []
    else:
        true, pred = truth.argmax(1), scores.argmax(1)
        score = METRICS[metric](true, pred)
        n = truth.shape[1]
        matrix = np.zeros((n, n), np.int64)
        np.add.at(matrix, (true, pred), 1)
        per_class = {(classes[c] if classes else str(c)): float(matrix[c, c] / matrix[c].sum())
                     for c in range(n) if matrix[c].sum()}
        confusion = matrix.tolist()
    predictions = [{"id": i, "true": [int(c) for c in np.flatnonzero(t)], "pred": int(s.argmax()),
                    "scores": [round(float(v), 5) for v in s]}
                   for i, t, s in zip(test_ids, truth, scores)]
    return {"score": float(score), "per_class": per_class, "confusion": confusion,
            "predictions": predictions}


def ledger_of(ecfg: ExtractConfig, cfg: EvaluateConfig) -> Ledger:
    return Ledger(cfg.ledger or Path(ecfg.cache_root) / "ledger.sqlite")
