"""Recognition quality on real video: ../shared/data/videos/arid_train (150 clips, 6 actions) with
DeepMind's Kinetics-400 Inception I3D, under two protocols, each repeated with fold seeds 0, 1, 2:
`folds` (stratified 5-fold CV; folds share scenes, the optimistic figure) and `scene-disjoint`
(stratified 5-fold CV grouped by (class, scene): a test clip never shares its scene with a
training clip of its class; the honest figure). `--protocol scenes` (no scene in train and test
at all) is kept for reference: it holds each scene's one or two classes out, so it sits at chance.

Run `python tests/bench/quality.py [--grid stages/grids/arid_quality.json] [key=value ...]`.
Stage 1 runs once and is cached; every row costs only stage 2 and the SVMs (cached as well).
Prints per protocol one row per configuration: the mean over the 15 folds with its 95% interval
(corrected resampled t, Nadeau & Bengio), the pooled accuracy with its Wilson interval (each clip
counted once), paired p-values against the first-order row and the best row (corrected resampled
t-test over the 15 folds), a mark on rows within noise of the best, and the C the SVM chose.
`--reference NAME` adds the default-choice table: each row against the reference row (the
paper's choice), moved to only on p < 0.05 (pipeline.results.stats.choose_default).
Exit status 1 when the default configuration does not beat first order by the target with p < 0.05
under the `folds` protocol. See docs/statistics.md.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.core.settings import parse_overrides  # noqa: E402
from pipeline.datasets import TEST, TRAIN, get_dataset  # noqa: E402
from pipeline.extract.features import extract_features  # noqa: E402
from pipeline.extract.settings import ExtractConfig  # noqa: E402
from pipeline.learn.scoring import ledger_of  # noqa: E402
from pipeline.learn.settings import EvaluateConfig  # noqa: E402
from pipeline.pooling.settings import DescriptorConfig  # noqa: E402
from pipeline.results.ledger import latest  # noqa: E402
from pipeline.results.stats import (ALPHA, choose_default, corrected_resampled_ttest,  # noqa: E402
                                    corrected_t_interval, format_p, holm, pooled_interval)
from pipeline.results.sweep import as_token, read_grid, run_sweep  # noqa: E402
from pipeline.results.tables import chosen_C  # noqa: E402

log = logging.getLogger("bench_quality")
DATA = ROOT.parent / "shared" / "data" / "videos" / "arid_train"
SCENE = re.compile(r"_(\d+)_\d+\.\w+$")           # ARID names: <Class>_<scene>_<take>.mp4
PROTOCOLS = {
    "folds": ({"folds": 5}, "stratified 5-fold CV; folds share scenes (optimistic)"),
    "scene-disjoint": ({"folds": 5, "group": r"^([A-Za-z]+_\d+)_\d+\.\w+$"},
                       "5-fold CV grouped by (class, scene): no test clip shares its scene with a "
                       "training clip of its class"),
    "scenes": ({"folds": 5, "group": r"_(\d+)_\d+\.\w+$"},
               "5-fold CV grouped by scene: no scene in train and test (chance: each scene holds "
               "one or two classes)"),
}
DEFAULT_PROTOCOLS = ["folds", "scene-disjoint"]
TARGET = 0.05        # the default configuration beats the first-order baseline by 5 points


def qualifying(splits: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """Split -> its test clips that share no scene with a training clip of their class, and whose
    class has training clips at all (the clips the scene-disjoint figure can honestly score)."""
    out = {}
    for name, assign in splits.items():
        seen = {(v.split("/", 1)[0], SCENE.search(v).group(1)) for v, r in assign.items()
                if r == TRAIN}
        classes = {c for c, _ in seen}
        out[name] = {v for v, r in assign.items() if r == TEST and v.split("/", 1)[0] in classes
                     and (v.split("/", 1)[0], SCENE.search(v).group(1)) not in seen}
    return out


def restrict(record: dict, keep: set[str]) -> dict:
    """A record scored on the test clips in `keep` only (score and n_test recomputed)."""
    preds = [p for p in record.get("predictions") or [] if p["id"] in keep]
    if not preds:
        return {**record, "predictions": [], "n_test": 0, "score": float("nan")}
    right = [int(p["pred"]) in {int(c) for c in p["true"]} for p in preds]
    return {**record, "predictions": preds, "n_test": len(preds), "score": float(np.mean(right))}


def protocol_rows(protocol: str, seeds: list[int], grid: str, settings: list[str],
                  root: list[str]) -> tuple[dict[str, dict], dict[str, int]]:
    """Name -> {"records": one per (seed, fold), keyed "s<seed>/<fold>", "row": grid row} for
    every configuration of `grid` under `protocol`; and the counts of (qualifying) test clips."""
    rows: dict[str, dict] = {}
    counts = {"test": 0, "qualifying": 0, "seeds": []}
    options, _ = PROTOCOLS[protocol]
    seen: dict[frozenset, int] = {}
    for seed in seeds:
        opts = {**options, "seed": seed}
        splits = get_dataset("folder", DATA, **opts).splits()
        folds = frozenset(frozenset(v for v, r in a.items() if r == TEST) for a in splits.values())
        if folds in seen:               # grouped folds over few groups: the seed may change nothing
            log.warning("protocol %s: fold seed %d gives the same folds as seed %d; counted once",
                        protocol, seed, seen[folds])
            continue
        seen[folds] = seed
        counts["seeds"].append(seed)
        table, summaries = run_sweep(grid, root + settings + [as_token("dataset_options", opts)])
        log.info("protocol %s, fold seed %d:\n%s", protocol, seed, table)
        keep = qualifying(splits)
        counts["test"] += sum(r == TEST for a in splits.values() for r in a.values())
        counts["qualifying"] += sum(len(v) for v in keep.values())
        done = [s for s in summaries if s["name"] is not None]
        for s in summaries:
            if s["name"] is None:
                log.error("not run: %s (%s)", s["row"], s["reason"])
        if not done:
            continue
        ecfg, _, vcfg = parse_overrides(root + settings, ExtractConfig, DescriptorConfig,
                                        EvaluateConfig)
        ledger = ledger_of(ecfg, vcfg)
        for s in done:
            recs = latest(ledger.records(config_key=s["config_key"]))
            entry = rows.setdefault(s["name"], {"records": {}, "row": s["row"]})
            for r in recs:
                r = restrict(r, keep[r["split"]]) if protocol != "folds" else r
                entry["records"][f"s{seed}/{r['split']}"] = r
    return rows, counts


def summarise(rows: dict[str, dict]) -> dict[str, dict]:
    """Per row: fold scores, mean, corrected-t interval, pooled Wilson interval, n_train/n_test."""
    out = {}
    for name, entry in rows.items():
        recs = {k: r for k, r in entry["records"].items() if r["n_test"] > 0}
        if not recs:
            continue
        scores = {k: r["score"] for k, r in recs.items()}
        n_train = float(np.mean([r["n_train"] for r in recs.values()]))
        n_test = float(np.mean([r["n_test"] for r in recs.values()]))
        values = list(scores.values())
        ci = corrected_t_interval(values, n_train, n_test) if len(values) > 1 else (np.nan,) * 2
        out[name] = {"scores": scores, "mean": float(np.mean(values)), "ci": ci,
                     "pooled": pooled_interval(list(recs.values())), "n_train": n_train,
                     "n_test": n_test, "row": entry["row"], "records": list(recs.values())}
    return out


def paired(a: dict, b: dict):
    """Corrected resampled t-test of rows a and b over the folds both have (same seeds, folds)."""
    common = [k for k in a["scores"] if k in b["scores"]]
    if len(common) < 2:
        return None
    return corrected_resampled_ttest([a["scores"][k] for k in common],
                                     [b["scores"][k] for k in common],
                                     a["n_train"], a["n_test"])


def print_table(protocol: str, seeds: list[int], summary: dict[str, dict], counts: dict) -> dict:
    """The protocol's markdown table; returns {"baseline", "best", "tests vs first order"}."""
    options, what = PROTOCOLS[protocol]
    n_folds = max(len(s["scores"]) for s in summary.values())
    distinct = counts["seeds"]
    print(f"\n## arid_train, protocol {protocol!r}: {what} ({options}, fold seeds {seeds}"
          + (f", of which {distinct} give distinct folds" if distinct != seeds else "")
          + f"; {n_folds} folds), accuracy %\n")
    if protocol != "folds":
        print(f"Test clips that share no scene with a training clip of their class (and whose "
              f"class has training clips): {counts['qualifying']} of {counts['test']} (each clip "
              f"once per distinct fold seed); every figure below is on those. Chance: 16.7% "
              f"(6 classes).\n")
    baseline = next((n for n, s in summary.items() if s["row"].get("order") == 1), None)
    most = max(len(s["scores"]) for s in summary.values())
    best = max((n for n, s in summary.items() if len(s["scores"]) == most),
               key=lambda n: summary[n]["mean"])
    print(f"| method | mean | 95% CI ({n_folds} folds, corrected t) | pooled [95% Wilson] | "
          f"vs first-order: diff, p | vs best: p | within noise of best | C chosen (folds) |")
    print("|---|---|---|---|---|---|---|---|")
    tests = {}
    for name, s in summary.items():
        lo, hi = s["ci"]
        pool = s["pooled"]
        vs_base = paired(s, summary[baseline]) if baseline and name != baseline else None
        vs_best = paired(s, summary[best]) if name != best else None
        tests[name] = vs_base
        base_cell = (f"{100 * vs_base.mean_diff:+.2f}, p={format_p(vs_base.p)}"
                     if vs_base else ("(baseline)" if name == baseline else ""))
        mark = "best" if name == best else ("yes" if vs_best and vs_best.p >= ALPHA else "no")
        print(f"| {name} | {100 * s['mean']:.2f} | [{100 * lo:.1f}, {100 * hi:.1f}] | "
              f"{100 * pool.score:.2f} [{100 * pool.lo:.1f}, {100 * pool.hi:.1f}] | {base_cell} | "
              f"{format_p(vs_best.p) if vs_best else ''} | {mark} | "
              f"{chosen_C(s['records'])} |")
    return {"baseline": baseline, "best": best, "tests": tests}


def print_defaults(reference: str, per_protocol: dict[str, dict[str, dict]]) -> None:
    """Each row against the reference (the paper's choice): difference and p per protocol, and
    choose_default's verdict (Holm-adjusted over the rows that score higher, folds protocol)."""
    protocols = list(per_protocol)
    first = per_protocol[protocols[0]]
    if reference not in first:
        log.error("--reference %r is not a row of the grid (rows: %s)", reference, list(first))
        return
    print(f"\n## defaults: every row against {reference!r} (the paper's choice)\n")
    head = " | ".join(f"{p}: diff, p" for p in protocols)
    print(f"| row | {head} | verdict ({protocols[0]}, Holm over the rows above the reference) |")
    print("|---" * (len(protocols) + 2) + "|")
    pvals, scores = {}, {n: s["mean"] for n, s in first.items()}
    for name, s in first.items():
        if name != reference:
            t = paired(s, first[reference])
            if t is not None:
                pvals[name] = t.p
    adjusted = holm({n: p for n, p in pvals.items() if scores[n] > scores[reference]})
    for name in first:
        if name == reference:
            continue
        cells = []
        for p in protocols:
            rows = per_protocol[p]
            t = paired(rows[name], rows[reference]) if name in rows and reference in rows else None
            cells.append(f"{100 * t.mean_diff:+.2f}, p={format_p(t.p)}" if t else "")
        d = choose_default(reference, {reference: scores[reference], name: scores[name]},
                           {name: adjusted.get(name, pvals.get(name))}, adjust=False)
        verdict = (f"move (p_Holm={format_p(adjusted[name])})" if d.moved else
                   "keep the paper's" + (f" (p_Holm={format_p(adjusted[name])})"
                                          if name in adjusted else " (not better)"))
        print(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    overall = choose_default(reference, scores, pvals)
    print(f"\nDecision over all rows ({protocols[0]}): {overall.reason}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(ROOT / "stages" / "grids" / "arid_quality.json"))
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), action="append",
                        help=f"repeatable; default: {' and '.join(DEFAULT_PROTOCOLS)}")
    parser.add_argument("--seeds", default="0,1,2", help="fold seeds, comma-separated")
    parser.add_argument("--reference", help="row name of the paper's choice: adds the defaults "
                                            "table (each row against it, moved to on p < 0.05)")
    parser.add_argument("settings", nargs="*", help="key=value overrides (e.g. cache_root=...)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not DATA.is_dir():
        print(f"bench_quality: SKIPPED: the real clips are not at {DATA} (only in the project's "
              f"workspace)")
        return 0
    base, _ = read_grid(args.grid)
    root = [f"root={str(DATA)!r}"]
    stage1 = parse_overrides(root + [as_token(k, v) for k, v in base.items()] + args.settings,
                             ExtractConfig, DescriptorConfig, EvaluateConfig)[0]
    result = extract_features(stage1)                    # once; cached for every row below
    if result.failures:
        log.warning("%d clips failed in stage 1; the rows use the others", len(result.failures))
    verdict = 0
    seeds = [int(v) for v in args.seeds.split(",")]
    per_protocol = {}
    for protocol in args.protocol or DEFAULT_PROTOCOLS:
        rows, counts = protocol_rows(protocol, seeds, args.grid, args.settings, root)
        summary = summarise(rows)
        if not summary:
            log.error("protocol %s: no row could be scored", protocol)
            verdict = 1
            continue
        per_protocol[protocol] = summary
        info = print_table(protocol, seeds, summary, counts)
        baseline = info["baseline"]
        default = next((n for n in summary if n.startswith("default")), None)
        if baseline and default and info["tests"].get(default) is None:
            log.error("protocol %s: the default and first-order rows share fewer than 2 folds; "
                      "no paired test", protocol)
            verdict |= protocol == "folds"
        elif baseline and default:
            t = info["tests"][default]
            ok = t is not None and t.mean_diff >= TARGET and t.p < ALPHA
            if protocol == "folds":
                verdict |= not ok
            print(f"\ndefault - first-order baseline ({protocol}): {100 * t.mean_diff:+.2f} points, "
                  f"p = {format_p(t.p)} (corrected resampled t, {t.n_splits} folds); target >= "
                  f"{100 * TARGET:.0f} points with p < {ALPHA}: {'PASS' if ok else 'FAIL'}"
                  + ("" if protocol == "folds" else " (reported, not gating)"))
    if args.reference and per_protocol:
        print_defaults(args.reference, per_protocol)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
