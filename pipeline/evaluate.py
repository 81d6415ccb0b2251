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

from pipeline.cache import StageError, atomic_path, digest, stage_dir, stage_key, write_json
from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig, key_params
from pipeline.datasets import TEST, TRAIN, Dataset
from pipeline.descriptors import descriptors_dir, load_view, view_current
from pipeline.metrics import METRICS
from pipeline.report import results_table
from pipeline.tensor_pool import frobenius_scale

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "evaluate", 2


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
    """Train on the split's train items that have descriptors, score its test items.

    Returns {score, n_train, n_test, missing_train, missing_test}: the items the split names
    that have no descriptor (failed or not yet extracted) are counted, not scored."""
    have = set(ids)
    missing = {role: sum(1 for i, r in split.items() if r == role and i not in have)
               for role in (TRAIN, TEST)}
    role = np.array([split.get(i, "") for i in ids])
    train, test = role == TRAIN, role == TEST
    if not train.any() or not test.any():
        raise StageError(f"split has {train.sum()} train and {test.sum()} test items with "
                         f"descriptors ({missing[TRAIN]} and {missing[TEST]} missing); both "
                         f"must be non-empty")
    svm = LinearSVC(C=cfg.C, dual="auto", max_iter=10000)
    if metric == "map":
        clf = OneVsRestClassifier(svm).fit(x[train], y[train])
        score = METRICS[metric](y[test], clf.decision_function(x[test]))
    else:
        clf = svm.fit(x[train], y[train].argmax(1))
        score = METRICS[metric](y[test].argmax(1), clf.predict(x[test]))
    return {"score": float(score), "n_train": int(train.sum()), "n_test": int(test.sum()),
            "missing_train": missing[TRAIN], "missing_test": missing[TEST]}


def counts_note(splits: dict[str, dict]) -> str:
    """One line per split with scored and missing videos, when any are missing."""
    if not any(r["missing_train"] or r["missing_test"] for r in splits.values()):
        return ""
    lines = [f"- {name}: scored {r['n_train']} train / {r['n_test']} test videos; missing "
             f"{r['missing_train']} train / {r['missing_test']} test (no features or descriptor)"
             for name, r in splits.items()]
    return "\nVideos per split:\n" + "\n".join(lines) + "\n"


def method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig) -> str:
    order = {2: "SO", 3: "TO"}[dcfg.order]
    epn = {"none": "no EPN", "maxexp": "MaxExp", "gamma": "Gamma", "asinhe": "AsinhE",
           "sigme": "SigmE", "hdp": "HDP"}[dcfg.epn]
    names = "+".join(name for name, _ in ecfg.stream_backbones().values())
    return f"{order}+{epn} ({names} {'+'.join(ecfg.layer)}, d'={dcfg.sketch_dim})"


def evaluate(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig) -> tuple[Path, dict]:
    """Score every split; returns (folder, results). Keyed by the head's settings, the
    descriptors (folder and the items they hold) and the content of the splits, so an edited
    split is scored anew; a no-op when complete."""
    upstream, inp = descriptors_dir(ecfg, dcfg)
    if not view_current(upstream, inp.sources):
        raise StageError(f"descriptors for this configuration are missing or out of date "
                         f"({upstream}); run `make descriptors` with the same settings first")
    dataset = inp.dataset
    ids, descriptors, attrs = load_view(upstream)
    splits = dataset.splits()
    params = {**key_params(cfg), "splits": digest(splits), "items": attrs["sources"]}
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name])
    folder = stage_dir(ecfg.cache_root, STAGE, dataset.identity, f"{cfg.head}-{upstream.name}", key)
    if (folder / "results.json").is_file():
        log.info("evaluation already complete: %s", folder)
        return folder, json.loads((folder / "results.json").read_text())
    x = prepare(descriptors, d=int(attrs["d"]), order=int(attrs["order"]))
    y = label_matrix(dataset, ids)
    per_split = {}
    for name, split in splits.items():
        path = folder / "splits" / f"{name}.json"
        if not path.is_file():
            write_json(path, score_split(x, y, split, ids, metric=dataset.metric, cfg=cfg))
        per_split[name] = json.loads(path.read_text())
        log.info("%s: %s = %.4f", name, dataset.metric, per_split[name]["score"])
    scores = {name: r["score"] for name, r in per_split.items()}
    scores["mean"] = float(np.mean(list(scores.values())))
    method = method_name(ecfg, dcfg)
    results = {"dataset": dataset.identity, "metric": dataset.metric, "method": method,
               "scores": scores, "splits": per_split,
               "config": {"extract": ecfg, "descriptors": dcfg, "evaluate": cfg},
               "descriptors": str(upstream), "features": str(inp.folder)}
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text(results_table({method: scores}, metric=dataset.metric) + counts_note(per_split))
    write_json(folder / "results.json", results)
    return folder, json.loads((folder / "results.json").read_text())
