"""Result tables shaped like the papers': one row per method (configuration), one column per split,
then the protocol's summary columns; built from score dicts or from ledger records (pipeline.results.ledger).
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from typing import Callable

import numpy as np

from pipeline.results.ledger import latest
from pipeline.results.stats import (ALPHA, compare_records, format_interval, format_p,
                                    pooled_interval, split_interval, splits_interval)


def results_table(rows: dict[str, dict[str, float]], *, metric: str) -> str:
    """Markdown table; rows: method -> {split: score in [0, 1]}; scores printed in percent."""
    splits = list(dict.fromkeys(s for scores in rows.values() for s in scores if s != "mean"))
    head = f"| method ({metric}, %) | " + " | ".join(splits + ["mean"]) + " |"
    rule = "|---" * (len(splits) + 2) + "|"
    lines = [head, rule]
    for name, scores in rows.items():
        cells = [f"{100 * scores[s]:.2f}" if s in scores else "" for s in splits]
        mean = sum(scores[s] for s in splits if s in scores) / max(1, sum(s in scores for s in splits))
        lines.append(f"| {name} | " + " | ".join(cells + [f"{100 * mean:.2f}"]) + " |")
    return "\n".join(lines) + "\n"


def chosen_C(records: list[dict]) -> str:
    """The C the head chose per split, as "10 (9/15), 100 (6/15)", plus how many splits chose an
    end of the (extended) grid ("; at an end 2/15"); "" when no split chose a C from a grid."""
    chosen = [r.get("chosen") or {} for r in records]
    values = [c["C"] for c in chosen if c.get("C") is not None and c.get("C_grid")]
    if not values:
        return ""
    counts = Counter(float(v) for v in values)
    text = ", ".join(f"{c:g} ({k}/{len(records)})" for c, k in
                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    edge = sum(1 for c in chosen if c.get("C_grid") and c["C"] in (min(c["C_grid"]),
                                                                    max(c["C_grid"])))
    return text + (f"; at an end {edge}/{len(records)}" if edge else "")


def natural_key(name: str) -> list:
    """Sort key that puts sp2 before sp10 and f1 before f2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _mean(scores: dict[str, float], names) -> float | None:
    values = [scores[n] for n in names if n in scores]
    return float(np.mean(values)) if values else None


def _splits_columns(splits: list[str], fmt: str) -> tuple[list[str], list[str], Callable]:
    """Official splits (HMDB51/UCF101 sp1..sp3, folds, LOPO groups): mean and sample std over
    splits; markdown shows "mean ± std" in one cell and flags a row that lacks some splits."""
    def summary(scores: dict[str, float]) -> list[str]:
        values = [scores[s] for s in splits if s in scores]
        mean = _pct(float(np.mean(values)))
        std = _pct(float(np.std(values, ddof=1))) if len(values) > 1 else ""
        if fmt == "csv":
            return [mean, std]
        cell = f"{mean} ± {std}" if std else mean
        return [cell + (f" ({len(values)}/{len(splits)} splits)" if len(values) < len(splits) else "")]
    return splits, (["mean", "std"] if fmt == "csv" else ["mean"]), summary


def _yup_columns(splits: list[str], fmt: str) -> tuple[list[str], list[str], Callable]:
    """YUP++ (Feichtenhofer et al. 2017): static, dynamic, mixed, mean of static and dynamic,
    mean of all three (blank unless every split it needs is present)."""
    names = ["static", "dynamic", "mixed"]
    extra = [s for s in splits if s not in names]
    if extra:
        raise ValueError(f"YUP++ records have splits {extra}; expected only {names}")

    def summary(scores: dict[str, float]) -> list[str]:
        return [_pct(_mean(scores, group)) if all(n in scores for n in group) else ""
                for group in (names[:2], names)]
    return names, ["mean(stat/dyn)", "mean(all)"], summary


def _mpii_columns(splits: list[str], fmt: str) -> tuple[list[str], list[str], Callable]:
    """MPII Cooking: one split per held-out subject (7), then mAP = mean over the splits."""
    def summary(scores: dict[str, float]) -> list[str]:
        n = sum(s in scores for s in splits)
        flag = f" ({n}/{len(splits)} splits)" if n < len(splits) and fmt != "csv" else ""
        return [_pct(_mean(scores, splits)) + flag]
    return splits, ["mAP"], summary


PROTOCOL_TABLES: dict[str, Callable] = {"splits": _splits_columns, "yup": _yup_columns,
                                        "mpii": _mpii_columns}


def _one(records: list[dict], field: str) -> str:
    values = sorted({str(r[field]) for r in records})
    if len(values) != 1:
        raise ValueError(f"one table needs records of one {field}, got {values}; filter them first "
                         f"(Ledger.records({field}=...)): one table per {field}")
    return values[0]


def _row_names(rows: dict[str, list[dict]]) -> dict[str, str]:
    """config_key -> row name: the method, plus a short key suffix where methods collide."""
    method = {key: recs[-1]["method"] for key, recs in rows.items()}
    names = {}
    for key, name in method.items():
        clash = [k for k, m in method.items() if m == name and k != key]
        if not clash:
            names[key] = name
            continue
        n = 6
        while any(k[:n] == key[:n] for k in clash) and n < len(key):
            n += 2
        names[key] = f"{name} [{key[:n]}]"
    return names


def _missing_note(name: str, recs: list[dict], splits: list[str]) -> str | None:
    """'name: sp1 scored 3570/1530, missing 2/0 train/test; ...' when any video went unscored."""
    if not any(r.get("n_missing_train", 0) or r.get("n_missing_test", 0) for r in recs):
        return None
    by_split = {r["split"]: r for r in recs}
    parts = [f"{s} scored {r['n_train']}/{r['n_test']}, missing "
             f"{r.get('n_missing_train', 0)}/{r.get('n_missing_test', 0)}"
             for s in splits if (r := by_split.get(s))]
    return f"{name}: " + "; ".join(parts) + " (train/test videos)"


LEGEND = ("95% CI: Wilson on the split's test videos (one split), or the corrected resampled t "
          "interval of the mean across splits (several: their training sets overlap); pooled: "
          "every split's test predictions together, each video counted once, Wilson (accuracy) "
          "or bootstrap over videos (mAP). p: paired, two-sided, on the same test videos: exact "
          "McNemar on the per-video predictions (one split; paired bootstrap over videos for "
          "mAP), corrected resampled t-test over the splits (several; Nadeau & Bengio 2003). "
          "within noise: not distinguishable from the best row (p >= 0.05); worse: p < 0.05. "
          "A blank p: the rows share no split tested on the same videos (e.g. other fold seeds). "
          "C: the C the SVM chose per split (docs/statistics.md).")


def _is_first_order(recs: list[dict]) -> bool:
    config = recs[-1].get("config") or {}
    descriptors = config.get("descriptors") if isinstance(config, dict) else None
    if isinstance(descriptors, dict) and "order" in descriptors:
        return descriptors["order"] == 1 and not config.get("train") \
            and (config.get("evaluate") or {}).get("idt", "off") == "off"
    return str(recs[-1]["method"]).startswith("first-order")


def row_statistics(rows: dict[str, list[dict]], *, seed: int = 0) -> dict[str, dict]:
    """Per configuration (key -> its records, one per split): "ci" (Interval: one split's, or the
    corrected t interval across splits), "pooled" (Interval, several splits), "vs_first",
    "vs_best" (pipeline.results.stats.Paired overall, or None), "mark" ("best", "within noise",
    "worse" or ""), "C" (chosen_C). The first-order row is the first configuration of order 1;
    the best row the highest mean among those scored on the most splits."""
    means = {k: float(np.mean([r["score"] for r in recs])) for k, recs in rows.items()}
    most = max(len(recs) for recs in rows.values())
    best = max((k for k, recs in rows.items() if len(recs) == most), key=lambda k: means[k])
    first = next((k for k, recs in rows.items() if _is_first_order(recs)), None)
    out = {}
    for key, recs in rows.items():
        recs = sorted(recs, key=lambda r: natural_key(r["split"]))
        ci = split_interval(recs[0], seed=seed) if len(recs) == 1 else splits_interval(recs)
        vs_first = (compare_records(recs, rows[first], seed=seed, per_split=False)[1]
                    if first is not None and key != first else None)
        vs_best = (compare_records(recs, rows[best], seed=seed, per_split=False)[1]
                   if key != best else None)
        if key == best:
            mark = "best"
        elif vs_best is None or not np.isfinite(vs_best.p):
            mark = ""
        else:
            mark = "within noise" if vs_best.p >= ALPHA else "worse"
        out[key] = {"ci": ci, "pooled": pooled_interval(recs, seed=seed) if len(recs) > 1 else None,
                    "vs_first": vs_first, "vs_best": vs_best, "mark": mark, "C": chosen_C(recs),
                    "first": key == first, "has_first": first is not None}
    return out


def _stats_head(stats: dict[str, dict], fmt: str) -> list[str]:
    several = any(s["pooled"] is not None for s in stats.values())
    has_first = any(s["has_first"] for s in stats.values())
    has_C = any(s["C"] for s in stats.values())
    if fmt == "csv":
        head = ["ci_lo", "ci_hi"] + (["pooled", "pooled_lo", "pooled_hi"] if several else [])
        head += (["p_first_order"] if has_first else []) + ["p_best", "vs_best"]
        return head + (["C"] if has_C else [])
    head = ["95% CI"] + (["pooled [95% CI]"] if several else [])
    head += (["p vs first-order"] if has_first else []) + ["p vs best", "vs best"]
    return head + (["C chosen"] if has_C else [])


def _stats_cells(s: dict, stats: dict[str, dict], fmt: str) -> list[str]:
    several = any(v["pooled"] is not None for v in stats.values())
    has_first = any(v["has_first"] for v in stats.values())
    has_C = any(v["C"] for v in stats.values())
    ci, pooled = s["ci"], s["pooled"]
    p_first = "first-order" if s["first"] else (format_p(s["vs_first"].p) if s["vs_first"] else "")
    p_best = format_p(s["vs_best"].p) if s["vs_best"] else ""
    if fmt == "csv":
        cells = [_pct(ci.lo) if ci else "", _pct(ci.hi) if ci else ""]
        if several:
            cells += ([_pct(pooled.score), _pct(pooled.lo), _pct(pooled.hi)] if pooled
                      else ["", "", ""])
    else:
        cells = [format_interval(ci)]
        if several:
            cells.append(f"{_pct(pooled.score)} {format_interval(pooled)}" if pooled else "")
    cells += ([p_first] if has_first else []) + [p_best, s["mark"]]
    return cells + ([s["C"]] if has_C else [])


def paper_table(records: list[dict], fmt: str = "markdown") -> str:
    """A table shaped like the papers' for records of one dataset, protocol and metric.

    Protocols: "splits" -> method | sp1 | ... | spk | mean (± sample std over splits);
    "yup" -> method | static | dynamic | mixed | mean(stat/dyn) | mean(all);
    "mpii" -> method | s08 ... s20 | mAP. One row per configuration (config_key), named by its
    method; the latest record per (config_key, split) wins. Scores in percent, 2 decimals.
    Then each row's uncertainty (row_statistics, LEGEND): its 95% interval, the pooled score
    with its interval (several splits), paired p-values against the first-order row and the
    best row, a mark for rows within noise of the best, and the C chosen per split.
    When videos went unscored, markdown gets a note per row and split (scored and missing
    train/test counts) and CSV a "missing" column. fmt: "markdown" or "csv".
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt={fmt!r} must be 'markdown' or 'csv'")
    if not records:
        raise ValueError("paper_table: no records")
    records = latest(records)
    dataset, protocol, metric = (_one(records, f) for f in ("dataset", "protocol", "metric"))
    if protocol not in PROTOCOL_TABLES:
        raise ValueError(f"protocol {protocol!r} is unknown; choose one of {sorted(PROTOCOL_TABLES)}")
    splits = sorted({r["split"] for r in records}, key=natural_key)
    splits, summary_names, summary = PROTOCOL_TABLES[protocol](splits, fmt)
    rows: dict[str, list[dict]] = {}
    for r in records:
        rows.setdefault(r["config_key"], []).append(r)
    names = _row_names(rows)
    notes = {key: _missing_note(names[key], recs, splits) for key, recs in rows.items()}
    label = "mAP" if metric == "map" else metric
    stats = row_statistics(rows)
    stats_head = _stats_head(stats, fmt)

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        missing = any(notes.values())
        writer.writerow(["method", *splits, *summary_names, *stats_head]
                        + (["missing"] * missing))
        for key, recs in rows.items():
            scores = {r["split"]: r["score"] for r in recs}
            writer.writerow([names[key], *(_pct(scores.get(s)) for s in splits),
                             *summary(scores), *_stats_cells(stats[key], stats, fmt)]
                            + ([notes[key] or ""] * missing))
        return buf.getvalue()

    head = [f"method ({dataset}, {label}, %)", *splits, *summary_names, *stats_head]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key, recs in rows.items():
        scores = {r["split"]: r["score"] for r in recs}
        cells = [names[key], *(_pct(scores.get(s)) for s in splits), *summary(scores),
                 *_stats_cells(stats[key], stats, fmt)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", LEGEND]
    missing = [note for note in notes.values() if note]
    if missing:
        lines += ["", "Unscored videos (missing features or descriptors):", ""]
        lines += [f"- {note}" for note in missing]
    return "\n".join(lines) + "\n"
