"""Sweeps from the command line: `python -m stages.sweep grid=stages/grids/hot_ablation.json
dataset=... key=value ...` runs every configuration of the grid over the cached stage-1 features
(stage 2 and evaluation, each cached) and prints the paper-shaped table."""
from __future__ import annotations

import logging
import sys

from pipeline.results.sweep import run_sweep
from stages.common import EXIT_FAILED_ITEMS, EXIT_OK, EXIT_USAGE, run

log = logging.getLogger("stages")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\ngrid=<file.json>: the grid (stages/grids/*.json): "
              "\"base\" settings and \"rows\", each a dict of key=value settings.\n")
        return run([a for a in argv if not a.startswith("grid=")], 3, lambda *c: EXIT_OK)
    grids = [a.partition("=")[2] for a in argv if a.startswith("grid=")]
    rest = [a for a in argv if not a.startswith("grid=")]
    if len(grids) != 1 or not grids[0]:
        logging.basicConfig(level=logging.INFO)
        log.error("give one grid file: grid=stages/grids/hot_ablation.json (make sweep GRID=...)")
        return EXIT_USAGE

    def body(*_configs) -> int:
        table, summaries = run_sweep(grids[0], rest)
        failed = [s for s in summaries if s["name"] is None]
        for s in summaries:
            if s["name"] is not None:
                log.info("%-40s %6.2f +- %5.2f  %s", s["name"], 100 * s["mean"], 100 * s["std"],
                         s["folder"])
        for s in failed:
            log.error("not run: %s (%s)", s["row"], s["reason"])
        print(table, end="")
        return EXIT_FAILED_ITEMS if failed else EXIT_OK

    return run(rest, 3, body)


if __name__ == "__main__":
    sys.exit(main())
