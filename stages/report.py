"""The report from the command line: `python -m stages.report dataset=... [report_video=<id>]`
reads the results ledger (no stage runs) and writes <cache_root>/report/<dataset>/report.html
with the tables beside it as markdown and CSV; prints the report's path last."""
from __future__ import annotations

import logging
import shutil
import sys

from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.cache import atomic_path
from pipeline.results.report import write_report
from stages.common import EXIT_OK, EXIT_USAGE, own_options, run

log = logging.getLogger("stages")
# The report's own keys (no stage config holds them), taken out of argv before the shared parse.
OPTIONS = {"report_video": "the video id whose window attention is drawn (default: the first "
                           "test video of the trained models' first split)",
           "tables_to": "also write the report's tables (markdown) to this file, e.g. "
                        "docs/results_hmdb51.md: how the measured tables in docs/ are made"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = own_options(argv, OPTIONS)
    if any(a in ("-h", "--help") for a in argv):
        print("report: " + "; ".join(f"{k}=... {v}" for k, v in OPTIONS.items()))
    for key, example in (("report_video", "brush_hair/clip_001.avi"), ("tables_to", "docs/x.md")):
        if key in own and not own[key]:
            logging.basicConfig(level=logging.INFO)
            log.error("%s= needs a value, e.g. %s=%s", key, key, example)
            return EXIT_USAGE

    def body(ecfg: ExtractConfig, dcfg: DescriptorConfig, vcfg: EvaluateConfig) -> int:
        path = write_report(ecfg, vcfg, video=own.get("report_video"))
        log.info("report: %s (tables.md and one CSV per table beside it)", path)
        if own.get("tables_to"):
            with atomic_path(own["tables_to"]) as tmp:
                shutil.copyfile(path.parent / "tables.md", tmp)
            log.info("tables: %s", own["tables_to"])
        print(path)
        return EXIT_OK

    return run(rest, 3, body)


if __name__ == "__main__":
    sys.exit(main())
