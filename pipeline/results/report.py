"""The report of one dataset, built from the results ledger alone: paper-shaped tables of every
configuration evaluated on it, the best configuration's confusion matrices and per-class scores,
sweeps over d' and the EPN parameter, and the learned attention of trained models, gathered into
one self-contained HTML file with the tables beside it as markdown and CSV. Nothing is computed:
no stage runs; only the ledger, the trained models' weights.h5 and one video's frames are read.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from pipeline.core.cache import atomic_path
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.pooling.epn import EPN
from pipeline.learn.naming import EPN_NAMES
from pipeline.learn.scoring import ledger_of
from pipeline.results.html import write_html_report
from pipeline.results.plots import (plot_confusion, plot_group_attention, plot_per_class, plot_sweep,
                            plot_window_attention)
from pipeline.results.stats import format_interval
from pipeline.results.tables import paper_table, row_statistics
from pipeline.results.configurations import (Configuration, _epn_params, _numeric, _without, best,
                                             configurations, dataset_identity, newest, sweep_lines,
                                             trained_models)
from pipeline.results.frames import thumbnails, window_positions

log = logging.getLogger(__name__)

REPORT_DIR = "report"                  # <cache_root>/report/<dataset identity>/
IMAGES_DIR = "images"                  # the PNGs the HTML embeds, kept beside it
                                       # the strip's (the rest stay untouched zero pages)
SKETCH_DIM = "d\u2032 (sketch_dim)"
# Fields that choose videos or splits change the results although they are not cache-key material;
# every other non-key field (where output goes, how fast it runs, the row's name) does not.


def sweep_plots(configs: list[Configuration], folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(caption -> PNG, notes): accuracy against d' (sketch_dim) and against each EPN's
    parameter, one line per group of configurations equal in every other setting."""
    images, notes = {}, []
    configs = newest(configs)
    specs = [("sketch_dim", "descriptors.sketch_dim", configs,
              lambda c: c["descriptors"]["sketch_dim"],
              lambda c: _without(c, "descriptors.sketch_dim"), None)]
    pooled = [c for c in configs if c.config.get("descriptors", {}).get("order", 2) > 1
              and c.config.get("descriptors", {}).get("epn") in EPN]
    for epn in sorted({c.config["descriptors"]["epn"] for c in pooled}):
        for p in EPN[epn].defaults:
            specs.append((f"{epn}_{p}", f"descriptors.epn_params.{p}",
                          [c for c in pooled if c.config["descriptors"]["epn"] == epn],
                          lambda c, p=p: _epn_params(c)[p],
                          lambda c, p=p: _without(c, "descriptors.epn_params", {
                              k: v for k, v in _epn_params(c).items() if k != p}),
                          f"{EPN_NAMES[epn]} {p}"))
    for slug, param, pool, value, swept, what in specs:
        lines = sweep_lines(pool, value, swept)
        if not lines:
            continue
        label = {c.key: name for name, cs in lines.items() for c in cs}
        chosen = [c for cs in lines.values() for c in cs]
        values = {c.key: value(c.config) for c in chosen}
        dropped = [c for c in chosen if not _numeric(values[c.key])]
        if dropped and len(dropped) < len(chosen):     # e.g. eta='N' among numbers: no axis place
            chosen = [c for c in chosen if _numeric(values[c.key])]
            notes.append(f"{what or param}: not on the numeric axis: " + "; ".join(
                f"{label[c.key]} at {param.split('.')[-1]}={values[c.key]!r}: "
                f"{100 * c.mean:.2f}%" for c in dropped))
        records = []
        for c in chosen:
            for r in c.records:
                config = json.loads(json.dumps(r["config"]))     # a copy with the value resolved
                if param.startswith("descriptors.epn_params."):
                    config["descriptors"]["epn_params"] = _epn_params(config)
                records.append({**r, "config": config})
        try:
            path = plot_sweep(records, folder / f"sweep_{slug}.png", param=param,
                              family=lambda r: label[r["config_key"]],
                              title=f"{records[0]['dataset']}: {what or param.split('.')[-1]}")
        except (KeyError, ValueError) as exc:
            notes.append(f"sweep over {param}: not drawn ({exc})")
            continue
        images[f"{records[0]['metric']} against {what or SKETCH_DIM}: {len(chosen)} "
               f"configurations on {len(lines)} line(s), mean over splits"] = path
    return images, notes


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


def best_plots(config: Configuration, folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Confusion matrix per split and per-class scores (mean over splits) of a configuration."""
    images, notes = {}, []
    for r in config.records:
        if not r.get("confusion"):
            notes.append(f"{r['split']}: no confusion matrix ({r['metric']} is multi-label)")
            continue
        images[f"confusion matrix, {config.method}, {r['split']} (rows: true class, "
               f"normalised)"] = plot_confusion(r, folder / f"confusion_{_slug(r['split'])}.png")
    per_class: dict[str, list[float]] = defaultdict(list)
    for r in config.records:
        for name, score in (r.get("per_class") or {}).items():
            per_class[name].append(score)
    if per_class:
        splits = [r["split"] for r in config.records]
        where = splits[0] if len(splits) == 1 else f"mean over {', '.join(splits)}"
        record = {"per_class": {k: float(np.mean(v)) for k, v in per_class.items()},
                  "method": config.method, "split": f"({where})",
                  "metric": config.records[0]["metric"]}
        images[f"per-class {record['metric']}, {config.method} ({where}), sorted"] = \
            plot_per_class(record, folder / "per_class.png")
    return images, notes


def _weights(model: Configuration, split: str) -> Path:
    return Path(model.cache["train"]) / split / "weights.h5"


def attention_plots(models: dict[str, Configuration], folder: Path, *, video: str | None,
                    root: str | None) -> tuple[dict[str, Path], list[str]]:
    """HoT's learned weight per window group averaged per class (test videos of each split), and
    every trained model's attention over the windows of one video drawn over its frames."""
    images, notes = {}, []
    hot = models.get("hot")
    if hot is not None:
        for r in hot.records:
            path = _weights(hot, r["split"])
            if not path.is_file():
                notes.append(f"{hot.method} {r['split']}: {path} is gone; no group attention")
                continue
            with h5py.File(path, "r") as f:
                ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][()]]
                groups = [s.decode() if isinstance(s, bytes) else str(s) for s in f["groups"][()]]
                weights = f["group_weights"][()]
            row = {i: n for n, i in enumerate(ids)}
            test = [(row[p["id"]], p["true"][0]) for p in r.get("predictions", [])
                    if p["id"] in row and p["true"]]
            if not test:
                notes.append(f"{hot.method} {r['split']}: no test video with weights")
                continue
            rows, labels = zip(*test)
            caption = (f"{hot.method}: learned weight per window group (length L, rate s), mean "
                       f"over the {len(rows)} test videos of each class, {r['split']}")
            images[caption] = plot_group_attention(
                weights[list(rows)], groups, np.asarray(labels), r["classes"],
                folder / f"group_attention_{_slug(r['split'])}.png")
    if not models:
        if video is not None:
            log.warning("report_video=%s: no trained attention model of this dataset in the "
                        "ledger, so no window attention to draw", video)
        return images, notes
    first, explicit = next(iter(models.values())), video is not None
    if video is None:
        video = next((p["id"] for r in first.records for p in r.get("predictions", [])), None)
        if video is None:
            return images, notes + ["no test video in the trained models' records"]
    for model in models.values():
        # the first split whose test part holds the video, else the first split (trained on it)
        tested = [r["split"] for r in model.records
                  if any(p["id"] == video for p in r.get("predictions", []))]
        split, role = (tested[0], "test") if tested else (model.records[0]["split"], "training")
        try:
            images[f"{model.method}: attention over the windows of {video} ({role} video of "
                   f"{split}), above its frames"] = window_plot(model, split, video, folder,
                                                                root=root, notes=notes)
        except KeyError as exc:
            if explicit:                # the video asked for is not one of the dataset's
                raise ValueError(f"report_video={video}: {exc.args[0]}") from exc
            notes.append(f"{model.method}: no window attention for {video} ({exc.args[0]})")
        except (OSError, ValueError) as exc:
            notes.append(f"{model.method}: no window attention for {video} ({exc})")
    return images, notes


def window_plot(model: Configuration, split: str, video: str, folder: Path, *,
                root: str | None, notes: list[str]) -> Path:
    """plot_window_attention of `model`'s `split` weights for `video`: each window's weight (the
    mean over components where a model has several, as AP's ranks), over the video's frames."""
    path = _weights(model, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is gone")
    with h5py.File(path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][()]]
        if video not in ids:
            raise KeyError(f"video {video!r} is not among the {len(ids)} videos of {path} "
                           f"(e.g. {', '.join(ids[:3])})")
        i = ids.index(video)
        lo, hi = (int(v) for v in f["offsets"][i:i + 2])
        weights = np.asarray(f["window_weights"][lo:hi], np.float64).reshape(hi - lo, -1).mean(1)
        window_group = f["window_group"][lo:hi]
        groups = [s.decode() if isinstance(s, bytes) else str(s) for s in f["groups"][()]]
    win = window_positions(Path(model.cache["features"]), video, groups, window_group)
    source = win.path if win.path.is_file() or root is None else Path(root) / video
    try:
        frames = thumbnails(source, win.frame_range, win.num_frames)
    except (OSError, ValueError, RuntimeError) as exc:      # RuntimeError: video.VideoError
        notes.append(f"{video}: frames not drawn, grey instead ({exc})")
        frames = np.full((max(win.num_frames, 1), 8, 8, 3), 200, np.uint8)
    out = folder / f"window_attention_{_slug(model.attention or 'model')}.png"
    return plot_window_attention(frames, win.starts, win.lengths, weights, out, steps=win.steps,
                                 title=f"{model.method}, {split}: attention over the windows of "
                                       f"{video}")


def within_noise(top: Configuration, configs: list[Configuration]) -> str:
    """A sentence naming the configurations of top's protocol and metric that a paired test does
    not distinguish from it (tables.row_statistics: p >= 0.05), with top's 95% interval."""
    kind = (top.records[0]["protocol"], top.records[0]["metric"])
    rows = {c.key: c.records for c in configs
            if (c.records[0]["protocol"], c.records[0]["metric"]) == kind}
    stats = row_statistics(rows)
    names = {c.key: c.method for c in configs}
    tied = [names[k] for k, s in stats.items() if s["mark"] == "within noise"]
    ci = stats[top.key]["ci"]
    head = f"95% CI {format_interval(ci)}; " if ci is not None else ""
    if not tied:
        return head + "every other configuration is significantly worse (p < 0.05) or untested."
    return head + (f"within noise of it (paired p >= 0.05): {', '.join(tied[:12])}"
                   + (f" and {len(tied) - 12} more" if len(tied) > 12 else "") + ".")


def configurations_table(configs: list[Configuration], cache_root: Path, fmt: str) -> str:
    """Each configuration with its mean, its config key and its cache folders (traceability)."""
    def where(c: Configuration) -> str:
        out = []
        for stage in ("evaluate", "train", "descriptors", "sketched", "features"):
            if c.cache.get(stage):
                p = Path(c.cache[stage])
                try:
                    p = p.relative_to(cache_root)
                except ValueError:
                    pass
                out.append(str(p))
        return "; ".join(out)
    rows = [[c.method, " ".join(r["split"] for r in c.records), f"{100 * c.mean:.2f}",
             c.key[:12], where(c)] for c in configs]
    head = ["method", "splits", "mean (%)", "config key", "cache folders"]
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([head, *rows])
        return buf.getvalue()
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(ecfg: ExtractConfig, vcfg: EvaluateConfig, *, video: str | None = None) -> Path:
    """Write <cache_root>/report/<dataset identity>/report.html with tables.md and one CSV per
    table beside it, from the ledger's records of the dataset; returns the HTML's path. video:
    the trained models' window attention is drawn for this video id (default: the first test
    video). Raises ValueError when the ledger holds nothing for the dataset."""
    identity = dataset_identity(ecfg)
    ledger = ledger_of(ecfg, vcfg)
    if not ledger.path.is_file():
        raise ValueError(f"no results ledger at {ledger.path}; run `make evaluate` (or sweep, "
                         f"train) with the same cache_root first")
    records = ledger.records(dataset=identity)
    if not records:
        held = sorted({r["dataset"] for r in ledger.records()})
        raise ValueError(f"the ledger {ledger.path} holds no result for dataset {identity!r}; "
                         f"it holds {held or 'none'}")
    out = Path(ecfg.cache_root) / REPORT_DIR / identity
    images_dir = out / IMAGES_DIR
    configs = configurations(records)
    log.info("report of %s from %s: %d records, %d configurations (nothing is recomputed)",
             identity, ledger.path, len(records), len(configs))

    kinds = sorted({(r["protocol"], r["metric"]) for r in records})
    tables, csvs = {}, {}
    for protocol, metric in kinds:                       # one table per protocol and metric
        subset = [r for r in records if (r["protocol"], r["metric"]) == (protocol, metric)]
        tables[f"{identity} ({protocol}, {metric})"] = paper_table(subset)
        csvs["results" + (f"_{protocol}_{metric}" if len(kinds) > 1 else "")] = \
            paper_table(subset, fmt="csv")
    tables["configurations (each row's cache folders)"] = configurations_table(
        configs, Path(ecfg.cache_root), "markdown")
    csvs["configurations"] = configurations_table(configs, Path(ecfg.cache_root), "csv")

    top = best(configs)
    images, notes = best_plots(top, images_dir)
    for plots in (sweep_plots(configs, images_dir),
                  attention_plots(trained_models(configs), images_dir, video=video,
                                  root=ecfg.root)):
        images.update(plots[0])
        notes.extend(plots[1])
    drawn = {Path(p).resolve() for p in images.values()}
    for stale in images_dir.glob("*.png"):               # from an earlier report of other results
        if stale.resolve() not in drawn:
            stale.unlink()

    with atomic_path(out / "tables.md") as tmp:
        tmp.write_text("".join(f"## {name}\n\n{table}\n" for name, table in tables.items()))
    for name, text in csvs.items():
        with atomic_path(out / f"{name}.csv") as tmp:
            tmp.write_text(text)
    for stale in out.glob("results*.csv"):               # a table of an earlier report's protocol
        if stale.stem not in csvs:
            stale.unlink()
    summary = [f"Built from the results ledger {ledger.path}: {len(records)} records, "
               f"{len(configs)} configurations; nothing was recomputed.",
               f"Best configuration (mean over {len(top.records)} splits): {top.method}, "
               f"{100 * top.mean:.2f}%, config key {top.key[:12]}. {within_noise(top, configs)}",
               "Every table row carries its 95% interval and paired p-values against the "
               "first-order row and the best row (docs/statistics.md).", ""]
    summary += [f"- {note}" for note in notes]
    return write_html_report(out / "report.html", title=f"{identity}: results", tables=tables,
                             images=images, notes="\n".join(summary))
