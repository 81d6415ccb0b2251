"""Dataset registry: name (case-insensitive) -> Dataset class; `get_dataset` builds one."""
from __future__ import annotations

from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item
from pipeline.datasets.folder import FolderDataset
from pipeline.datasets.hmdb51 import HMDB51
from pipeline.datasets.mpii_cooking import MPIICooking
from pipeline.datasets.synthetic import SyntheticDataset
from pipeline.datasets.ucf101 import UCF101
from pipeline.datasets.yup import YUPPlusPlus

DATASETS: dict[str, type[Dataset]] = {
    "synthetic": SyntheticDataset,
    "hmdb51": HMDB51,
    "ucf101": UCF101,
    "yup": YUPPlusPlus,
    "yup++": YUPPlusPlus,
    "mpii_cooking": MPIICooking,
    "folder": FolderDataset,
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
