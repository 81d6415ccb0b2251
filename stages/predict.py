"""Prediction from the command line: `python -m stages.predict model=<folder> videos=<folder or
files> [top_k=5] [head=svm]`; runs the videos through stages 1 and 2 with the model's recorded
settings and prints each video's top-k classes by the head (svm, logreg, mlp: the head `make train
head=...` fitted on the model; linear: the softmax layer trained with the pooling), also written to
a CSV in the model folder."""
from __future__ import annotations

import logging
import sys

from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.learn.predict import predict
from stages.common import EXIT_OK, run

log = logging.getLogger("stages")


def _body(ecfg: ExtractConfig, dcfg, vcfg: EvaluateConfig, icfg, tcfg: TrainConfig) -> int:
    path, rows = predict(ecfg, tcfg, vcfg)
    print(f"{'video':<40s} {'rank':>4s}  {'class':<24s} {'score':>9s} {'prob':>6s}")
    for r in rows:
        prob = "-" if r["probability"] is None else f"{r['probability']:.3f}"
        print(f"{r['video']:<40s} {r['rank']:>4d}  {r['class']:<24s} {r['score']:>9.4f} "
              f"{prob:>6s}")
    log.info("predict: %s", path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(argv, 5, _body)


if __name__ == "__main__":
    sys.exit(main())
