"""IDT from the command line: `python -m stages.idt dataset=hmdb51 root=... idt_length=15 ...`
extracts improved dense trajectories per video; `idt_import=<folder>` imports DenseTrackStab text.
"""
from __future__ import annotations

import sys

from pipeline.idt.stage import extract_idt, import_idt_text
from stages.common import report, run


def _body(ecfg, _dcfg, _vcfg, icfg) -> int:
    if icfg.idt_import:
        return report("idt import", import_idt_text(ecfg, icfg, icfg.idt_import))
    return report("idt", extract_idt(ecfg, icfg))


def main(argv: list[str] | None = None) -> int:
    return run(argv, 4, _body)


if __name__ == "__main__":
    sys.exit(main())
