"""Learned stage 2: per split, an attention pooling (HoT group attention, plain HoT pooling, AP,
pyramid or self-attention) trained end to end on the training part's cached sketched windows,
scored on the test part; models, learned weights and ledger records saved like pipeline.learn.evaluate.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from pipeline.learn.attention import build_attention, load_attention
from pipeline.core.cache import (StageError, atomic_path, digest, item_path, json_intact,
                                 bytes_intact, file_checksum, library_versions, read_json, seal,
                                 sealed_intact,
                            stage_dir, stage_key, stage_lock, sweep_temporary, write_json)
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params
from pipeline.datasets import TEST, TRAIN
from pipeline.pooling.descriptors import read_parts
from pipeline.learn.evaluate import (PROTOCOLS, Gram, gram_matrix, label_matrix, ledger_of, method_name,
                               score_split, summarise)
from pipeline.learn.heads.base import saved_intact
from pipeline.results.metrics import METRICS
from pipeline.results.tables import paper_table
from pipeline.pooling.sketched import compute_sketched, load_sketched, sketched_ids

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "train", 1
CONFIG_FILE = "config.json"        # beside each split's model: everything predict needs
WEIGHTS_FILE = "weights.h5"        # the learned weights per video and per group
RESULT_FILE = "result.json"        # a split's scores, written last: the split is done
GROUP_INPUT = ("none", "hot")      # classifiers fed (phi, group) pairs; the others phi alone


def pooling_params(dcfg: DescriptorConfig) -> dict:
    """The HoT pooling settings of stage 2 that the group-attention classifiers share."""
    return {"order": dcfg.order, "epn": dcfg.epn, "epn_params": dict(dcfg.epn_params),
            "spectrum_norm": dcfg.spectrum_norm, "center": dcfg.center}


# attention name -> its own parameters from the configs (the common training ones are added)
PARAMS: dict[str, Callable[[DescriptorConfig, TrainConfig], dict]] = {
    "none": lambda d, t: pooling_params(d),
    "hot": lambda d, t: {**pooling_params(d), "hidden": t.hidden, "nonneg": t.nonneg},
    "ap": lambda d, t: {"rank": t.rank, "bottom_up": t.bottom_up != "none",
                        "per_class_bottom_up": t.bottom_up == "per_class"},
    "pyramid": lambda d, t: {"fusion": t.pyramid_fusion, "n_maps": t.maps},
    "self": lambda d, t: {"n_queries": t.queries},
}
# TrainConfig keys that belong to some attentions only: they key only those attentions' runs
OWNERS = {"nonneg": ("hot",), "hidden": ("hot",), "rank": ("ap",), "bottom_up": ("ap",),
          "pyramid_fusion": ("pyramid",), "maps": ("pyramid",), "queries": ("self",),
          "positions": ("ap", "pyramid", "self")}
MAPS_LIMIT_GB = 8.0                # positions=cells holds the maps of every video in float32


def build_classifier(ecfg: ExtractConfig, dcfg: DescriptorConfig, tcfg: TrainConfig):
    """An unfitted classifier for tcfg.attention with the configs' settings."""
    if tcfg.attention in GROUP_INPUT and dcfg.order == 1:
        raise ValueError(f"attention={tcfg.attention} pools second- or third-order tensors; "
                         f"use order=2 or order=3 (or attention=ap for first-order pooling)")
    return build_attention(tcfg.attention, **PARAMS[tcfg.attention](dcfg, tcfg), lr=tcfg.lr,
                           weight_decay=tcfg.weight_decay, batch_size=tcfg.train_batch,
                           max_epochs=tcfg.max_epochs, patience=tcfg.patience,
                           seed=tcfg.train_seed, device=ecfg.device)


def samples(attention: str, videos: list[tuple[np.ndarray, np.ndarray]],
            levels: list[int] | None = None) -> list:
    """The classifier's input: (phi, group) pairs for HoT pooling; for pyramid attention with
    several levels, phi cut into the levels (the stored parts, e.g. Mixed_4f and Mixed_5c: the
    feature pyramid, top last); else phi (N, d) alone (the windows as positions)."""
    if attention in GROUP_INPUT:
        return list(videos)
    out = []
    for x, _ in videos:
        if isinstance(x, list):                  # positions=cells: the stored maps, top last
            out.append(x if attention == "pyramid" else x[-1])
        elif attention == "pyramid" and levels and len(levels) > 1:
            out.append(np.split(x, np.cumsum(levels)[:-1], axis=1))
        else:
            out.append(x)
    return out


def map_parts(manifest: dict, parts: list[str]) -> list[str]:
    """The stored maps ("<stream>/<layer>/map") of the layers of the chosen parts, in their
    order (pyramid levels: top last)."""
    stored = set(manifest.get("outputs", []))
    maps = [f"{p.rsplit('/', 1)[0]}/map" for p in parts]
    return [m for i, m in enumerate(maps) if m in stored and m not in maps[:i]]


def load_maps(folder: Path, ids: list[str], parts: list[str], groups: list[str],
              group_names: list[str]) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """positions=cells: per video ([its maps (N, D, H', W') float32, one per part], group index
    per window), the windows in the order of the sketched ones (read_parts' order)."""
    index = {g: i for i, g in enumerate(group_names)}
    out = []
    for item_id in ids:
        maps, names = read_parts(item_path(folder, item_id), parts, groups)
        out.append(([m.astype(np.float32) for m in maps], np.array([index[g] for g in names])))
    return out


def level_widths(sketched_folder: Path) -> list[int]:
    """The width of each stored part in the sketched windows (sketch_dim each, or the raw part
    dimensions with sketch_dim=0), from the sketched stage's manifest."""
    m = json.loads((Path(sketched_folder) / "manifest.json").read_text())
    return [int(m["sketch_dim"])] * len(m["part_dims"]) if m["sketch_dim"] else list(m["part_dims"])


def learned_method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig,
                        tcfg: TrainConfig, clf) -> str:
    """The paper-style row name: "SO+MaxExp+Att", "TO+MaxExp+Att", "SO+MaxExp (uniform)" (no
    attention), "AP (rank-1)", "STPA (product)", "self-attention (1 query)", then the head as
    in evaluate's rows (none for the SVM, else e.g. " [linear]": the end-to-end softmax);
    EvaluateConfig.name overrides it."""
    if vcfg.name:
        return vcfg.name
    p = clf.get_params()
    head = "" if vcfg.head == "svm" else f" [{vcfg.head}]"
    names = {"hot": lambda: method_name(ecfg, dcfg) + "+Att",
             "none": lambda: method_name(ecfg, dcfg) + " (uniform)",
             "ap": lambda: ("average pooling" if not p["bottom_up"] else
                            f"AP (rank-{p['rank']}{', per-class' if p['per_class_bottom_up'] else ''})"),
             "pyramid": lambda: f"STPA ({p['fusion']})",
             "self": lambda: f"self-attention ({p['n_queries']} "
                             f"quer{'y' if p['n_queries'] == 1 else 'ies'})"}
    return names[tcfg.attention]() + head


def head_tag(vcfg: EvaluateConfig) -> str:
    """Which head a training run scores: "linear" is the softmax layer trained end to end with
    the pooling; any other head (svm, logreg, mlp) is fitted afterwards on the learned
    representation of the split's training part, tagged by its settings ("svm-<12 hex>")."""
    if vcfg.idt != "off":
        raise ValueError(f"idt={vcfg.idt!r} fuses IDT with stage 2's descriptors: use `make "
                         f"evaluate`; `make train` takes idt=off")
    return "linear" if vcfg.head == "linear" else f"{vcfg.head}-{digest(key_params(vcfg))[:12]}"


def results_stem(tag: str) -> str:
    """The name (without .json / .md) of a training folder's results for head tag `tag`."""
    return "results" if tag == "linear" else f"results-{tag}"


def cell_inputs(inp, ids: list[str], group_names: list[str]) -> list:
    """positions=cells: the stored maps of `ids` (load_maps), after checking that stage 1 stored
    maps and that holding them stays under MAPS_LIMIT_GB."""
    parts = map_parts(inp.manifest, inp.parts)
    if not parts:
        raise StageError(f"positions=cells attends over the cells of the maps of the chosen "
                         f"parts {inp.parts}, and {inp.folder} stores none: extract with "
                         f"pool=('mean','map') (and a map layer such as mixed_5c), or use "
                         f"positions=windows")
    maps, _ = read_parts(item_path(inp.folder, ids[0]), parts, inp.groups)
    gb = sum(m.size for m in maps) * 4 * len(ids) / 2 ** 30
    if gb > MAPS_LIMIT_GB:
        raise StageError(f"positions=cells would hold about {gb:.1f} GB of maps ({len(ids)} "
                         f"videos x {maps[0].shape[0]} windows x {parts}); the limit is "
                         f"{MAPS_LIMIT_GB} GB: choose fewer groups= or positions=windows")
    log.info("positions=cells: %s, about %.2f GB in memory", ", ".join(parts), gb)
    return load_maps(inp.folder, ids, parts, inp.groups, group_names)


def learned_rows(clf, attention: str, videos: list, levels: list[int] | None = None, *,
                 chunk: int = 64) -> np.ndarray:
    """(n, D) float32: clf.transform of the videos, computed `chunk` videos at a time."""
    out = None
    for c0 in range(0, len(videos), chunk):
        rows = clf.transform(samples(attention, videos[c0:c0 + chunk], levels))
        if out is None:
            out = np.empty((len(videos), rows.shape[1]), dtype=np.float32)
        out[c0:c0 + len(rows)] = rows
    return out


def head_folder(model: Path, tag: str) -> Path:
    """Where a split's model keeps the head `tag` fitted on its learned representation."""
    return model / "heads" / tag


def score_head(model: Path, vcfg: EvaluateConfig, attention: str, *, tag: str,
               split: dict[str, str], ids: list[str], videos: list, y: np.ndarray, metric: str,
               classes: tuple[str, ...], levels: list[int] | None = None) -> dict:
    """The head vcfg.head fitted on the trained model's learned representation (transform) of the
    split's training videos and scored on its test videos, as evaluate scores descriptors: on the
    Gram matrix of the l2-normalised rows, C by cross-validation on the training part only.
    The head is saved in head_folder(model, tag) as a head on the l2-normalised learned rows
    (in_basis, exact), which predict reads; multi-label datasets (one-vs-rest SVMs) save none."""
    start = time.perf_counter()
    pos = [p for p, i in enumerate(ids) if split.get(i) in (TRAIN, TEST)]
    rows = learned_rows(load_attention(model), attention, [videos[p] for p in pos], levels)
    K = gram_matrix(rows, d=rows.shape[1], order=1)          # cosine: l2-normalised rows
    fitted: dict = {}
    result = score_split(Gram(K), y[pos], split, [ids[p] for p in pos], metric=metric, cfg=vcfg,
                         classes=classes, keep=fitted)
    if fitted:                                # z = x_hat X_hat_train^T A, X_hat = X / ||X||
        train_rows = rows[[split.get(ids[p]) == TRAIN for p in pos]]
        norms = np.sqrt(np.einsum("ij,ij->i", train_rows, train_rows, dtype=np.float64))
        A = fitted["basis"] / np.where(norms > 0, norms, 1.0)[:, None]
        fitted["head"].in_basis(train_rows, A).save(head_folder(model, tag))
    return {**result, "wall_time": time.perf_counter() - start}


def window_attention(clf, attention: str, videos: list, levels: list[int] | None = None
                     ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per video, the learned weight of each window (N_i, K): hot/none the weight of its group
    (K = 1); ap/pyramid/self the attention map over windows, one column per component (AP's
    bottom-up ranks, STPA's maps, the queries), over cells the mean of each window's cells.
    Second: over cells, each video's map over its cells (N_i, K, H', W'); else None."""
    if attention in GROUP_INPUT:
        w = clf.group_weights(videos)
        return [w[i, group][:, None] for i, (_, group) in enumerate(videos)], None
    maps = position_maps(clf, attention, videos, levels)
    windows = [m.reshape(*m.shape[:2], -1).mean(-1).T for m in maps]
    return windows, ([m.swapaxes(0, 1) for m in maps] if maps[0].ndim == 4 else None)


def position_maps(clf, attention: str, videos: list, levels: list[int] | None = None
                  ) -> list[np.ndarray]:
    """ap/pyramid/self: per video its attention map (components, N) over windows, or
    (components, N, H', W') over the cells of its maps (positions=cells)."""
    cells = isinstance(videos[0][0], list)
    return [m.reshape(-1, *m.shape[-3 if cells else -1:])
            for m in clf.attention_map(samples(attention, videos, levels))]


def per_group(windows: list[np.ndarray], videos: list, n_groups: int) -> np.ndarray:
    """(n, G) mean weight of each group's windows (over components); NaN where absent."""
    out = np.full((len(videos), n_groups), np.nan)
    for i, (w, (_, group)) in enumerate(zip(windows, videos)):
        for g in np.unique(group):
            out[i, g] = float(w[group == g].mean())
    return out


def write_weights(path: Path, *, ids: list[str], group_names: list[str], windows: list[np.ndarray],
                  videos: list, attention: str, method: str,
                  cells: list[np.ndarray] | None = None) -> None:
    """HDF5 of the learned weights: ids (n,), groups (G,), group_weights (n, G) (NaN: no window
    of that group), and ragged per window: window_weights (sum N_i, K), window_group (sum N_i,),
    offsets (n + 1,) (video i's windows are rows offsets[i]:offsets[i+1]); over map cells also
    cell_weights (sum N_i, K, H', W'), each window's attention map."""
    strings = h5py.string_dtype()
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in windows])]).astype(np.int64)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=strings)
        f.create_dataset("groups", data=np.array(group_names, dtype=object), dtype=strings)
        f.create_dataset("group_weights", data=per_group(windows, videos, len(group_names)))
        f.create_dataset("window_weights", data=np.concatenate(windows))
        f.create_dataset("window_group", data=np.concatenate([g for _, g in videos]))
        f.create_dataset("offsets", data=offsets)
        if cells is not None:
            f.create_dataset("cell_weights", data=np.concatenate(cells), compression="gzip")
        f.attrs.update(attention=attention, method=method,
                       meaning="hot/none: the group weight w_g of each window; ap: bottom-up "
                               "saliency X b per rank; pyramid: rows of A; self: softmax per query")
        f.close()
        seal(tmp, finite=False)                       # the checksum of its data (NaN: absent)


def train(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig,
          tcfg: TrainConfig) -> tuple[Path, dict]:
    """Train and score tcfg.attention on every split; returns (folder, results).

    Reads stage 1 from the cache (never runs a backbone), sketches the windows once (the
    resumable "sketched" stage), then per split fits on the training part only and scores the
    test part by the dataset's metric. Keyed by the training settings, the pooling settings, the
    content of the splits and the sketched items; a no-op when complete. Each split writes
    <split>/ (the model: params.json + state.pt, config.json, weights.h5, result.json) and one
    ledger record; results.json and results.md (paper_table) come last. positions=cells (ap,
    pyramid, self) attends over the cells of the stored maps instead of the sketched windows. vcfg.head other than
    "linear" is then fitted on each split's learned representation (score_head; <split>/heads/
    <tag>.json, results-<tag>.json/.md): the trained models are reused by every head.
    """
    if ecfg.shard != "1/1":
        raise ValueError(f"shard={ecfg.shard}: training uses every video; run it without shard=")
    tag = head_tag(vcfg)                              # settings checked before any work
    sketch, inp = compute_sketched(ecfg, dcfg)
    upstream, dataset = sketch.folder, inp.dataset
    ids = sketched_ids(upstream, inp.sources)
    if not ids:
        raise StageError(f"no video of {dataset.identity} has sketched windows in {upstream}")
    sources = {i: inp.sources[i] for i in ids}
    splits = dataset.splits()
    clf = build_classifier(ecfg, dcfg, tcfg)          # validates the combination up front
    params = {**key_params(tcfg), **(pooling_params(dcfg) if tcfg.attention in GROUP_INPUT else {}),
              "splits": digest(splits), "items": digest(sources)}
    params = {k: v for k, v in params.items() if tcfg.attention in OWNERS.get(k, (tcfg.attention,))}
    if tcfg.positions == "cells" and tcfg.attention in GROUP_INPUT:
        raise ValueError(f"positions=cells: attention={tcfg.attention} weighs window groups; use "
                         f"attention=ap, pyramid or self to attend over map cells")
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name])
    pooling = (f"-{'so' if dcfg.order == 2 else 'to'}-{dcfg.epn}" if tcfg.attention in GROUP_INPUT
               else "")
    folder = stage_dir(ecfg.cache_root, STAGE, dataset.identity,
                       f"{tcfg.attention}{pooling}-{upstream.name}", key)
    method = learned_method_name(ecfg, dcfg, vcfg, tcfg, clf)
    # the models are keyed without the head: a new head reuses them (one row key per head)
    row_key = key if tag == "linear" else stage_key(STAGE, STAGE_VERSION, {
        **params, "head": key_params(vcfg)}, upstream=[upstream.name])
    stem = results_stem(tag)
    if json_intact(folder / f"{stem}.json") and all(    # models checked: a damaged one is refit
            split_intact(folder / n, tag, dataset.metric)
            for n in splits_done(folder / f"{stem}.json")):
        log.info("training already complete (no stage-1, sketching or training work): %s", folder)
        return folder, {**read_json(folder / f"{stem}.json"), "method": method}
    log.info("training %s on %s: stage 1 read from the cache, no forward pass (%s); sketched "
             "windows from %s", method, dataset.identity, inp.folder, upstream)
    videos, group_names = load_sketched(upstream, ids)
    levels = level_widths(upstream)
    if tcfg.positions == "cells":
        videos = cell_inputs(inp, ids, group_names)
    y = label_matrix(dataset, ids)
    if dataset.metric == "map":
        log.warning("%s is multi-label: the softmax classifier trains on each video's first "
                    "label and is scored by mAP on its class scores", dataset.identity)
    ledger, protocol = ledger_of(ecfg, vcfg), PROTOCOLS.get(dataset.name, "splits")
    config = {"extract": ecfg, "descriptors": dcfg, "evaluate": vcfg, "train": tcfg}
    cache = {"features": str(inp.folder), "sketched": str(upstream), "train": str(folder)}
    per_split = {}
    with stage_lock(folder):                          # one training run per folder at a time
        sweep_temporary(folder)                       # what killed runs left (never a live one's)
        for name, split in splits.items():
            out = folder / name
            if not split_intact(out):          # result, model, config and weights checked
                model_config = {**config, "classes": list(dataset.classes), "parts": inp.parts,
                                "levels": levels,
                                "groups": inp.groups, "split": name, "method": method,
                                "config_key": key, "sketched": str(upstream),
                                "features": str(inp.folder)}
                r = fit_split(out, clf=build_classifier(ecfg, dcfg, tcfg), tcfg=tcfg,
                              split=split, ids=ids, videos=videos, y=y, group_names=group_names,
                              method=method, metric=dataset.metric, classes=dataset.classes,
                              model_config=model_config)
                if tag != "linear":               # the head before result.json, which marks
                    write_json(out / "heads" / f"{tag}.json", score_head(  # the split done
                        out, vcfg, tcfg.attention, tag=tag, split=split, ids=ids,
                        videos=videos, y=y, metric=dataset.metric, classes=dataset.classes,
                        levels=levels))
                write_json(out / RESULT_FILE, r)  # the split's file first, then its one record
            path = out / RESULT_FILE if tag == "linear" else out / "heads" / f"{tag}.json"
            saved = tag == "linear" or dataset.metric == "map" or \
                saved_intact(head_folder(out, tag))
            if not json_intact(path) or not saved:  # (heads scored before they were saved too)
                log.info("%s: %s on the learned representation of the trained model (%s)",
                         name, vcfg.head, out)
                write_json(path, score_head(out, vcfg, tcfg.attention, tag=tag, split=split,
                                            ids=ids, videos=videos, y=y, metric=dataset.metric,
                                            classes=dataset.classes, levels=levels))
            r = read_json(path)
            if not ledger.records(config_key=row_key, split=name):  # a kill between: add it
                ledger.append({"dataset": dataset.identity, "protocol": protocol, "split": name,
                               "method": method, "metric": dataset.metric, "score": r["score"],
                               "config_key": row_key, "n_train": r["n_train"],
                               "n_test": r["n_test"],
                               "n_missing_train": r["missing_train"],
                               "n_missing_test": r["missing_test"], "config": config,
                               "cache": cache, "per_class": r["per_class"],
                               "confusion": r["confusion"], "classes": list(dataset.classes),
                               "predictions": r["predictions"], "chosen": r["chosen"],
                               "wall_time": r["wall_time"], "versions": library_versions()})
            per_split[name] = r
            log.info("%s: %s = %.4f (model in %s)", name, dataset.metric,
                     per_split[name]["score"], out)
        scores = {name: r["score"] for name, r in per_split.items()}
        scores["mean"] = float(np.mean(list(scores.values())))
        records = ledger.records(config_key=row_key)
        with atomic_path(folder / f"{stem}.md") as tmp:
            tmp.write_text(paper_table(records) if records else "")
        results = {"dataset": dataset.identity, "metric": dataset.metric, "method": method,
                   "scores": scores, "config": config, "config_key": row_key, "head": tag,
                   "splits": {n: {k: v for k, v in r.items() if k != "predictions"}
                              for n, r in per_split.items()},
                   "models": {n: str(folder / n) for n in per_split}, **cache}
        write_json(folder / f"{stem}.json", results)
    return folder, read_json(folder / f"{stem}.json")


def split_intact(out: Path, tag: str = "linear", metric: str = "") -> bool:
    """A trained split is done when its result, model, config and weights (and the head `tag`
    with its scores) all match their checksums; a damaged file is logged, naming it, and is
    computed again."""
    return (json_intact(out / RESULT_FILE) and saved_intact(out)
            and json_intact(out / CONFIG_FILE) and sealed_intact(out / WEIGHTS_FILE)
            and bytes_intact(out / WEIGHTS_FILE, read_json(out / RESULT_FILE).get("files", {}))
            and (tag == "linear" or (json_intact(out / "heads" / f"{tag}.json") and (
                metric == "map" or saved_intact(head_folder(out, tag))))))


def splits_done(results: Path) -> list[str]:
    """The split folders a training folder's results file names (its "models")."""
    return [Path(m).name for m in read_json(results).get("models", {}).values()]


def fit_split(out: Path, *, clf, tcfg: TrainConfig, split: dict[str, str], ids: list[str],
              videos: list, y: np.ndarray, group_names: list[str], method: str, metric: str,
              classes: tuple[str, ...], model_config: dict) -> dict:
    """Fit `clf` on the split's training videos, score its test videos, and save the model,
    its config and the learned weights (of every video) under `out`. Returns the split's result
    (without writing result.json, which marks the split done)."""
    start = time.perf_counter()
    role = np.array([split.get(i, "") for i in ids])
    train_pos, test_pos = np.flatnonzero(role == TRAIN), np.flatnonzero(role == TEST)
    have = set(ids)
    missing = {r: sum(1 for i, v in split.items() if v == r and i not in have)
               for r in (TRAIN, TEST)}
    if not len(train_pos) or not len(test_pos):
        raise StageError(f"split {model_config['split']} has {len(train_pos)} train and "
                         f"{len(test_pos)} test videos with sketched windows ({missing[TRAIN]} "
                         f"and {missing[TEST]} missing); both must be non-empty")
    pick = lambda pos: [videos[p] for p in pos]  # noqa: E731
    levels = model_config["levels"]
    fit_args = {"group_names": group_names} if tcfg.attention in GROUP_INPUT else {}
    clf.fit(samples(tcfg.attention, pick(train_pos), levels), y[train_pos].argmax(1), **fit_args)
    scores = np.full((len(test_pos), y.shape[1]), -np.inf)
    scores[:, clf.classes_] = clf.decision_function(samples(tcfg.attention, pick(test_pos),
                                                            levels))
    test_ids = [ids[p] for p in test_pos]
    result = summarise(scores, y[test_pos], test_ids, metric=metric, classes=classes)
    clf.save(out)
    write_json(out / CONFIG_FILE, {**model_config, "train_ids": [ids[p] for p in train_pos]})
    windows, cells = window_attention(clf, tcfg.attention, videos, levels)
    write_weights(out / WEIGHTS_FILE, ids=ids, group_names=group_names, windows=windows,
                  videos=videos, attention=tcfg.attention, method=method, cells=cells)
    return {**result, "n_train": len(train_pos), "n_test": len(test_pos),
            "files": {WEIGHTS_FILE: file_checksum(out / WEIGHTS_FILE)},  # every byte, checked
            "missing_train": missing[TRAIN], "missing_test": missing[TEST],
            "chosen": dict(clf.chosen_params_), "wall_time": time.perf_counter() - start}


