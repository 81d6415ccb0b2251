"""Recognition quality on real video: ../shared/data/videos/arid_train (150 clips, 6 actions) with
DeepMind's Kinetics-400 Inception I3D, under a fixed protocol: 5 folds, seed 0, stratified
(`--protocol folds`) or scene-grouped so no scene is in train and test (`--protocol scenes`).

Run `python tests/bench/quality.py [--grid stages/grids/arid_quality.json] [key=value ...]`.
Stage 1 runs once and is cached; every row costs only stage 2 and the SVMs (cached as well).
Prints one row per configuration (mean and spread over folds), then whether the default
configuration beats the first-order baseline by the target (5 points of mean accuracy).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.config import DescriptorConfig, EvaluateConfig, ExtractConfig, parse_overrides  # noqa: E402
from pipeline.features import extract_features  # noqa: E402
from pipeline.sweep import as_token, read_grid, run_sweep  # noqa: E402

log = logging.getLogger("bench_quality")
DATA = ROOT.parent / "shared" / "data" / "videos" / "arid_train"
PROTOCOLS = {"folds": {"folds": 5, "seed": 0},
             "scenes": {"folds": 5, "seed": 0, "group": r"_(\d+)_\d+\.mp4$"}}
TARGET = 0.05        # the default configuration beats the first-order baseline by 5 points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(ROOT / "stages" / "grids" / "arid_quality.json"))
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), action="append")
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
    for protocol in args.protocol or ["folds", "scenes"]:
        table, summaries = run_sweep(args.grid, root + args.settings
                                     + [as_token("dataset_options", PROTOCOLS[protocol])])
        print(f"\n## arid_train, protocol {protocol!r} ({PROTOCOLS[protocol]}), accuracy %\n")
        print(f"| method | mean | std over folds |\n|---|---|---|")
        for s in summaries:
            print(f"| {s['name']} | {100 * s['mean']:.2f} | {100 * s['std']:.2f} |")
        print("\n" + table)
        baseline = next((s for s in summaries if s["row"].get("order") == 1), None)
        default = next((s for s in summaries if s["name"].startswith("default")), None)
        if baseline and default:
            gain = default["mean"] - baseline["mean"]
            ok = gain >= TARGET
            verdict |= not ok
            print(f"default - first-order baseline ({protocol}): {100 * gain:+.2f} points  "
                  f"target >= {100 * TARGET:.0f}  {'PASS' if ok else 'FAIL'}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
