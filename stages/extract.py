"""Stage 1 from the command line: `python -m stages.extract dataset=hmdb51 root=... key=value ...`."""
from __future__ import annotations

import sys

from pipeline.extract.features import extract_features
from stages.common import report, run


def main(argv: list[str] | None = None) -> int:
    return run(argv, 1, lambda cfg: report("extract", extract_features(cfg)))


if __name__ == "__main__":
    sys.exit(main())
