"""Evaluation: a head per split on the cached descriptors, scored by the dataset's metric; each
split's result is cached, appended to the results ledger, and `results.json` / `results.md` (a
paper-shaped table) are written. Nothing upstream is recomputed.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from pipeline.cache import (StageError, atomic_path, digest, library_versions, stage_dir, stage_key,
                            write_json)
from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig, key_params
from pipeline.datasets import TEST, TRAIN, Dataset
from pipeline.descriptors import descriptors_dir, load_view, view_current
from pipeline.heads import build_head
from pipeline.ledger import Ledger
from pipeline.metrics import METRICS
from pipeline.report import paper_table
from pipeline.tensor_pool import frobenius_scale

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "evaluate", 3
PROTOCOLS = {"yup": "yup", "mpii_cooking": "mpii"}     # dataset name -> ledger protocol
EPN_NAMES = {"none": "no EPN", "maxexp": "MaxExp", "gamma": "Gamma", "asinhe": "AsinhE",
             "sigme": "SigmE", "hdp": "HDP"}


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


def training_span(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """x (n, D) -> (n, n_train) coordinates in an orthonormal basis Q of the training rows' span.

    An L2-regularised linear model's weights lie in that span (representer theorem), so
    w.x = w.(Q Q^T x): the SVM / logistic regression on x Q is the same model with the same
    scores, in n_train dimensions instead of D (TO at d = 128: 366k -> ~100)."""
    q, _ = np.linalg.qr(x[train].T)           # (D, n_train)
    return x @ q


def fit_scores(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *,
               metric: str, cfg: EvaluateConfig, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Class scores (n_test, C) of a head trained on the train rows, and its chosen settings.
    mAP (multi-label) uses one-vs-rest linear SVMs; accuracy any registered head."""
    if metric == "map":
        svm = LinearSVC(C=cfg.C if not isinstance(cfg.C, tuple) else cfg.C[0], dual="auto",
                        max_iter=10000)
        clf = OneVsRestClassifier(svm).fit(x[train], y[train])
        return clf.decision_function(x[test]), {}
    params = {"C": cfg.C} if cfg.head in ("svm", "logreg") else {}
    if cfg.head in ("svm", "logreg") and x.shape[1] > train.sum():
        x = training_span(x, train)
    head = build_head(cfg.head, seed=seed, **params).fit(x[train], y[train].argmax(1))
    scores = np.full((int(test.sum()), y.shape[1]), -np.inf)
    scores[:, head.classes_] = head.decision_function(x[test])
    return scores, dict(getattr(head, "chosen_params_", {}))


def fused_scores(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 idt: tuple[np.ndarray, np.ndarray], *, cfg: EvaluateConfig) -> tuple[np.ndarray, dict]:
    """Class scores of an SVM on HoT fused with IDT (HoT+IDT, HAF/HoT): the kernels (or the
    scores) summed with weight a on IDT, a cross-validated on the training part only;
    idt="only" is a = 1. idt: the split's IDT kernels (train x train, test x train)."""
    from pipeline.idt.fusion import fuse_kernels, select_fusion_weight
    k_idt_train, k_idt_test = idt
    k_train, k_test = x[train] @ x[train].T, x[test] @ x[train].T
    labels = y[train].argmax(1)
    C = cfg.C if not isinstance(cfg.C, tuple) else cfg.C[0]
    if cfg.idt == "only":
        a, acc = 1.0, None
    else:
        a, acc = select_fusion_weight(k_train, k_idt_train, labels, mode=cfg.fusion, C=C)
    head = build_head("svm", C=C, kernel="precomputed")
    if cfg.fusion == "kernel" or a in (0.0, 1.0):
        head.fit(fuse_kernels(k_train, k_idt_train, a), labels)
        raw = head.decision_function(fuse_kernels(k_test, k_idt_test, a))
    else:
        hot = build_head("svm", C=C, kernel="precomputed").fit(k_train, labels)
        head.fit(k_idt_train, labels)
        raw = (1 - a) * hot.decision_function(k_test) + a * head.decision_function(k_idt_test)
    scores = np.full((int(test.sum()), y.shape[1]), -np.inf)
    scores[:, head.classes_] = raw
    return scores, {"idt_weight": a, **({"cv_accuracy": [float(v) for v in acc]} if acc is not None else {})}


def score_split(x: np.ndarray, y: np.ndarray, split: dict[str, str], ids: list[str], *,
                metric: str, cfg: EvaluateConfig, classes: tuple[str, ...] = (),
                idt=None) -> dict:
    """Train on the split's train items that have descriptors, score its test items.

    Returns score, counts (n_train, n_test, and the split's videos without a descriptor:
    missing_train, missing_test), per-class scores, the confusion matrix and each test video's
    prediction and class scores."""
    have = set(ids)
    missing = {role: sum(1 for i, r in split.items() if r == role and i not in have)
               for role in (TRAIN, TEST)}
    role = np.array([split.get(i, "") for i in ids])
    train, test = role == TRAIN, role == TEST
    if not train.any() or not test.any():
        raise StageError(f"split has {train.sum()} train and {test.sum()} test items with "
                         f"descriptors ({missing[TRAIN]} and {missing[TEST]} missing); both "
                         f"must be non-empty")
    if idt is not None:
        train_ids = [i for i, t in zip(ids, train) if t]
        test_ids = [i for i, t in zip(ids, test) if t]
        scores, chosen = fused_scores(x, y, train, test, idt(train_ids, test_ids), cfg=cfg)
    else:
        scores, chosen = fit_scores(x, y, train, test, metric=metric, cfg=cfg)
    truth = y[test]
    if metric == "map":
        score = METRICS[metric](truth, scores)
        per_class = {}
        confusion: list = []
    else:
        true, pred = truth.argmax(1), scores.argmax(1)
        score = METRICS[metric](true, pred)
        n = y.shape[1]
        confusion = np.zeros((n, n), np.int64)
        np.add.at(confusion, (true, pred), 1)
        per_class = {(classes[c] if classes else str(c)): float(confusion[c, c] / confusion[c].sum())
                     for c in range(n) if confusion[c].sum()}
        confusion = confusion.tolist()
    test_ids = [i for i, t in zip(ids, test) if t]
    predictions = [{"id": i, "true": [int(c) for c in np.flatnonzero(t)], "pred": int(s.argmax()),
                    "scores": [round(float(v), 5) for v in s]} for i, t, s in zip(test_ids, truth, scores)]
    return {"score": float(score), "n_train": int(train.sum()), "n_test": int(test.sum()),
            "missing_train": missing[TRAIN], "missing_test": missing[TEST], "chosen": chosen,
            "per_class": per_class, "confusion": confusion, "predictions": predictions}


def method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig | None = None) -> str:
    """The paper-style row name: "SO+MaxExp", "TO (no EPN)", "first-order (mean)", with the head
    when it is not the SVM; EvaluateConfig.name overrides it."""
    if cfg is not None and cfg.name:
        return cfg.name
    if dcfg.order == 1:
        name = f"first-order ({dcfg.first_order})"
    else:
        order = {2: "SO", 3: "TO"}[dcfg.order]
        name = f"{order} (no EPN)" if dcfg.epn == "none" else f"{order}+{EPN_NAMES[dcfg.epn]}"
    if cfg is not None and cfg.idt == "only":
        return "IDT (Fisher vectors)"
    if cfg is not None and cfg.idt == "on":
        name += "+IDT"
    if cfg is not None and cfg.head != "svm":
        name += f" [{cfg.head}]"
    return name


def ledger_of(ecfg: ExtractConfig, cfg: EvaluateConfig) -> Ledger:
    return Ledger(cfg.ledger or Path(ecfg.cache_root) / "ledger.sqlite")


def evaluate(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig,
             icfg=None) -> tuple[Path, dict]:
    """Score every split; returns (folder, results). Keyed by the head's settings, the
    descriptors (folder and the items they hold) and the content of the splits, so an edited
    split is scored anew; a no-op when complete. Each split is appended to the ledger once.
    icfg: the IDT settings (pipeline.idt.settings.IDTConfig) when cfg.idt is "on" or "only"."""
    upstream, inp = descriptors_dir(ecfg, dcfg)
    if not view_current(upstream, inp.sources):
        raise StageError(f"descriptors for this configuration are missing or out of date "
                         f"({upstream}); run `make descriptors` with the same settings first")
    dataset = inp.dataset
    ids, descriptors, attrs = load_view(upstream)
    splits = dataset.splits()
    params = {**key_params(cfg), "splits": digest(splits), "items": attrs["sources"]}
    idt = None
    if cfg.idt != "off":
        from pipeline.idt.encode import idt_kernel
        from pipeline.idt.settings import IDTConfig
        from pipeline.idt.stage import idt_folder
        icfg = icfg or IDTConfig()
        params["idt"] = [idt_folder(ecfg, icfg, dataset)[0].name, key_params(icfg)]
        idt = lambda train_ids, test_ids: idt_kernel(ecfg, icfg, train_ids, test_ids)  # noqa: E731
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name])
    folder = stage_dir(ecfg.cache_root, STAGE, dataset.identity, f"{cfg.head}-{upstream.name}", key)
    method = method_name(ecfg, dcfg, cfg)
    if (folder / "results.json").is_file():
        log.info("evaluation already complete (no stage-1, stage-2 or training work): %s", folder)
        return folder, json.loads((folder / "results.json").read_text())
    log.info("evaluating %s on %s: stage 1 and 2 read from the cache (%s)", method,
             dataset.identity, upstream)
    x = prepare(descriptors, d=int(attrs["d"]), order=int(attrs["order"]))
    y = label_matrix(dataset, ids)
    ledger, protocol = ledger_of(ecfg, cfg), PROTOCOLS.get(dataset.name, "splits")
    config = {"extract": ecfg, "descriptors": dcfg, "evaluate": cfg}
    per_split = {}
    for name, split in splits.items():
        path = folder / "splits" / f"{name}.json"
        if not path.is_file():
            start = time.perf_counter()
            result = score_split(x, y, split, ids, metric=dataset.metric, cfg=cfg,
                                 classes=dataset.classes, idt=idt)
            ledger.append({"dataset": dataset.identity, "protocol": protocol, "split": name,
                           "method": method, "metric": dataset.metric, "score": result["score"],
                           "config_key": key, "n_train": result["n_train"],
                           "n_test": result["n_test"], "n_missing_train": result["missing_train"],
                           "n_missing_test": result["missing_test"], "config": config,
                           "cache": {"features": str(inp.folder), "descriptors": str(upstream),
                                     "evaluate": str(folder)},
                           "per_class": result["per_class"], "confusion": result["confusion"],
                           "classes": list(dataset.classes), "predictions": result["predictions"],
                           "chosen": result["chosen"], "wall_time": time.perf_counter() - start,
                           "versions": library_versions()})
            write_json(path, result)
        per_split[name] = json.loads(path.read_text())
        log.info("%s: %s = %.4f", name, dataset.metric, per_split[name]["score"])
    scores = {name: r["score"] for name, r in per_split.items()}
    scores["mean"] = float(np.mean(list(scores.values())))
    records = [r for r in ledger.records(config_key=key)]
    table = paper_table(records) if records else ""
    results = {"dataset": dataset.identity, "metric": dataset.metric, "method": method,
               "scores": scores, "splits": {n: {k: v for k, v in r.items() if k != "predictions"}
                                            for n, r in per_split.items()},
               "config": config, "config_key": key, "descriptors": str(upstream),
               "features": str(inp.folder)}
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text(table)
    write_json(folder / "results.json", results)
    return folder, json.loads((folder / "results.json").read_text())
