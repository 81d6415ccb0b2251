"""The papers' attention models next to their window variants on real video
(../shared/data/videos/arid_train, DeepMind's Kinetics-400 Inception I3D), docs/method.md "Attention".

Run `python tests/bench/attention_papers.py cache_root=/tmp/cache [--pairs ap,pyramid,self]
[--seed 0] [key=value ...]`. Stage 1 must hold the maps (it is not run here: extracting maps is
the slow part; the command is printed when they are missing). Each row is trained end to end
(head=linear) on stratified 5-fold cross-validation with fold seed --seed, over the videos whose
stage-1 features exist; every video is tested once, so the pooled accuracy has a Wilson 95%
interval, and each pair is compared on the same videos by McNemar's exact test.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scipy.stats import binomtest  # noqa: E402

from pipeline.core.settings import parse_overrides  # noqa: E402
from pipeline.learn.train import train  # noqa: E402
from stages.common import CONFIGS  # noqa: E402

log = logging.getLogger("bench_attention_papers")
DATA = ROOT.parent / "shared" / "data" / "videos" / "arid_train"
# the quality benchmark's windows (stages/grids/arid_quality.json) with the maps of both depths
BASE = ["dataset=folder", "lengths=(16,32)", "strides=(16,32)", "steps=((1,2),(1,))",
        "layer=('logits','mixed_4f','mixed_5c')", "pool=('mean','map')", "head=linear",
        "parts=('rgb/logits/mean',)"]
# paper row, its window variant, and the settings of each (the window variants read the sketched
# Kinetics logits of each window, as the README's attention rows; STPA's window levels are the
# window means of the two depths the paper fuses)
PAIRS = {
    "ap": (["attention=ap"], ["attention=ap_windows", "parts=('rgb/logits/mean',)"]),
    "pyramid": (["attention=pyramid"],
                ["attention=pyramid_windows", "parts=('rgb/mixed_4f/mean','rgb/mixed_5c/mean')"]),
    "self": (["attention=self"], ["attention=learned_query"]),
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def correct_by_video(folder: Path) -> dict[str, bool]:
    """video id -> whether its fold's model classified it correctly (every split's result)."""
    out = {}
    for result in sorted(folder.glob("*/result.json")):
        for p in json.loads(result.read_text())["predictions"]:
            out[p["id"]] = p["pred"] in p["true"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--seed", type=int, default=0, help="fold seed")
    parser.add_argument("--root", default=str(DATA), help="the clips (default arid_train; a "
                        "folder named arid_train of links to some of them shares its caches)")
    parser.add_argument("settings", nargs="*", help="key=value overrides (cache_root=... first)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not Path(args.root).is_dir():
        print(f"bench_attention_papers: SKIPPED: the real clips are not at {args.root}")
        return 0
    common = [f"root={args.root!r}", *BASE,
              f"dataset_options={{'folds': 5, 'seed': {args.seed}}}", *args.settings]
    print(f"\n## arid_train, 5 folds (fold seed {args.seed}), head=linear, accuracy %\n")
    print("| method | videos | accuracy | 95% interval (Wilson) | train s |\n|---|---|---|---|---|")
    tests = []
    for pair in args.pairs.split(","):
        runs = []
        for extra in PAIRS[pair]:
            ecfg, dcfg, vcfg, _, tcfg = parse_overrides(common + extra, *CONFIGS)
            folder, results = train(ecfg, dcfg, vcfg, tcfg)
            correct = correct_by_video(folder)
            k, n = sum(correct.values()), len(correct)
            lo, hi = wilson(k, n)
            wall = sum(s.get("wall_time", 0.0) for s in results["splits"].values())
            print(f"| {results['method']} | {n} | {100 * k / n:.1f} | {100 * lo:.1f}-{100 * hi:.1f} "
                  f"| {wall:.0f} |", flush=True)
            runs.append((results["method"], correct))
        (a, ca), (b, cb) = runs
        both = sorted(set(ca) & set(cb))
        only_a = sum(ca[i] and not cb[i] for i in both)
        only_b = sum(cb[i] and not ca[i] for i in both)
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        tests.append(f"| {a} vs {b} | {len(both)} | {only_a} | {only_b} | {p:.3f} |")
    print("\n| pair | videos | only the first right | only the second right | McNemar exact p |")
    print("|---|---|---|---|---|")
    print("\n".join(tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
