"""Prediction from the command line: `python -m stages.predict model=<folder> videos=<folder or
files> [top_k=5]`; runs the videos through stages 1 and 2 with the model's recorded settings and
prints each video's top-k classes (also written to a CSV in the model folder)."""
from __future__ import annotations

import logging
import sys

from pipeline.config import ExtractConfig, TrainConfig
from pipeline.predict import predict
from stages.common import EXIT_OK, run

log = logging.getLogger("stages")


def _body(ecfg: ExtractConfig, dcfg, vcfg, icfg, tcfg: TrainConfig) -> int:
    path, rows = predict(ecfg, tcfg)
    print(f"{'video':<40s} {'rank':>4s}  {'class':<24s} {'score':>9s} {'prob':>6s}")
    for r in rows:
        print(f"{r['video']:<40s} {r['rank']:>4d}  {r['class']:<24s} {r['score']:>9.4f} "
              f"{r['probability']:>6.3f}")
    log.info("predict: %s", path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(argv, 5, _body)


if __name__ == "__main__":
    sys.exit(main())
