"""PNG plots of results and attention: confusion matrix, per-class scores, a metric against a swept
parameter, attention per window group and class, attention over the windows (and space) of a video.
Figures are drawn on matplotlib's Agg canvas without pyplot, so nothing global is touched.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.core.cache import atomic_path
from pipeline.results.ledger import latest

log = logging.getLogger(__name__)


def _figure(width: float, height: float):
    """A Figure on an Agg canvas (the backend is chosen here, at call time, not at import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path


def _tick_labels(ax, axis: str, names: Sequence[str], limit: int = 60) -> None:
    """Name every tick up to `limit` classes; beyond that names would overlap, so leave numbers."""
    if len(names) > limit:
        return
    size = 8 if len(names) <= 20 else 5
    ticks = np.arange(len(names))
    if axis == "x":
        ax.set_xticks(ticks, list(names), rotation=90, fontsize=size)
    else:
        ax.set_yticks(ticks, list(names), fontsize=size)


def plot_confusion(record: dict, path: str | os.PathLike, *, normalize: bool = True) -> Path:
    """Confusion matrix of one ledger record (`confusion`: (C, C) counts, rows = true class;
    `classes`: C names); rows normalised to fractions unless normalize=False."""
    cm = np.asarray(record["confusion"], dtype=np.float64)
    classes = list(record.get("classes") or range(len(cm)))
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion {cm.shape} must be (C, C) with C = {len(classes)} classes")
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = float(np.clip(len(classes) * 0.18 + 3, 5, 16))
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _tick_labels(ax, "x", [str(c) for c in classes])
    _tick_labels(ax, "y", [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{record.get('method', '')} {record.get('split', '')}".strip())
    return _save(fig, path)


def plot_per_class(record: dict, path: str | os.PathLike) -> Path:
    """Per-class score of one record (`per_class`: class -> score in [0, 1]), sorted best first."""
    items = sorted(record["per_class"].items(), key=lambda kv: -kv[1])
    if not items:
        raise ValueError("record has no per_class scores")
    names, scores = zip(*items)
    fig = _figure(7, float(np.clip(0.18 * len(names) + 1.5, 3, 24)))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, 100 * np.asarray(scores), color="tab:blue")
    ax.set_yticks(y, [str(n) for n in names], fontsize=8 if len(names) <= 60 else 4)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"{record.get('metric', 'score')} per class (%)")
    ax.set_title(f"{record.get('method', '')} {record.get('split', '')}".strip())
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def config_value(config: dict, field: str) -> Any:
    """The value of `field` in a nested config: a dotted path ("descriptors.epn_params.eta"), or a
    bare name found at any depth ("sketch_dim"). Raises KeyError when absent."""
    node: Any = config
    try:
        for part in field.split("."):
            node = node[part]
        return node
    except (KeyError, TypeError):
        pass
    if isinstance(config, dict):
        for value in config.values():
            if isinstance(value, dict):
                try:
                    return config_value(value, field)
                except KeyError:
                    pass
    raise KeyError(f"config has no field {field!r}")


def default_family(record: dict) -> str:
    """A method's family: its name without the parenthesised details ("SO+MaxExp (i3d, d'=128)")."""
    return str(record["method"]).split(" (")[0]


def plot_sweep(records: list[dict], path: str | os.PathLike, *, param: str,
               family: Callable[[dict], str] = default_family, title: str = "") -> Path:
    """A metric against a swept config field (x = `config_value(record["config"], param)`), one
    line per method family. Each configuration scores the mean over its splits (latest record per
    split); configurations that share a family and x are averaged."""
    per_config: dict[str, list[dict]] = {}
    for r in latest(records):
        per_config.setdefault(r["config_key"], []).append(r)
    points: dict[str, dict[Any, list[float]]] = {}
    for recs in per_config.values():
        x = config_value(recs[0]["config"], param)
        x = tuple(x) if isinstance(x, list) else x
        score = float(np.mean([r["score"] for r in recs]))
        points.setdefault(family(recs[0]), {}).setdefault(x, []).append(score)
    if not points:
        raise ValueError("plot_sweep: no records")
    xs = {x for line in points.values() for x in line}
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    xs = sorted(xs) if numeric else sorted(xs, key=str)        # categorical values: evenly spaced
    position = {x: (x if numeric else i) for i, x in enumerate(xs)}
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for name, line in sorted(points.items()):
        for x, values in line.items():
            if len(values) > 1:
                log.warning("plot_sweep: %d configurations of %s at %s=%r are averaged",
                            len(values), name, param, x)
        keys = sorted(line, key=lambda v: position[v])
        ax.plot([position[x] for x in keys], [100 * np.mean(line[x]) for x in keys], marker="o",
                label=name)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 4:      # e.g. d' = 32 ... 256
        ax.set_xscale("log", base=2)
    ax.set_xticks([position[x] for x in xs], [str(x) for x in xs])
    ax.minorticks_off()
    metric = records[0].get("metric", "score")
    ax.set_xlabel(param)
    ax.set_ylabel(f"{'mAP' if metric == 'map' else metric} (%), mean over splits")
    ax.set_title(title or f"{records[0].get('dataset', '')}: {param}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_group_attention(weights, groups: Sequence[str], labels, classes: Sequence[str],
                         path: str | os.PathLike) -> Path:
    """Attention weight per window group (length, rate), averaged over the videos of each class.

    weights: (n_videos, n_groups); groups: n_groups names ("L32_s2"); labels: (n_videos,) class
    indices; classes: C names. Classes without videos are left blank.
    """
    w = np.asarray(weights, dtype=np.float64)
    labels = np.asarray(labels)
    if w.ndim != 2 or w.shape[1] != len(groups) or labels.shape != (w.shape[0],):
        raise ValueError(f"weights {w.shape} must be (n_videos, {len(groups)} groups) and labels "
                         f"{labels.shape} (n_videos,)")
    table = np.full((len(classes), len(groups)), np.nan)
    for c in range(len(classes)):
        if (labels == c).any():
            table[c] = w[labels == c].mean(axis=0)
    fig = _figure(float(np.clip(0.5 * len(groups) + 3, 5, 16)),
                  float(np.clip(0.18 * len(classes) + 2, 4, 20)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(table), cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="mean attention weight")
    _tick_labels(ax, "x", list(groups), limit=100)
    _tick_labels(ax, "y", list(classes))
    ax.set_xlabel("window group (length, rate)")
    ax.set_ylabel("class")
    return _save(fig, path)


def _frame_strip(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames taken at the centres of n equal bins of the video, side by side: (h, n*w, 3)."""
    t = frames.shape[0]
    index = ((np.arange(n) + 0.5) * t / n).astype(int)
    step = max(1, frames.shape[1] // 96)                      # thumbnails about 96 px high
    return np.concatenate([frames[i, ::step, ::step] for i in index], axis=1)


def _overlay(ax, frame: np.ndarray, attention: np.ndarray, title: str = "") -> None:
    """Draw `frame` (H, W, 3) with `attention` (h, w) stretched over it as a translucent heatmap."""
    h, w = frame.shape[:2]
    ax.imshow(frame)
    ax.imshow(np.asarray(attention, dtype=np.float64), cmap="jet", alpha=0.45, extent=(0, w, h, 0),
              interpolation="bilinear")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)


def plot_window_attention(frames, starts, lengths, weights, path: str | os.PathLike, *,
                          steps=None, spatial=None, title: str = "") -> Path:
    """Attentional-pooling weights over the windows of one video, drawn above a strip of its frames.

    frames: (T, H, W, 3) uint8; starts, lengths, weights: (n_windows,) (first frame, number of
    frames sampled, weight); steps: (n_windows,) sampling rates (default 1), so a window covers
    frames start .. start + (length-1)*step. spatial: optional (n_windows, h, w) spatial attention
    maps; then the four highest-weighted windows are shown as their middle frame under the map.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    frames = np.asarray(frames)
    starts, lengths = np.asarray(starts, dtype=int), np.asarray(lengths, dtype=int)
    weights = np.asarray(weights, dtype=np.float64)
    steps = np.ones_like(starts) if steps is None else np.asarray(steps, dtype=int)
    n = weights.shape[0]
    shapes_ok = starts.shape == lengths.shape == steps.shape == (n,)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not shapes_ok:
        raise ValueError(f"frames {frames.shape} must be (T, H, W, 3) and starts {starts.shape}, "
                         f"lengths {lengths.shape}, steps {steps.shape}, weights {weights.shape} "
                         f"all (n_windows,)")
    t = frames.shape[0]
    spans = (lengths - 1) * steps + 1
    rows = 3 if spatial is not None else 2
    fig = _figure(10, 2.2 * rows + 0.02 * n)
    grid = fig.add_gridspec(rows, 4, height_ratios=[2 + 0.02 * n, 1] + [1.6] * (rows - 2))
    ax = fig.add_subplot(grid[0, :])
    order = np.lexsort((starts, spans))                        # grouped by span, then in time
    cmap, norm = colormaps["viridis"], Normalize(weights.min(), weights.max())
    ax.barh(np.arange(n), spans[order], left=starts[order], height=0.8, color=cmap(norm(weights[order])))
    ax.set_xlim(0, t)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks([])
    ax.set_ylabel("windows (by span)")
    ax.set_title(title or "attention over windows")
    strip_ax = fig.add_subplot(grid[1, :], sharex=ax)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=[ax, strip_ax], label="weight")
    strip = _frame_strip(frames, min(t, 12))
    strip_ax.imshow(strip, extent=(0, t, 0, 1), aspect="auto")
    strip_ax.set_yticks([])
    strip_ax.set_xlabel("frame")
    if spatial is not None:
        maps = np.asarray(spatial, dtype=np.float64)
        if maps.ndim != 3 or maps.shape[0] != n:
            raise ValueError(f"spatial {maps.shape} must be (n_windows={n}, h, w)")
        for col, i in enumerate(np.argsort(-weights)[:4]):
            middle = min(t - 1, int(starts[i] + spans[i] // 2))
            _overlay(fig.add_subplot(grid[2, col]), frames[middle], maps[i],
                     f"frames {starts[i]}-{starts[i] + spans[i] - 1}, w={weights[i]:.3f}")
    return _save(fig, path)
