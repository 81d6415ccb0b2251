"""Compare from the command line: `python -m stages.compare a=<config key or row name>
b=<config key or row name>` prints both configurations per split and overall (scores with 95%
intervals, discordant counts, paired p); `section="<dataset> (<protocol>, <metric>)"` prints every
row of that report section against its best. Reads the results ledger only; computes nothing."""
from __future__ import annotations

import logging
import sys

from pipeline.learn.scoring import ledger_of
from pipeline.results.compare import (compare_section, compare_two, find_configuration,
                                      group_configurations)
from stages.common import EXIT_OK, EXIT_USAGE, own_options, run

log = logging.getLogger("stages")
OPTIONS = {"a": "a config key prefix or a row name (make report's tables list both)",
           "b": "the configuration to compare with a",
           "section": "a report section, e.g. \"folder-arid_train (splits, accuracy)\": every row "
                      "against the section's best"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = own_options(argv, OPTIONS)
    if any(a in ("-h", "--help") for a in argv):
        print("compare: " + "; ".join(f"{k}=... {v}" for k, v in OPTIONS.items()))
        return EXIT_OK
    pair = "a" in own or "b" in own
    if (pair and not (own.get("a") and own.get("b"))) or (not pair and not own.get("section")):
        logging.basicConfig(level=logging.INFO)
        log.error("give two configurations, a=<config key or row name> b=<...>, or a report "
                  "section, section=\"<dataset> (<protocol>, <metric>)\" (make compare ARGS=...)")
        return EXIT_USAGE

    def body(ecfg, dcfg, vcfg) -> int:
        ledger = ledger_of(ecfg, vcfg)
        if not ledger.path.is_file():
            raise ValueError(f"no results ledger at {ledger.path}; run make evaluate (or sweep, "
                             f"train) with the same cache_root=, or give ledger=")
        configs = group_configurations(ledger.records())
        if pair:
            a = find_configuration(configs, str(own["a"]), what="a")
            b = find_configuration(configs, str(own["b"]), what="b")
            if a == b:
                raise ValueError(f"a and b name the same configuration {a[:12]}")
            print(compare_two(configs[a], configs[b]), end="")
        else:
            print(compare_section(configs, str(own["section"])), end="")
        return EXIT_OK

    return run(rest, 3, body)


if __name__ == "__main__":
    sys.exit(main())
