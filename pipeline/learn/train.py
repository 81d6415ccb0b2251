"""Learned stage 2: per split, a registered attention type (pipeline.learn.attention: HoT group
attention, plain HoT pooling, AP, STPA, self-attention, ...) trained end to end on the training
part's cached sketched windows or stored maps, as the type declares (docs/method.md, "Attention"),
scored on the test part; models, learned weights and ledger records saved like
pipeline.learn.evaluate. Nothing here branches on a type's name.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline.learn.attention import get_attention, hot, load_attention
from pipeline.core.cache import (StageError, atomic_path, bytes_intact, digest, file_checksum,
                                 item_path, json_intact, read_json, seal, sealed_intact, stage_dir,
                                 stage_key, stage_lock, sweep_temporary, write_json)
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig, TrainSettings
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params
from pipeline.datasets import TEST, TRAIN
from pipeline.pooling.descriptors import find_features, read_parts
from pipeline.learn.naming import method_name
from pipeline.learn.scoring import Gram, gram_matrix, label_matrix, ledger_of, score_split, summarise
from pipeline.results.recorder import SplitRecorder
from pipeline.learn.persistence import saved_intact
from pipeline.pooling.sketched import compute_sketched, load_sketched, sketched_ids

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "train", 1
CONFIG_FILE = "config.json"        # beside each split's model: everything predict needs
WEIGHTS_FILE = "weights.h5"        # the learned weights per video and per group
RESULT_FILE = "result.json"        # a split's scores, written last: the split is done
MAPS_LIMIT_GB = 8.0                # attention over cells holds the maps of every video in float32
# The convolutional maps of each backbone family, shallow to deep (docs/method.md, "Spatial maps"):
# AP attends over the last one, pyramid attention fuses two or more of them.
CONV_MAPS = {"inception_i3d": ("mixed_4f", "mixed_5c"), "inception_i3d_flow": ("mixed_4f", "mixed_5c"),
             "resnet50": ("layer4",), "resnet101": ("layer4",)}
ZOO_MAPS = ("res4", "res5")        # every pytorchvideo zoo backbone (SlowFast: res5 only)
# Depth rank of the vector layers a window level may be (pyramid_windows), shallow to deep.
VECTOR_DEPTH = {"mixed_4f": 0, "res4": 0, "mixed_5c": 1, "res5": 1, "layer4": 1, "pool": 2,
                "logits": 3}


def spec_of(tcfg: TrainConfig):
    """The registered declaration of tcfg.attention (pipeline.learn.attention.registry)."""
    return get_attention(tcfg.attention)


def build_classifier(ecfg: ExtractConfig, dcfg: DescriptorConfig, tcfg: TrainConfig):
    """An unfitted classifier for tcfg.attention with the configs' settings."""
    spec = spec_of(tcfg)
    if spec.pooled and dcfg.order == 1:
        raise ValueError(f"attention={tcfg.attention} pools second- or third-order tensors; "
                         f"use order=2 or order=3 (or attention=ap_windows for first-order pooling)")
    return spec.classifier(**spec.params(tcfg, dcfg), lr=tcfg.lr,
                           weight_decay=tcfg.weight_decay, batch_size=tcfg.train_batch,
                           max_epochs=tcfg.max_epochs, patience=tcfg.patience,
                           seed=tcfg.train_seed, device=ecfg.device)


def pooling_params(dcfg: DescriptorConfig) -> dict:
    """The HoT pooling settings of stage 2 that the pooled (group) classifiers are keyed by."""
    return hot.pooling_params(None, dcfg)


def train_params(tcfg: TrainConfig, dcfg: DescriptorConfig, splits: dict, sources: dict) -> dict:
    """The key material of a training run: the shared training keys, the options of its own
    attention type only (another type's keys never key it), the stage-2 pooling settings for the
    pooled types, and the digests of the splits and the items."""
    spec = spec_of(tcfg)
    shared = {f.name for f in dataclasses.fields(TrainSettings)}
    params = {k: v for k, v in key_params(tcfg).items() if k in shared or k in spec.options}
    if spec.pooled:
        params.update(pooling_params(dcfg))
    if spec.inputs != "groups":       # types over positions: their features are scaled per level
        params["position_scale"] = "mean_norm"    # (attention.base.position_scale; keyed since)
    return {**params, "splits": digest(splits), "items": digest(sources)}


def _split_levels(x: np.ndarray, levels) -> list[np.ndarray]:
    return [x[:, a:b] for a, b in levels]


# how each kind of input (registry.INPUTS) is cut from one video's loaded data (x, group):
SAMPLE = {"groups": lambda x, g, levels: (x, g),
          "windows": lambda x, g, levels: x,
          "window_levels": lambda x, g, levels: _split_levels(x, levels),
          "cells": lambda x, g, levels: x[-1],
          "levels": lambda x, g, levels: list(x)}


def samples(attention: str, videos: list[tuple], levels: list | None = None) -> list:
    """The classifier's input for the registered type `attention` (its `inputs`): (phi, group)
    pairs, phi (N, d) alone, phi cut into its levels ([start, stop) columns per level, top last),
    the top map (N, D, H', W'), or the maps of every level (top last)."""
    cut = SAMPLE[get_attention(attention).inputs]
    return [cut(x, g, levels) for x, g in videos]


def conv_maps(ecfg: ExtractConfig) -> tuple[str, tuple[str, ...]]:
    """(stream, its backbone's convolutional map layers, shallow to deep): the first stream's."""
    stream = ecfg.streams[0]
    backbone = ecfg.stream_backbones()[stream][0]
    return stream, CONV_MAPS.get(backbone, ZOO_MAPS)


def extract_command(ecfg: ExtractConfig, layers: tuple[str, ...]) -> str:
    """The exact `make extract` command that stores the maps of `layers` besides what ecfg
    stores now (its other stage-1 settings unchanged)."""
    from pipeline.core.settings import parse_overrides
    from pipeline.results.sweep import as_token
    base = parse_overrides([f"dataset={ecfg.dataset}"], ExtractConfig)[0]
    tokens = []
    for f in dataclasses.fields(ExtractConfig):
        value = getattr(ecfg, f.name)
        if f.name == "layer":
            value = tuple(ecfg.layer) + tuple(l for l in layers if l not in ecfg.layer)
        elif f.name == "pool":
            value = tuple(ecfg.pool) + (() if "map" in ecfg.pool else ("map",))
        elif f.name == "dataset" or value == getattr(base, f.name):
            continue
        tokens.append(as_token(f.name, value))
    return f'make extract DATASET={ecfg.dataset} ARGS="{" ".join(tokens)}"'


def map_outputs(ecfg: ExtractConfig, tcfg: TrainConfig) -> list[str]:
    """The stored maps ("<stream>/<layer>/map") the attention type reads: the last convolutional
    map ("cells"), or every convolutional map, two or more, shallow to deep ("levels"); [] for
    types over the sketched windows. Raises StageError, with the exact `make extract` command
    that stores them, when stage 1 (ecfg) does not store them; nothing has been computed then."""
    inputs = spec_of(tcfg).inputs
    if inputs not in ("cells", "levels"):
        return []
    stream, conv = conv_maps(ecfg)
    backbone = ecfg.stream_backbones()[stream][0]
    need = conv[-1:] if inputs == "cells" else conv
    if len(need) < 2 and inputs == "levels":
        raise StageError(f"attention={tcfg.attention} fuses maps of two or more depths; backbone "
                         f"{backbone} has one convolutional map ({', '.join(conv)}): use a "
                         f"backbone with two (inception_i3d: mixed_4f, mixed_5c; the zoo: res4, res5)")
    stored = [l for l in need if l in ecfg.layer] if "map" in ecfg.pool else []
    if stored != list(need):
        what = ("the cells of the last convolutional map" if inputs == "cells" else
                "the maps of different depths")
        raise StageError(
            f"attention={tcfg.attention} attends over {what} ({', '.join(need)} of {backbone}), "
            f"and stage 1 as configured (layer={ecfg.layer}, pool={ecfg.pool}) stores "
            f"{'none' if not stored else 'only ' + ', '.join(stored)}. Store them with:\n  "
            f"{extract_command(ecfg, need)}\nthen pass the same layer= and pool= to `make train` "
            f"(or use attention={tcfg.attention}_windows to attend over the windows)")
    return [f"{stream}/{l}/map" for l in need]


def window_levels(parts: list[str], attention: str, widths: list[int]) -> list[tuple[int, int]]:
    """pyramid_windows: the column range of each level in phi, shallow to deep (top last). The
    levels must be two or more distinct layers of one stream and one pooling; streams or
    poolings are not levels of a pyramid, and are refused with what to extract instead."""
    split = [p.split("/") for p in parts]
    streams, pools = {s for s, _, _ in split}, {q for _, _, q in split}
    layers = [l for _, l, _ in split]
    if len(parts) < 2 or len(streams) > 1 or len(pools) > 1 or len(set(layers)) != len(layers):
        raise StageError(
            f"attention={attention} fuses window features of two or more layers (depths) of one "
            f"stream and one pooling; the chosen parts {parts} are "
            f"{'one level' if len(parts) < 2 else 'streams or poolings, not depths'}. Extract two "
            f"layers, e.g. layer=('pool','logits') (or ('mixed_4f','mixed_5c') with pool=('mean',)), "
            f"and choose one stream and pooling with parts=('rgb/pool/mean','rgb/logits/mean')")
    bounds = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    order = sorted(range(len(parts)), key=lambda i: (VECTOR_DEPTH.get(layers[i], i), i))
    return [(int(bounds[i]), int(bounds[i + 1])) for i in order]


def load_maps(folder: Path, ids: list[str], parts: list[str], groups: list[str],
              group_names: list[str]) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """Per video ([its maps (N, D, H', W') float32, one per part, shallow to deep, the lower
    ones max-pooled to the last one's H' x W' (STPA)], group index per window), the windows in
    the order of the sketched ones (read_parts' order)."""
    import torch
    from torch.nn import functional as F
    index = {g: i for i, g in enumerate(group_names)}
    out = []
    for item_id in ids:
        maps, names = read_parts(item_path(folder, item_id), parts, groups)
        H, W = maps[-1].shape[-2:]
        maps = [m if m.shape[-2:] == (H, W) else
                F.adaptive_max_pool2d(torch.as_tensor(m), (H, W)).numpy() for m in maps]
        out.append(([m.astype(np.float32) for m in maps], np.array([index[g] for g in names])))
    return out


def level_widths(sketched_folder: Path) -> list[int]:
    """The width of each stored part in the sketched windows (sketch_dim each, or the raw part
    dimensions with sketch_dim=0), from the sketched stage's manifest."""
    m = json.loads((Path(sketched_folder) / "manifest.json").read_text())
    return [int(m["sketch_dim"])] * len(m["part_dims"]) if m["sketch_dim"] else list(m["part_dims"])


def learned_method_name(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig,
                        tcfg: TrainConfig, clf) -> str:
    """The paper-style row name the registered type gives ("SO+MaxExp+Att", "AP over cells
    (rank-1)", "STPA over cells (product)", ...), then the head as in evaluate's rows (none for
    the SVM, else e.g. " [linear]": the end-to-end softmax); EvaluateConfig.name overrides it."""
    if vcfg.name:
        return vcfg.name
    head = "" if vcfg.head == "svm" else f" [{vcfg.head}]"
    return spec_of(tcfg).row_name(clf.get_params(), method_name(ecfg, dcfg)) + head


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


def cell_inputs(inp, ids: list[str], group_names: list[str], maps: list[str]) -> list:
    """The stored maps `maps` of `ids` (load_maps), after checking that stage 1 stored them
    (map_outputs checked the settings) and that holding them stays under MAPS_LIMIT_GB."""
    stored = set(inp.manifest.get("outputs", []))
    if not set(maps) <= stored:
        raise StageError(f"{inp.folder} stores no {sorted(set(maps) - stored)}; its manifest lists "
                         f"{sorted(stored)}")
    first, _ = read_parts(item_path(inp.folder, ids[0]), maps, inp.groups)
    H, W = first[-1].shape[-2:]
    gb = sum(m.shape[0] * m.shape[1] * H * W for m in first) * 4 * len(ids) / 2 ** 30
    if gb > MAPS_LIMIT_GB:
        raise StageError(f"attention over cells would hold about {gb:.1f} GB of maps ({len(ids)} "
                         f"videos x {first[0].shape[0]} windows x {maps}); the limit is "
                         f"{MAPS_LIMIT_GB} GB: choose fewer groups= or attend over the windows")
    log.info("attention over cells: %s, about %.2f GB in memory", ", ".join(maps), gb)
    return load_maps(inp.folder, ids, maps, inp.groups, group_names)


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
    if get_attention(attention).inputs == "groups":
        w = clf.group_weights(videos)
        return [w[i, group][:, None] for i, (_, group) in enumerate(videos)], None
    maps = position_maps(clf, attention, videos, levels)
    windows = [m.reshape(*m.shape[:2], -1).mean(-1).T for m in maps]
    return windows, ([m.swapaxes(0, 1) for m in maps] if maps[0].ndim == 4 else None)


def position_maps(clf, attention: str, videos: list, levels: list[int] | None = None
                  ) -> list[np.ndarray]:
    """ap/pyramid/self: per video its attention map (components, N) over windows, or
    (components, N, H', W') over the cells of its maps."""
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
                       meaning="groups: the group weight w_g of each window; ap: bottom-up "
                               "saliency X b per rank; pyramid: rows of A; self: attention each "
                               "position receives per head; learned_query: softmax per query")
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
    ledger record; results.json and results.md (paper_table) come last. Types over cells or
    levels (ap, pyramid, self_cells) read the stored maps (map_outputs). vcfg.head other than
    "linear" is then fitted on each split's learned representation (score_head; <split>/heads/
    <tag>.json, results-<tag>.json/.md): the trained models are reused by every head.
    """
    if ecfg.shard != "1/1":
        raise ValueError(f"shard={ecfg.shard}: training uses every video; run it without shard=")
    if dcfg.layout != "windows":                      # attention weighs windows within groups
        raise StageError(f"layout={dcfg.layout!r} is for fixed pooling (make descriptors / make "
                         f"evaluate); learned attention reads the windows per group: use "
                         f"layout='windows' for make train")
    tag = head_tag(vcfg)                              # settings checked before any work
    maps = map_outputs(ecfg, tcfg)                    # stops before any work without them
    inp = find_features(ecfg, dcfg)
    levels = None
    if spec_of(tcfg).inputs == "window_levels":      # refused before any work as well
        window_levels(inp.parts, tcfg.attention, [0] * len(inp.parts))
    sketch, inp = compute_sketched(ecfg, dcfg, inp=inp)
    upstream, dataset = sketch.folder, inp.dataset
    ids = sketched_ids(upstream, inp.sources)
    if not ids:
        raise StageError(f"no video of {dataset.identity} has sketched windows in {upstream}")
    sources = {i: inp.sources[i] for i in ids}
    splits = dataset.splits()
    clf = build_classifier(ecfg, dcfg, tcfg)          # validates the combination up front
    params = train_params(tcfg, dcfg, splits, sources)
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name])
    pooling = (f"-{'so' if dcfg.order == 2 else 'to'}-{dcfg.epn}" if spec_of(tcfg).pooled else "")
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
    if spec_of(tcfg).inputs == "window_levels":
        levels = window_levels(inp.parts, tcfg.attention, level_widths(upstream))
    if maps:
        videos = cell_inputs(inp, ids, group_names, maps)
    y = label_matrix(dataset, ids)
    if dataset.metric == "map":
        log.warning("%s is multi-label: the softmax classifier trains on each video's first "
                    "label and is scored by mAP on its class scores", dataset.identity)
    config = {"extract": ecfg, "descriptors": dcfg, "evaluate": vcfg, "train": tcfg}
    cache = {"features": str(inp.folder), "sketched": str(upstream), "train": str(folder)}
    recorder = SplitRecorder(ledger_of(ecfg, vcfg), dataset, method, row_key, config, cache)
    with stage_lock(folder):                          # one training run per folder at a time
        sweep_temporary(folder)                       # what killed runs left (never a live one's)
        for name, split in splits.items():
            out = folder / name
            if not split_intact(out):          # result, model, config and weights checked
                model_config = {**config, "classes": list(dataset.classes), "parts": inp.parts,
                                "levels": levels, "maps": maps,
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
            recorder.record(name, read_json(path), f" (model in {out})")
        return folder, recorder.finish(folder, stem, head=tag, **cache,
                                       models={n: str(folder / n) for n in recorder.per_split})


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
    fit_args = {"group_names": group_names} if spec_of(tcfg).inputs == "groups" else {}
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


