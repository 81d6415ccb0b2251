"""Stage 2 from the command line: `python -m stages.descriptors` with the extract settings plus
descriptor settings (sketch_dim, order, epn, ...)."""
from __future__ import annotations

import sys

from pipeline.pooling.descriptors import compute_descriptors
from stages.common import report, run


def main(argv: list[str] | None = None) -> int:
    return run(argv, 2,
               lambda ecfg, dcfg: report("descriptors", compute_descriptors(ecfg, dcfg)))


if __name__ == "__main__":
    sys.exit(main())
