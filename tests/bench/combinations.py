"""Every stage-2 combination the Makefile offers, run through the same entry points as `make
evaluate` and `make train`, on one dataset; prints one table row per combination.

Run `make combinations [DATASET=... ARGS="..."]` or `python tests/bench/combinations.py
[key=value ...]` (without dataset=: the synthetic demo set with `make demo`'s settings,
dataset=synthetic weights=none; stage 1 and each stage's work are cached, so a rerun prints the
table at once). The rows:
- `make evaluate`: order=1 (first-order baseline), 2 (SO), 3 (TO) x head=svm|logreg|linear|mlp;
- `make train`: attention=hot|none x order=2|3, and attention=ap_windows|self|learned_query
  (first-order poolings of the windows; order does not apply; the types over stored maps, ap,
  pyramid, self_cells, and pyramid_windows's two layers need another stage 1), each x head=linear (the end-to-end softmax)
  |svm|logreg|mlp (fitted on the learned representation, reusing the trained models).
TO rows use sketch_dim=64 (`--to-dim`): TO at d'=256 has 2.8M values per video.
Not collected by pytest.
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.core.settings import parse_overrides  # noqa: E402
from pipeline.learn.evaluate import evaluate  # noqa: E402
from pipeline.learn.train import train  # noqa: E402
from stages import descriptors as descriptors_stage  # noqa: E402
from stages import evaluate as evaluate_stage  # noqa: E402
from stages import extract as extract_stage  # noqa: E402
from stages import train as train_stage  # noqa: E402
from stages.common import CONFIGS  # noqa: E402

HEADS = ("svm", "logreg", "linear", "mlp")
TRAINED_HEADS = ("linear", "svm", "logreg", "mlp")


def rows(to_dim: int) -> list[tuple[str, list[str]]]:
    """(command, its key=value settings) for every combination."""
    out = []
    for order in (1, 2, 3):
        dim = [f"sketch_dim={to_dim}"] if order == 3 else []
        out += [("evaluate", [f"order={order}", f"head={h}", *dim]) for h in HEADS]
    for attention in ("hot", "none"):
        for order in (2, 3):
            dim = [f"sketch_dim={to_dim}"] if order == 3 else []
            out += [("train", [f"attention={attention}", f"order={order}", f"head={h}", *dim])
                    for h in TRAINED_HEADS]
    for attention in ("ap_windows", "self", "learned_query"):
        out += [("train", [f"attention={attention}", f"head={h}"]) for h in TRAINED_HEADS]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to-dim", type=int, default=64, help="sketch_dim of the TO rows")
    parser.add_argument("settings", nargs="*", help="key=value settings for every row")
    args = parser.parse_args()
    demo = [] if any(s.startswith("dataset=") for s in args.settings) else [
        "dataset=synthetic", "weights=none"]                  # `make demo`'s settings
    base = [*demo, *args.settings]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    table, failed = [], 0
    for command, settings in rows(args.to_dim):
        argv = [*base, *settings]
        for stage in ((extract_stage, descriptors_stage, evaluate_stage) if command == "evaluate"
                      else (extract_stage, train_stage)):
            with redirect_stdout(io.StringIO()):
                code = stage.main(argv)
            if code:
                break
        logging.getLogger().setLevel(logging.WARNING)   # the stages set INFO
        if code:
            failed += 1
            table.append((f"make {command} {' '.join(settings)}", "FAILED", f"exit {code}", ""))
            continue
        configs = parse_overrides(argv, *CONFIGS)
        _, results = (evaluate(*configs[:3]) if command == "evaluate"
                      else train(*configs[:3], configs[4]))
        scores = results["scores"]
        table.append((f"make {command} {' '.join(settings)}", results["method"],
                      f"{100 * scores['mean']:.2f}",
                      " ".join(f"{100 * v:.1f}" for k, v in scores.items() if k != "mean")))
    print("| command (ARGS) | row | mean % | per split |\n|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(f"{len(table) - failed} of {len(table)} combinations ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
