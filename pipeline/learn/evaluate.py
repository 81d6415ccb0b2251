"""Evaluation: a head per split on the cached descriptors, scored by the dataset's metric; each
split's result is cached, appended to the results ledger, and `results.json` / `results.md` (a
paper-shaped table) are written. Nothing upstream is recomputed.

Memory is bounded by the n x n Gram matrix of the videos plus one chunk of the descriptors: the
heads see each split through exact low-dimensional coordinates derived from it
(training_coordinates), never the D-wide rows (TO at d = 256: 2.8M values per video).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import h5py

from pipeline.core.cache import (StageError, digest, json_intact, read_json, stage_dir, stage_key,
                                 sweep_temporary, write_json)
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params
from pipeline.pooling.descriptors import VIEW, descriptors_dir, view_current
from pipeline.learn.scoring import Gram, label_matrix, ledger_of, load_gram, score_split
from pipeline.learn.naming import method_name
from pipeline.results.recorder import SplitRecorder

log = logging.getLogger(__name__)
STAGE, STAGE_VERSION = "evaluate", 4   # 4: heads on kernel coordinates
def evaluate(ecfg: ExtractConfig, dcfg: DescriptorConfig, cfg: EvaluateConfig,
             icfg=None) -> tuple[Path, dict]:
    """Score every split; returns (folder, results). Keyed by the head's settings, the
    descriptors (folder and the items they hold) and the content of the splits, so an edited
    split is scored anew; a no-op when complete. Each split is appended to the ledger once.
    Memory: the Gram matrix of the videos (n x n float64) plus one chunk of the descriptors
    (gram_matrix); it is computed only when a split is still to be scored.
    icfg: the IDT settings (pipeline.idt.settings.IDTConfig) when cfg.idt is "on" or "only"."""
    upstream, inp = descriptors_dir(ecfg, dcfg)
    if not view_current(upstream, inp.sources):
        raise StageError(f"descriptors for this configuration are missing or out of date "
                         f"({upstream}); run `make descriptors` with the same settings first")
    dataset = inp.dataset
    with h5py.File(upstream / VIEW, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]]
        attrs = dict(f.attrs)
    splits = dataset.splits()
    params = {**key_params(cfg), "splits": digest(splits), "items": attrs["sources"]}
    idt = None
    if cfg.idt != "off":
        from pipeline.idt.encode import idt_kernel
        from pipeline.idt.settings import IDTConfig
        from pipeline.idt.stage import idt_folder
        icfg = icfg or IDTConfig()
        params["idt_input"] = [idt_folder(ecfg, icfg, dataset)[0].name, key_params(icfg)]
        idt = lambda train_ids, test_ids: idt_kernel(ecfg, icfg, train_ids, test_ids)  # noqa: E731
    key = stage_key(STAGE, STAGE_VERSION, params, upstream=[upstream.name])
    folder = stage_dir(ecfg.cache_root, STAGE, dataset.identity, f"{cfg.head}-{upstream.name}", key)
    method = method_name(ecfg, dcfg, cfg)
    if json_intact(folder / "results.json") and all(     # split files checked too
            json_intact(folder / "splits" / f"{name}.json") for name in splits):
        log.info("evaluation already complete (no stage-1, stage-2 or training work): %s", folder)
        return folder, {**read_json(folder / "results.json"), "method": method}
    log.info("evaluating %s on %s: descriptors read from the cache, no stage-1 or stage-2 work "
             "(%s)", method, dataset.identity, upstream)
    sweep_temporary(folder)                       # what killed runs left (never a live one's)
    gram = None
    y = label_matrix(dataset, ids)
    recorder = SplitRecorder(ledger_of(ecfg, cfg), dataset, method, key,
                             config={"extract": ecfg, "descriptors": dcfg, "evaluate": cfg},
                             cache={"features": str(inp.folder), "descriptors": str(upstream),
                                    "evaluate": str(folder)})
    for name, split in splits.items():
        path = folder / "splits" / f"{name}.json"
        if not json_intact(path):
            if gram is None:
                ids_k, K, attrs_k = load_gram(upstream)
                if ids_k != ids or attrs_k["sources"] != attrs["sources"]:
                    raise StageError(f"{upstream / VIEW} changed during the evaluation; rerun")
                gram = Gram(K)
            start = time.perf_counter()
            result = score_split(gram, y, split, ids, metric=dataset.metric, cfg=cfg,
                                 classes=dataset.classes, idt=idt)
            result["wall_time"] = time.perf_counter() - start
            write_json(path, result)              # the split's file first, then its one record
        recorder.record(name, read_json(path))
    return folder, recorder.finish(folder, "results", descriptors=str(upstream),
                                   features=str(inp.folder))
