"""Any folder-per-class video tree (root/<class>/<video>), split by a CSV of (path, split) or by a
seeded stratified draw; one split "sp1"; accuracy.
"""
from __future__ import annotations

import csv
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item
from pipeline.datasets.check import (VIDEO_EXTENSIONS, Problems, at, check_relpath,
                                     find_path, is_video, read_lines, require_dir, warn_unlisted)

log = logging.getLogger(__name__)

ROLES = {"train": TRAIN, "test": TEST}
FIX = "fix the row ('<class>/<video>,<train|test>', path relative to root) or remove it"


def stratified_split(ids_by_class: dict[str, list[str]], *, test_fraction: float,
                     seed: int) -> dict[str, str]:
    """{id: "train"|"test"}: per class, round(n * test_fraction) test videos (at least one of each
    role when n >= 2), drawn from a generator seeded by (seed, crc32 of the class name) so a
    class's draw does not change when other classes come or go."""
    assign = {}
    for cls, ids in ids_by_class.items():
        ids = sorted(ids)
        n = len(ids)
        n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
        order = np.random.default_rng([seed, zlib.crc32(cls.encode("utf-8"))]).permutation(n)
        test = {ids[i] for i in order[:n_test]}
        assign.update({vid: TEST if vid in test else TRAIN for vid in ids})
    return assign


class FolderDataset(Dataset):
    """A folder-per-class tree. Options: strict (False: skip bad CSV rows with a count), split_csv
    (a CSV of `path,split` rows, path relative to root, split train|test; an optional header
    `path,split`), test_fraction and seed (the stratified split used without split_csv),
    extensions (the file endings that count as videos). Videos may sit in sub-folders of a class
    folder; the class is the first folder."""

    name = "folder"
    metric = "accuracy"
    layout = "<class>/<video> folders, and optionally a CSV of path,split rows"

    def __init__(self, root: Path, *, strict: bool = True, split_csv: str | Path | None = None,
                 test_fraction: float = 0.3, seed: int = 0,
                 extensions: tuple[str, ...] | list[str] = VIDEO_EXTENSIONS):
        self.root = Path(root)
        self.strict = strict
        if not 0 < test_fraction < 1:
            raise DatasetError(f"{self.name}: test_fraction={test_fraction} must be in (0, 1)")
        if isinstance(extensions, str):
            extensions = (extensions,)
        extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        disk = self._scan(extensions)
        if not disk:
            raise DatasetError(f"{self.name}: no video ({', '.join(extensions)}) in any "
                               f"<class>/ folder of {self.root}; pass root= the folder that holds "
                               f"{self.layout}, or extensions=")
        problems = Problems(self.name, self.root, strict=strict)
        if split_csv is None:
            self.split_csv = None
            assign = stratified_split(self._by_class(disk), test_fraction=test_fraction, seed=seed)
            for cls, ids in self._by_class(disk).items():
                if len(ids) < 2:
                    log.warning("%s: class %r has %d video(s), so it has no test video",
                                self.name, cls, len(ids))
        else:
            self.split_csv = find_path(self.name, self.root, split_csv, [], what="split CSV",
                                       option="split_csv", is_dir=False)
            assign = self._read_csv(set(disk), problems)
        self.skipped = problems.finish()
        problems.require(len(assign), "usable videos")
        self._classes = tuple(sorted({vid.split("/", 1)[0] for vid in assign}))
        label = {c: i for i, c in enumerate(self._classes)}
        self._items = [Item(vid, self.root / vid, (label[vid.split("/", 1)[0]],))
                       for vid in sorted(assign)]
        self._splits = {"sp1": dict(sorted(assign.items()))}
        self.unlisted = sorted(set(disk) - set(assign))
        warn_unlisted(self.name, self.unlisted, str(self.root))

    def _scan(self, extensions: tuple[str, ...]) -> list[str]:
        """Relative '/'-paths of the videos under root/<class>/ (hidden entries skipped)."""
        found, ignored = [], 0
        for top in sorted(os.scandir(self.root), key=lambda e: e.name):
            if top.name.startswith(".") or not top.is_dir():
                continue
            for folder, dirs, files in os.walk(top.path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                rel = Path(folder).relative_to(self.root).as_posix()
                for f in sorted(files):
                    if is_video(f, extensions):
                        found.append(f"{rel}/{f}")
                    elif not f.startswith("."):
                        ignored += 1
        if ignored:
            log.info("%s: ignoring %d file(s) under %s whose ending is not one of %s", self.name,
                     ignored, self.root, ", ".join(extensions))
        return found

    @staticmethod
    def _by_class(ids) -> dict[str, list[str]]:
        by_class: dict[str, list[str]] = {}
        for vid in ids:
            by_class.setdefault(vid.split("/", 1)[0], []).append(vid)
        return by_class

    def _read_csv(self, disk: set[str], problems: Problems) -> dict[str, str]:
        assign: dict[str, str] = {}
        first: dict[str, int] = {}
        for index, (number, text) in enumerate(read_lines(self.split_csv, problems,
                                                          dataset=self.name)):
            where = at(self.split_csv, number)
            try:
                fields = [f.strip() for f in next(csv.reader([text]))]
            except (csv.Error, StopIteration) as err:
                problems.add("malformed line", where, f"not a csv row ({err}); {FIX}")
                continue
            if index == 0 and [f.lower() for f in fields] == ["path", "split"]:
                continue
            if len(fields) != 2 or fields[1].lower() not in ROLES:
                problems.add("malformed line", where, f"{text.strip()!r} is not "
                             f"'<path>,<train|test>'; {FIX}")
                continue
            vid, why = check_relpath(fields[0])
            if vid is None:
                problems.add(why[0], where, f"{why[1]}; {FIX}")
                continue
            if vid in first:
                problems.add("duplicate", where, f"{vid!r} is already on line {first[vid]}; "
                             f"remove one of the rows")
                continue
            first[vid] = number
            if vid not in disk:
                problems.add("missing video", where, f"{vid!r} is not a video under {self.root} "
                             f"(looked for <class>/<video>); {FIX}")
                continue
            assign[vid] = ROLES[fields[1].lower()]
        return assign
