"""Evaluation: a head per official split on the cached descriptors, scored by the dataset's
metric; per-split results are cached items, then `results.json` and `results.md` are written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from pipeline.cache import StageError, atomic_path, complete_manifest, stage_dir, stage_key, write_json
from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig, key_params
from pipeline.datasets import TEST, TRAIN, Dataset
from pipeline.descriptors import descriptors_dir, load_view
from pipeline.features import load_dataset
from pipeline.metrics import METRICS
from pipeline.report import results_table
from pipeline.tensor_pool import frobenius_scale

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "evaluate", 1


def prepare(descriptors: np.ndarray, *, d: int, order: int) -> np.ndarray:
    """Packed descriptors -> rows whose dot products are Frobenius inner products, l2-normalised."""
    return normalize(frobenius_scale(descriptors.astype(np.float64), d, order))


def label_matrix(dataset: Dataset, ids: list[str]) -> np.ndarray:
    """(n, C) binary matrix of each item's labels."""
    labels = {item.id: item.labels for item in dataset.items()}
    y = np.zeros((len(ids), len(dataset.classes)), dtype=np.int64)
    for row, item_id in enumerate(ids):
        y[row, list(labels[item_id])] = 1
    return y


def score_split(x: np.ndarray, y: np.ndarray, split: dict[str, str], ids: list[str], *,
                metric: str, cfg: EvaluateConfig) -> dict:
    """Train on the split's train items, score its test items; returns {score, n_train, n_test}."""
    role = np.array([split.get(i, "") for i in ids])
    train, test = role == TRAIN, role == TEST
    if not train.any() or not test.any():
        raise StageError(f"split has {train.sum()} train and {test.sum()} test items with "
                         f"descriptors; both must be non-empty")
    svm = LinearSVC(C=cfg.C, dual="auto", max_iter=10000)
    if metric == "map":
        clf = OneVsRestClassifier(svm).fit(x[train], y[train])
        score = METRICS[metric](y[test], clf.decision_function(x[test]))
    else:
        clf = svm.fit(x[train], y[train].argmax(1))
        score = METRICS[metric](y[test].argmax(1), clf.predict(x[test]))
    return {"score": float(score), "n_train": int(train.sum()), "n_test": int(test.sum())}


def method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig) -> str:
    order = {2: "SO", 3: "TO"}[dcfg.order]
    epn = {"none": "no EPN", "maxexp": "MaxExp", "gamma": "Gamma", "asinhe": "AsinhE",
           "sigme": "SigmE", "hdp": "HDP"}[dcfg.epn]
    names = "+".join(name for name, _ in ecfg.stream_backbones().values())
    return f"{order}+{epn} ({names} {'+'.join(ecfg.layer)}, d'={dcfg.sketch_dim})"


def evaluate(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig) -> tuple[Path, dict]:
    """Score every split; returns (folder, results). Cached per split; a no-op when complete."""
    upstream, _, _ = descriptors_dir(ecfg, dcfg)
    if not complete_manifest(upstream):
        raise StageError(f"descriptors for this configuration are missing or incomplete "
                         f"({upstream}); run `make descriptors` with the same settings first")
    key = stage_key(STAGE, STAGE_VERSION, key_params(cfg), upstream=[upstream.name])
    folder = stage_dir(ecfg.cache_root, STAGE, ecfg.dataset, f"{cfg.head}-{upstream.name}", key)
    if (folder / "results.json").is_file():
        log.info("evaluation already complete: %s", folder)
        return folder, json.loads((folder / "results.json").read_text())
    dataset = load_dataset(ecfg)
    ids, descriptors, attrs = load_view(upstream)
    x = prepare(descriptors, d=int(attrs["d"]), order=int(attrs["order"]))
    y = label_matrix(dataset, ids)
    scores = {}
    for name, split in dataset.splits().items():
        path = folder / "splits" / f"{name}.json"
        if not path.is_file():
            write_json(path, score_split(x, y, split, ids, metric=dataset.metric, cfg=cfg))
        scores[name] = json.loads(path.read_text())["score"]
        log.info("%s: %s = %.4f", name, dataset.metric, scores[name])
    scores["mean"] = float(np.mean(list(scores.values())))
    method = method_name(ecfg, dcfg)
    results = {"dataset": ecfg.dataset, "metric": dataset.metric, "method": method,
               "scores": scores, "config": {"extract": ecfg, "descriptors": dcfg, "evaluate": cfg},
               "descriptors": str(upstream)}
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text(results_table({method: scores}, metric=dataset.metric))
    write_json(folder / "results.json", results)
    return folder, json.loads((folder / "results.json").read_text())
