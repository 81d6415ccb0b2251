"""Dataset registry: name (case-insensitive) -> Dataset class; `get_dataset` builds one. A dataset
is one module of this package whose class registers itself with `@register_dataset("name")`."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from pipeline.datasets.base import (DATASETS, TEST, TRAIN, Dataset, DatasetError, Item,
                                    register_dataset)

for _module in pkgutil.iter_modules(__path__):           # each module registers its datasets
    importlib.import_module(f"{__name__}.{_module.name}")


def get_dataset(name: str, root: str | Path | None = None, **options) -> Dataset:
    """Build dataset `name` from `root` (None: the dataset's default, if it has one).

    options: dataset-specific settings, e.g. strict=False to skip bad entries with a count.
    """
    key = name.lower()
    if key not in DATASETS:
        raise DatasetError(f"dataset={name!r} is unknown; choose one of {sorted(DATASETS)}")
    return DATASETS[key].from_root(root, **options)


__all__ = ["DATASETS", "TEST", "TRAIN", "Dataset", "DatasetError", "Item", "get_dataset",
           "register_dataset"]
