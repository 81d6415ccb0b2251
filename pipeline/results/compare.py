"""Two configurations of the results ledger side by side (`make compare`): each split's scores with
their 95% intervals, the discordant counts and the paired p-value, then overall; or every row of a
report section against that section's best row (docs/statistics.md)."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np

from pipeline.results.ledger import latest
from pipeline.results.stats import (compare_records, format_interval, format_p, mcnemar_exact,
                                    correctness, pooled_interval, split_interval, splits_interval)
from pipeline.results.tables import natural_key, row_statistics

log = logging.getLogger(__name__)


def section_name(record: Mapping) -> str:
    """The report's section (table) title of a record: "<dataset> (<protocol>, <metric>)"."""
    return f"{record['dataset']} ({record['protocol']}, {record['metric']})"


def group_configurations(records: Sequence[dict]) -> dict[str, list[dict]]:
    """config_key -> its latest record per split, splits in natural order."""
    out: dict[str, list[dict]] = {}
    for r in latest(records):
        out.setdefault(r["config_key"], []).append(r)
    return {k: sorted(v, key=lambda r: natural_key(r["split"])) for k, v in out.items()}


def find_configuration(configs: Mapping[str, list[dict]], query: str, *, what: str) -> str:
    """The config key that `query` names: a config-key prefix, or a row (method) name exactly.
    No match or several raise ValueError listing what the ledger holds."""
    def describe(k: str) -> str:
        r = configs[k][-1]
        return f"{k[:12]} {r['method']!r} ({section_name(r)}, {len(configs[k])} splits)"
    hits = [k for k in configs if k.startswith(query)] or \
        [k for k in configs if configs[k][-1]["method"] == query]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        listing = "; ".join(describe(k) for k in list(configs)[:20])
        raise ValueError(f"{what}={query!r} names no configuration of the ledger (give a config "
                         f"key prefix or a row name); it holds {len(configs)}: {listing}")
    raise ValueError(f"{what}={query!r} names {len(hits)} configurations: "
                     + "; ".join(describe(k) for k in hits[:20])
                     + "; give a longer config key prefix")


def _cell(iv) -> str:
    return f"{100 * iv.score:.2f} {format_interval(iv)}".strip()


def compare_two(a: Sequence[dict], b: Sequence[dict], *, seed: int = 0) -> str:
    """Markdown: configurations a and b (their records, one per split) per split and overall:
    scores with 95% intervals, discordant counts (videos only A / only B got right), the paired
    p-value and its test; then the pooled McNemar over every paired test prediction."""
    ra, rb = a[-1], b[-1]
    if (ra["dataset"], ra["metric"]) != (rb["dataset"], rb["metric"]):
        raise ValueError(f"cannot compare {ra['method']!r} ({section_name(ra)}) with "
                         f"{rb['method']!r} ({section_name(rb)}): not the same dataset and metric")
    per, overall = compare_records(a, b, seed=seed)
    by_a, by_b = {r["split"]: r for r in a}, {r["split"]: r for r in b}
    only = sorted(set(by_a) ^ set(by_b), key=natural_key)
    lines = [f"A = {ra['method']} [{ra['config_key'][:12]}], B = {rb['method']} "
             f"[{rb['config_key'][:12]}]: {section_name(ra)}", "",
             "| split | videos | A % [95% CI] | B % [95% CI] | only A right | only B right | p | test |",
             "|---|---|---|---|---|---|---|---|"]
    for split, p in per.items():
        ia, ib = split_interval(by_a[split], seed=seed), split_interval(by_b[split], seed=seed)
        if p is None:
            lines.append(f"| {split} | {by_a[split]['n_test']} | {_cell(ia)} | {_cell(ib)} | | | | "
                         f"no stored predictions |")
            continue
        lines.append(f"| {split} | {p.n} | {_cell(ia)} | {_cell(ib)} | "
                     f"{'' if p.only_a is None else p.only_a} | "
                     f"{'' if p.only_b is None else p.only_b} | {format_p(p.p)} | {p.test} |")
    common = list(per)
    if overall is not None and len(common) > 1:
        sa = splits_interval([by_a[s] for s in common])
        sb = splits_interval([by_b[s] for s in common])
        lines.append(f"| overall (mean of {len(common)} splits) | {overall.n} | {_cell(sa)} | "
                     f"{_cell(sb)} | {'' if overall.only_a is None else overall.only_a} | "
                     f"{'' if overall.only_b is None else overall.only_b} | "
                     f"{format_p(overall.p)} | {overall.test} |")
        pa = pooled_interval([by_a[s] for s in common], seed=seed)
        pb = pooled_interval([by_b[s] for s in common], seed=seed)
        pooled = _pooled_mcnemar([by_a[s] for s in common], [by_b[s] for s in common])
        if pooled is not None:
            lines.append(f"| pooled predictions | {pooled.n} | {_cell(pa)} | {_cell(pb)} | "
                         f"{pooled.only_a} | {pooled.only_b} | {format_p(pooled.p)} | "
                         f"mcnemar (pooled) |")
    lines += ["", "95% CI: Wilson on a split's test videos (bootstrap over videos for mAP); overall: "
              "corrected resampled t across splits; pooled: each video once. p: exact McNemar on "
              "the per-video predictions (one split; paired bootstrap for mAP); overall: the "
              "corrected resampled t-test over the splits (it accounts for their overlapping "
              "training sets). The pooled McNemar treats every (split, video) prediction as "
              "independent: trust it for one run of k folds, not for repeated CV."]
    if only:
        lines.append(f"Splits only one of them has (left out): {', '.join(only)}.")
    if overall is not None:
        better = "A" if overall.score_a > overall.score_b else "B"
        verdict = ("a real difference (p < 0.05)" if overall.p < 0.05
                   else "not distinguishable from noise (p >= 0.05)")
        lines.append(f"Overall: {better} scores {100 * abs(overall.score_a - overall.score_b):.2f} "
                     f"points higher; {verdict}.")
    return "\n".join(lines) + "\n"


def _pooled_mcnemar(a: Sequence[dict], b: Sequence[dict]):
    """Exact McNemar over every (split, video) both predicted (accuracy only)."""
    if a[0]["metric"] == "map":
        return None
    ca = {(r["split"], v): ok for r in a for v, ok in correctness(r).items()}
    cb = {(r["split"], v): ok for r in b for v, ok in correctness(r).items()}
    common = [k for k in ca if k in cb]
    if not common:
        return None
    return mcnemar_exact([ca[k] for k in common], [cb[k] for k in common])


def compare_section(configs: Mapping[str, list[dict]], section: str, *, seed: int = 0) -> str:
    """Markdown: every configuration of the report section `section` ("<dataset> (<protocol>,
    <metric>)") against the section's best row, overall, with the first-order comparison."""
    rows = {k: v for k, v in configs.items() if section_name(v[-1]) == section}
    if not rows:
        known = sorted({section_name(v[-1]) for v in configs.values()})
        raise ValueError(f"section={section!r} is not a section of the ledger; sections: {known}")
    stats = row_statistics(rows, seed=seed)
    best = next(k for k, s in stats.items() if s["mark"] == "best")
    lines = [f"{section}: every row against the best, {rows[best][-1]['method']} "
             f"[{best[:12]}]", "",
             "| row | splits | mean % | 95% CI | diff to best | p vs best | p vs first-order | "
             "vs best |", "|---|---|---|---|---|---|---|---|"]
    for key, recs in rows.items():
        s = stats[key]
        mean = float(np.mean([r["score"] for r in recs]))
        diff = "" if s["vs_best"] is None else f"{100 * (s['vs_best'].score_a - s['vs_best'].score_b):+.2f}"
        lines.append(f"| {recs[-1]['method']} [{key[:8]}] | {len(recs)} | {100 * mean:.2f} | "
                     f"{format_interval(s['ci'])} | {diff} | "
                     f"{format_p(s['vs_best'].p) if s['vs_best'] else ''} | "
                     f"{'first-order' if s['first'] else format_p(s['vs_first'].p) if s['vs_first'] else ''} | "
                     f"{s['mark']} |")
    lines += ["", "Compare any two rows per split with `make compare ARGS=\"a=<key> b=<key>\"`."]
    return "\n".join(lines) + "\n"
