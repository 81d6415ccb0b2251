"""Learned stage 2 from the command line: `python -m stages.train` with the settings of the
stages before it plus attention=<a registered type: hot, none, ap, ap_windows, pyramid,
pyramid_windows, self, self_cells, learned_query; docs/method.md "Attention">, its options,
head=svm|logreg|linear|mlp (linear: the end-to-end softmax; the others are fitted on the learned
representation) and the training keys; prints the results table."""
from __future__ import annotations

import logging
import sys

from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.learn.train import results_stem, train
from stages.common import EXIT_OK, results_table, run

log = logging.getLogger("stages")


def _body(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig, icfg,
          tcfg: TrainConfig) -> int:
    folder, results = train(ecfg, dcfg, vcfg, tcfg)
    stem = results_stem(results["head"])
    log.info("train: %s (one model per split; %s.json, %s.md)", folder, stem, stem)
    print(results_table(folder, stem, results, ecfg, vcfg), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(argv, 5, _body)


if __name__ == "__main__":
    sys.exit(main())
