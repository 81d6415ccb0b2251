"""Predict with a trained model (pipeline.learn.train): new videos go through stage 1 and the sketched
stage with the model's own recorded configuration (cached like every stage), then the model;
per video its top-k classes and scores, written to a CSV in the model folder.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.learn.attention import load_attention
from pipeline.core.cache import CorruptFileError, StageError, atomic_path, read_manifest
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.datasets import Dataset, Item
from pipeline.datasets.check import is_video
from pipeline.pooling.descriptors import FeatureInput
from pipeline.extract.features import extract_features
from pipeline.pooling.sketched import compute_sketched, load_sketched, sketched_ids
from pipeline.learn.heads import PARAMS_FILE, load_head
from pipeline.learn.persistence import REFIT
from pipeline.learn.persistence import read_json as read_model_json
from pipeline.pooling.packing import unit_rows
from pipeline.learn.train import (CONFIG_FILE, cell_inputs, head_folder, head_tag, learned_rows,
                            samples)

log = logging.getLogger(__name__)
RUNTIME = ("root", "cache_root", "device", "batch_size", "backend", "workers", "scheduler")
# ExtractConfig fields taken from this run, not the model's record: where data lives and how
# fast it runs (none of them changes a feature); shard is reset, predict does every video


class VideoSet(Dataset):
    """Videos to predict, as a dataset without labels or splits: a folder (every video file
    under it, ids relative to it) or a list of files (ids their names). Its cache identity is
    "videos-<name of the folder, or of the files' common folder>", so its items never mix with a
    training dataset's."""

    name = "videos"
    layout = "a folder of videos, or video files"

    def __init__(self, paths: tuple[str, ...] | list[str]):
        paths = [Path(p).expanduser() for p in paths]
        if not paths:
            raise ValueError("videos=: give a folder of videos or video files")
        if len(paths) == 1 and paths[0].is_dir():
            base = paths[0]
            files = sorted(p for p in base.rglob("*") if p.is_file() and is_video(p.name))
            ids = [p.relative_to(base).as_posix() for p in files]
        else:
            absent = [str(p) for p in paths if not p.is_file()]
            if absent:
                raise ValueError(f"videos=: not a folder or a file: {', '.join(absent)}")
            other = [str(p) for p in paths if not is_video(p.name)]
            if other:
                raise ValueError(f"videos=: not a video file (by its extension): "
                                 f"{', '.join(other)}; give video files or a folder of them")
            files = paths
            base = Path(os.path.commonpath([p.resolve().parent for p in files]))
            ids = [p.name for p in files]
            clash = sorted({i for i in ids if ids.count(i) > 1})
            if clash:
                raise ValueError(f"videos=: several files are named {clash}; give a folder")
        if not files:
            raise ValueError(f"videos={paths[0]}: no video file in this folder")
        self.set_name = base.resolve().name
        self._items = [Item(i, p.resolve(), ()) for i, p in zip(ids, files)]

    @property
    def identity(self) -> str:
        return f"videos-{self.set_name}"


def model_folder(path: str | Path) -> Path:
    """The split folder of a trained model: `path` itself, or the only split of a training
    folder (train/<dataset>/<...>); a training folder with several splits must name one."""
    path = Path(path).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    splits = sorted(p for p in path.glob(f"*/{CONFIG_FILE}")) if path.is_dir() else []
    if len(splits) == 1:
        return splits[0].parent
    if splits:
        names = ", ".join(p.parent.name for p in splits)
        raise ValueError(f"model={path} holds one model per split ({names}); pass "
                         f"model={path}/<split>")
    raise ValueError(f"model={path} is not a trained model folder (no {CONFIG_FILE}); pass a "
                     f"split folder written by `make train`")


def trained_head(folder: Path, vcfg: EvaluateConfig):
    """The head vcfg names for the model in `folder`: None for head=linear (the model's own
    softmax layer), else the saved head (train.head_folder); a clear error when it is absent."""
    tag = head_tag(vcfg)
    if tag == "linear":
        return None
    where = head_folder(folder, tag)
    if (where / PARAMS_FILE).is_file():
        return load_head(where)
    have = sorted(p.parent.name for p in (folder / "heads").glob(f"*/{PARAMS_FILE}"))
    raise ValueError(f"{folder} has no fitted {vcfg.head} head with these settings ({tag}; "
                     f"saved: {', '.join(have) or 'none'}). Run the `make train` command that "
                     f"trained this model with head={vcfg.head} (it reuses the model and saves "
                     f"the head), pass the head settings it was trained with, or use head=linear "
                     f"(the softmax layer trained with the pooling)")


def warn_conflicts(ecfg: ExtractConfig, recorded: dict) -> None:
    """Warn when this run sets dataset= or backbone= (away from the default) to other values
    than the model was trained with: predict always uses the model's own."""
    default = ExtractConfig()
    for key in ("dataset", "backbone", "weights", "layer"):
        given, used = getattr(ecfg, key), recorded.get(key)
        if given != getattr(default, key) and used is not None and given != used:
            log.warning("%s=%s is ignored: predict uses the model's own %s=%s (from its "
                        "config.json)", key, given, key, used)


def _rebuild(cls, recorded: dict, **override):
    """A config dataclass from its JSON record (unknown fields ignored) with `override`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in recorded.items() if k in names}, **override})


def predict(ecfg: ExtractConfig, tcfg: TrainConfig, vcfg: EvaluateConfig
            ) -> tuple[Path, list[dict]]:
    """Top-k classes of tcfg.videos by the model at tcfg.model and the head vcfg names ->
    (CSV path, rows). Rows: video, rank (1 = best), class, score and probability (None where the
    head gives none: the SVM). head=linear is the softmax layer trained with the pooling; any
    other head is the one `make train head=...` fitted on the model's learned representation
    (train.score_head), which must exist with the same head settings.
    Stage 1 and the sketched windows use the model's recorded settings; from `ecfg` only where
    data lives and how fast it runs (RUNTIME)."""
    if not tcfg.model or not tcfg.videos:
        raise ValueError("predict needs model=<trained model folder> and videos=<folder or files>")
    folder = model_folder(tcfg.model)
    head = trained_head(folder, vcfg)                 # before any work: it may be missing
    info = read_model_json(folder / CONFIG_FILE)      # checksum verified; names the file
    missing = [k for k in ("extract", "descriptors", "train", "classes", "parts", "groups",
                           "method", "split") if k not in info]
    if missing:
        raise CorruptFileError(folder / CONFIG_FILE, f"lacks {', '.join(missing)}", REFIT)
    warn_conflicts(ecfg, info["extract"])
    e = _rebuild(ExtractConfig, info["extract"], shard="1/1",
                 **{k: getattr(ecfg, k) for k in RUNTIME})
    d = _rebuild(DescriptorConfig, info["descriptors"])
    attention = info["train"]["attention"]
    videos = VideoSet(tcfg.videos)
    log.info("predicting %d videos with %s (%s, split %s), head %s", len(videos.items()), folder,
             info["method"], info["split"], vcfg.head)
    result = extract_features(e, videos)
    if not result.ok:
        log.error("%d videos failed in stage 1 and get no prediction: %s", len(result.failures),
                  ", ".join(result.failures))
    manifest = read_manifest(result.folder)
    if manifest is None:
        raise StageError(f"stage 1 did not finish for {videos.identity} ({result.folder})")
    sources = videos.sources()
    inp = FeatureInput(videos, result.folder, manifest, list(info["parts"]), list(info["groups"]),
                       {i: sources[i] for i in sources if i not in result.failures},
                       sorted(result.failures))
    sketch, _ = compute_sketched(e, d, inp=inp)
    ids = sketched_ids(sketch.folder, inp.sources)
    if not ids:
        raise StageError(f"none of the videos could be prepared ({sketch.folder})")
    windows, group_names = load_sketched(sketch.folder, ids)
    if info.get("maps"):                    # a type over the stored maps' cells or levels
        windows = cell_inputs(inp, ids, group_names, list(info["maps"]))
    clf = load_attention(folder)
    if head is None:
        x, head = samples(attention, windows, info.get("levels")), clf
    else:                                   # the head reads l2-normalised learned rows
        x = unit_rows(learned_rows(clf, attention, windows, info.get("levels")).astype(np.float64))
    scores = head.decision_function(x)
    probs = head.predict_proba(x) if hasattr(head, "predict_proba") else None
    classes = info["classes"]
    if len(head.classes_) and int(np.max(head.classes_)) >= len(classes):
        raise CorruptFileError(folder / CONFIG_FILE, f"lists {len(classes)} classes; the model "
                               f"scores class indices up to {int(np.max(head.classes_))}", REFIT)
    if not np.isfinite(scores).all():
        raise StageError(f"the model in {folder} gave NaN or Inf scores for "
                         f"{int((~np.isfinite(scores).all(1)).sum())} videos; refusing to write "
                         f"them: retrain it (`make train`)")
    k = min(tcfg.top_k, scores.shape[1])
    rows = []
    for n, (item_id, s) in enumerate(zip(ids, scores)):
        for rank, c in enumerate(np.argsort(-s, kind="stable")[:k], start=1):
            rows.append({"video": item_id, "rank": rank, "class": classes[int(head.classes_[c])],
                         "score": round(float(s[c]), 5),
                         "probability": None if probs is None else round(float(probs[n, c]), 5)})
    out = folder / f"predictions-{videos.set_name}.csv"
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["video", "rank", "class", "score", "probability"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("predictions of %d videos: %s", len(ids), out)
    return out, rows
