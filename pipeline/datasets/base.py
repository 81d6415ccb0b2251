"""What every dataset yields: items (one video or video segment each) and official splits.

A dataset module subclasses `Dataset`, documents its on-disk layout in its docstring and
registers itself in `pipeline.datasets.DATASETS`.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from abc import ABC
from pathlib import Path

from pipeline.core.digests import file_digest

TRAIN, TEST = "train", "test"


class DatasetError(ValueError):
    """A dataset layout or list file is wrong; the message names the file (and line) and the fix."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One unit of work: a video, or a segment [start, end) of one (0-based frames).

    id: unique, '/'-separated, relative (no '..'), stable across machines, e.g.
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi". It names the cache item file.
    path: the video file on disk.
    labels: class indices into `Dataset.classes` (one for single-label datasets).
    frames: optional [start, end) frame range within the video (MPII Cooking segments).
    """

    id: str
    path: Path
    labels: tuple[int, ...]
    frames: tuple[int, int] | None = None

    def __post_init__(self):
        parts = self.id.split("/")
        if not self.id or self.id.startswith("/") or ".." in parts or "" in parts:
            raise DatasetError(f"item id {self.id!r} must be a relative '/'-separated path without '..'")

    def source(self) -> str:
        """The identity of what this item is computed from, as canonical JSON: id (its path
        relative to the dataset root, so moving the root keeps caches), the file's size and
        content digest (pipeline.core.digests: a copied dataset with new mtimes keeps its caches), and
        the frame range. Every cached item file carries it; a mismatch is redone. A missing or
        unreadable file gives a source no cached file matches (the stage then reports it)."""
        try:
            size, content = Path(self.path).stat().st_size, file_digest(self.path)
        except OSError:
            size = content = None
        frames = None if self.frames is None else [int(v) for v in self.frames]
        return json.dumps({"id": self.id, "size": size, "blake2b": content, "frames": frames},
                          sort_keys=True, separators=(",", ":"))


DATASETS: dict[str, type["Dataset"]] = {}      # name -> class (pipeline.datasets.get_dataset)


def register_dataset(*names: str):
    """Class decorator: make a Dataset selectable as `dataset=<name>` under each of `names`."""
    def add(cls):
        for name in names:
            if name in DATASETS:
                raise ValueError(f"dataset {name!r} is registered twice")
            DATASETS[name] = cls
        return cls
    return add


class Dataset(ABC):
    """A collection of items with named classes and official train/test splits.

    Subclasses set `name`, `metric` ("accuracy" or "map") and `layout`, and either fill
    `_classes`, `_items` and `_splits` while parsing or override `classes`, `items` and `splits`.
    Construction checks the layout and raises `DatasetError`.
    """

    name: str = ""
    metric: str = "accuracy"
    layout: str = ""          # one line: what `root` must hold, shown in errors

    generated: bool = False   # True: builds itself under <cache_root>/data/<name> when root=None

    @classmethod
    def from_root(cls, root: Path | None, *, cache_root: str = "cache", **options) -> "Dataset":
        """Build from `root` with dataset-specific `options`; an unknown option is an error
        that lists the known ones. Generated datasets default to a folder under cache_root."""
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise DatasetError(f"dataset={cls.name}: unknown option(s) {unknown}; "
                               f"{cls.name} takes {allowed}")
        if root is None:
            if not cls.generated:
                raise DatasetError(f"dataset={cls.name}: root= is required: the folder that holds "
                                   f"{cls.layout}")
            root = Path(cache_root) / "data" / cls.name
        return cls(Path(root).expanduser(), **options)

    # Parsing datasets fill _classes, _items and _splits in __init__; others override these.
    _classes: tuple[str, ...] = ()
    _items: list[Item] = []
    _splits: dict[str, dict[str, str]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; an item's labels index into this tuple."""
        return self._classes

    def items(self) -> list[Item]:
        """Every item of the dataset, in a deterministic order."""
        return list(self._items)

    def splits(self) -> dict[str, dict[str, str]]:
        """Split name (e.g. "sp1") -> {item id: "train" | "test"}; unused items are absent."""
        return {name: dict(assign) for name, assign in self._splits.items()}

    @property
    def identity(self) -> str:
        """The folder name of this dataset's caches: two datasets never share item files.
        Registered datasets are one collection each (their name); a folder dataset is named by
        its `name` option, by default its root folder's name."""
        return self.name

    def sources(self) -> dict[str, str]:
        """id -> Item.source() for every item, in the order of items()."""
        return {item.id: item.source() for item in self.items()}

    def describe(self) -> str:
        """One line for logs: name, counts of items, classes and splits."""
        return (f"{self.name}: {len(self.items())} items, {len(self.classes)} classes, "
                f"splits {', '.join(self.splits())}, metric {self.metric}")
