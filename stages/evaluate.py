"""Evaluation from the command line: `python -m stages.evaluate` with the settings of the two
stages before it plus head settings; prints the results table."""
from __future__ import annotations

import logging
import sys

from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.learn.evaluate import evaluate
from stages.common import EXIT_OK, results_table, run

log = logging.getLogger("stages")


def _body(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig, icfg) -> int:
    folder, results = evaluate(ecfg, dcfg, vcfg, icfg)
    log.info("evaluate: %s (results.json, results.md)", folder)
    print(results_table(folder, "results", results, ecfg, vcfg), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(argv, 4, _body)


if __name__ == "__main__":
    sys.exit(main())
