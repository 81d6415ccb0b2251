"""Dataset registry: name (case-insensitive) -> Dataset class; `get_dataset` builds one."""
from __future__ import annotations

from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item
from pipeline.datasets.synthetic import SyntheticDataset

DATASETS: dict[str, type[Dataset]] = {
    "synthetic": SyntheticDataset,
}


def get_dataset(name: str, root: str | Path | None = None, **options) -> Dataset:
    """Build dataset `name` from `root` (None: the dataset's default, if it has one).

    options: dataset-specific settings, e.g. strict=False to skip bad entries with a count.
    """
    key = name.lower()
    if key not in DATASETS:
        raise DatasetError(f"dataset={name!r} is unknown; choose one of {sorted(DATASETS)}")
    return DATASETS[key].from_root(root, **options)


__all__ = ["DATASETS", "TEST", "TRAIN", "Dataset", "DatasetError", "Item", "get_dataset"]
