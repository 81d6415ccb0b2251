"""Sweeps: a grid of stage-2 and head settings run over one stage-1 cache. Every configuration's
descriptors and evaluation are cached stages, so a rerun (or a killed sweep, resumed) computes
only what is new; the table is built from the results ledger. A row with `attention` set runs the
learned stage 2 (`make train`) instead of descriptors + evaluate.

Grid file (JSON): {"base": {key: value, ...}, "rows": [{key: value, ...}, ...],
"grid": {key: [value, ...], ...}}. Each row (or each point of the cartesian product of "grid",
or both: every row crossed with every grid point) overrides "base"; the user's command-line
settings override the file's "base" only. Values are JSON (lists stand for tuples); "name" sets a
row's name in the table.
"""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.core.cache import StageError
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors
from pipeline.learn.evaluate import evaluate
from pipeline.learn.scoring import ledger_of
from pipeline.idt.settings import IDTConfig
from pipeline.results.tables import paper_table
from pipeline.learn.train import train

log = logging.getLogger(__name__)


def read_grid(path: str | Path) -> tuple[dict, list[dict]]:
    """(base settings, one override dict per configuration) from a grid file."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"GRID={path}: cannot be read as JSON ({exc})") from exc
    unknown = sorted(set(spec) - {"base", "rows", "grid"})
    if unknown:
        raise ValueError(f"GRID={path}: unknown entries {unknown}; use base, rows and grid")
    rows = spec.get("rows") or [{}]
    grid = spec.get("grid") or {}
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    return spec.get("base", {}), [{**row, **point} for row in rows for point in points]


def as_token(key: str, value: Any) -> str:
    """key=value with the value as a Python literal (lists become tuples)."""
    def literal(v):
        if isinstance(v, list):
            return tuple(literal(x) for x in v)
        if isinstance(v, dict):
            return {k: literal(x) for k, x in v.items()}
        return v
    return f"{key}={literal(value)!r}"


def run_sweep(grid: str | Path, argv: list[str]) -> tuple[str, list[dict]]:
    """Run every configuration of `grid` (stage 2 and evaluation, cached); returns the
    markdown table and one summary per configuration (name, mean, std, folder; or row and
    reason for a configuration that could not run, e.g. IDT rows before `make idt`)."""
    base, rows = read_grid(grid)
    given = {token.partition("=")[0] for token in argv}
    base_tokens = [as_token(k, v) for k, v in base.items() if k not in given]
    summaries, keys, names, failed = [], [], {}, []
    for row in tqdm(rows, desc="sweep", unit="config", disable=None):
        tokens = base_tokens + list(argv) + [as_token(k, v) for k, v in row.items()]
        ecfg, dcfg, vcfg, icfg, tcfg = parse_overrides(tokens, ExtractConfig, DescriptorConfig,
                                                       EvaluateConfig, IDTConfig, TrainConfig)
        try:
            if any(token.startswith("attention=") for token in tokens):
                folder, results = train(ecfg, dcfg, vcfg, tcfg)
            else:
                compute_descriptors(ecfg, dcfg)
                folder, results = evaluate(ecfg, dcfg, vcfg, icfg)
        except StageError as exc:           # e.g. an IDT row before `make idt`: say so, go on
            log.error("sweep: configuration %s skipped: %s", row, exc)
            failed.append({"row": row, "reason": str(exc)})
            continue
        scores = [v for k, v in results["scores"].items() if k != "mean"]
        name = results["method"]                       # vcfg.name when given
        names[results["config_key"]] = name
        summaries.append({"name": name, "mean": float(np.mean(scores)),
                          "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                          "folder": str(folder), "row": row, "config_key": results["config_key"]})
        keys.append(results["config_key"])
        log.info("sweep: %s = %.2f%% (%d of %d configurations)", name,
                 100 * summaries[-1]["mean"], len(summaries), len(rows))
    summaries += [{"name": None, **f} for f in failed]
    if not keys:
        return "", summaries
    records = ledger_of(ecfg, vcfg).records(config_key=keys)
    order = {k: i for i, k in enumerate(keys)}
    records.sort(key=lambda r: order[r["config_key"]])
    records = [{**r, "method": names[r["config_key"]]} for r in records]
    return paper_table(records), summaries
