"""Validate a dataset layout without extracting anything: `python -m stages.check_dataset dataset=...`."""
from __future__ import annotations

import sys

from pipeline.datasets.check import validate
from stages.common import EXIT_OK, run


def _body(cfg) -> int:
    print(validate(cfg.dataset, cfg.root, cache_root=cfg.cache_root, **cfg.dataset_options))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(argv, 1, _body)


if __name__ == "__main__":
    sys.exit(main())
