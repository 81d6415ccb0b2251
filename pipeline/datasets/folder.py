"""Any folder-per-class video tree (root/<class>/<video>), with splits from a CSV (one or several
split columns; `root/split.csv` when present), leave-one-group-out by a file-name pattern, seeded
stratified k-fold, or a seeded stratified draw; accuracy per split and its mean.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import zlib
from pathlib import Path

import numpy as np

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset
from pipeline.datasets.check import (VIDEO_EXTENSIONS, Problems, at, check_relpath,
                                     find_path, is_video, read_lines, require_dir, warn_unlisted)

log = logging.getLogger(__name__)

ROLES = {"train": TRAIN, "test": TEST, "unused": None}
FIX = ("fix the row ('<class>/<video>,<train|test|unused>[,...]', path relative to root) "
       "or remove it")
DEFAULT_CSV = "split.csv"      # read from root when no split_csv is given


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


def group_of(vid: str, pattern: re.Pattern) -> str | None:
    """The group a video belongs to: the pattern's first capture group (or whole match) searched
    in its file name, e.g. group='P(\\d+)' gives '03' for 'Jump/P03_take2.mp4'."""
    match = pattern.search(vid.rsplit("/", 1)[-1])
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def kfold_splits(ids_by_class: dict[str, list[str]], *, folds: int, seed: int,
                 groups: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Seeded stratified k-fold (StratifiedGroupKFold with groups: a group never straddles
    train and test): splits "f1".."fk", each testing one fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    ids = sorted(v for vs in ids_by_class.values() for v in vs)
    labels = [v.split("/", 1)[0] for v in ids]
    if groups is None:
        folder = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        index = folder.split(ids, labels)
    else:
        folder = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        index = folder.split(ids, labels, [groups[v] for v in ids])
    splits = {}
    for k, (_, test) in enumerate(index, start=1):
        test_ids = {ids[i] for i in test}
        splits[f"f{k}"] = {v: TEST if v in test_ids else TRAIN for v in ids}
    return splits


@register_dataset("folder")
class FolderDataset(Dataset):
    """A folder-per-class tree. Videos may sit in sub-folders of a class folder; the class is the
    first folder. Options:
    - name: the dataset's identity in the cache (default: the root folder's name);
    - split_csv: a CSV of `path,split` rows (one split "sp1") or with a header
      `path,<split>,<split>,...` and one column per split, each cell train|test|unused; paths
      relative to root. Default: `root/split.csv` when it exists;
    - group: a regular expression whose first capture group, searched in each file name, names
      its group (a person, a scene): without folds, leave-one-group-out, one split per group;
    - folds: k >= 2 gives seeded stratified k-fold splits f1..fk (grouped when group is given);
    - test_fraction, seed: the seeded stratified draw used when nothing else defines a split
      (seed also seeds folds);
    - strict (False: skip bad CSV rows with a count), extensions (file endings that are videos).
    """

    name = "folder"
    metric = "accuracy"
    layout = "<class>/<video> folders, and optionally a CSV of path,split rows"

    def __init__(self, root: Path, *, strict: bool = True, split_csv: str | Path | None = None,
                 group: str | None = None, folds: int = 0, test_fraction: float = 0.3,
                 seed: int = 0, name: str | None = None,
                 extensions: tuple[str, ...] | list[str] = VIDEO_EXTENSIONS):
        self.root = Path(root)
        self.strict = strict
        self.dataset_name = name or self.root.resolve().name
        if not 0 < test_fraction < 1:
            raise DatasetError(f"{self.name}: test_fraction={test_fraction} must be in (0, 1)")
        if not isinstance(folds, int) or folds < 0 or folds == 1:
            raise DatasetError(f"{self.name}: folds={folds!r} must be 0 (no folds) or an integer >= 2")
        if isinstance(extensions, str):
            extensions = (extensions,)
        extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        disk = self._scan(extensions)
        if not disk:
            raise DatasetError(f"{self.name}: no video ({', '.join(extensions)}) in any "
                               f"<class>/ folder of {self.root}; pass root= the folder that holds "
                               f"{self.layout}, or extensions=")
        if split_csv is None and (self.root / DEFAULT_CSV).is_file() and not (folds or group):
            split_csv = DEFAULT_CSV
            log.info("%s: using the split file %s", self.name, self.root / DEFAULT_CSV)
        problems = Problems(self.name, self.root, strict=strict)
        self.split_csv = None
        if split_csv is not None:
            if folds or group:
                raise DatasetError(f"{self.name}: split_csv= and folds=/group= both define "
                                   f"splits; give one of them")
            self.split_csv = find_path(self.name, self.root, split_csv, [], what="split CSV",
                                       option="split_csv", is_dir=False)
            splits = self._read_csv(set(disk), problems)
        elif folds or group:
            splits = self._group_splits(disk, group, folds, seed)
        else:
            splits = {"sp1": stratified_split(self._by_class(disk), test_fraction=test_fraction,
                                              seed=seed)}
            log.info("%s: no split file (%s) and no folds/group: a seeded stratified draw with "
                     "test_fraction=%s, seed=%d", self.name, self.root / DEFAULT_CSV,
                     test_fraction, seed)
            for cls, ids in self._by_class(disk).items():
                if len(ids) < 2:
                    log.warning("%s: class %r has %d video(s), so it has no test video",
                                self.name, cls, len(ids))
        self.skipped = problems.finish()
        listed = sorted({vid for assign in splits.values() for vid in assign})
        problems.require(len(listed), "usable videos")
        self._classes = tuple(sorted({vid.split("/", 1)[0] for vid in listed}))
        label = {c: i for i, c in enumerate(self._classes)}
        self._items = [Item(vid, self.root / vid, (label[vid.split("/", 1)[0]],)) for vid in listed]
        self._splits = {name: dict(sorted(assign.items())) for name, assign in splits.items()}
        self.unlisted = sorted(set(disk) - set(listed))
        warn_unlisted(self.name, self.unlisted, str(self.root))

    @property
    def identity(self) -> str:
        return f"folder-{self.dataset_name}"

    def _group_splits(self, disk: list[str], group: str | None, folds: int,
                      seed: int) -> dict[str, dict[str, str]]:
        groups = None
        if group is not None:
            try:
                pattern = re.compile(group)
            except re.error as err:
                raise DatasetError(f"{self.name}: group={group!r} is not a regular expression "
                                   f"({err})") from None
            groups = {vid: group_of(vid, pattern) for vid in disk}
            unmatched = [vid for vid, g in groups.items() if g is None]
            if unmatched:
                raise DatasetError(f"{self.name}: group={group!r} matches no part of the file "
                                   f"name of {len(unmatched)} video(s), e.g. {unmatched[0]!r}; "
                                   f"fix the pattern or the names")
        if folds:
            return kfold_splits(self._by_class(disk), folds=folds, seed=seed, groups=groups)
        values = sorted(set(groups.values()))
        if len(values) < 2:
            raise DatasetError(f"{self.name}: group={group!r} finds {len(values)} group(s); "
                               f"leave-one-group-out needs at least 2")
        splits = {g: {vid: TEST if groups[vid] == g else TRAIN for vid in disk} for g in values}
        for g, assign in splits.items():
            train_classes = {v.split("/", 1)[0] for v, r in assign.items() if r == TRAIN}
            lacking = sorted({v.split("/", 1)[0] for v in disk} - train_classes)
            if lacking:
                log.warning("%s: leaving out group %s leaves class(es) %s without training videos",
                            self.name, g, lacking)
        return splits
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

    def _read_csv(self, disk: set[str], problems: Problems) -> dict[str, dict[str, str]]:
        """Split name -> {id: role} from the CSV; errors name the file and line."""
        names = ["sp1"]
        splits: dict[str, dict[str, str]] = {}
        first: dict[str, int] = {}
        for index, (number, text) in enumerate(read_lines(self.split_csv, problems,
                                                          dataset=self.name, restore=(
                "write one line per video (see LAYOUTS.md, folder), or delete the file to use "
                "the folds of dataset_options={'folds': k}"))):
            where = at(self.split_csv, number)
            try:
                fields = [f.strip() for f in next(csv.reader([text]))]
            except (csv.Error, StopIteration) as err:
                problems.add("malformed line", where, f"not a csv row ({err}); {FIX}")
                continue
            if index == 0 and fields and fields[0].lower() == "path":
                names = ["sp1"] if [f.lower() for f in fields] == ["path", "split"] else fields[1:]
                if not names or len(set(names)) != len(names) or not all(names):
                    raise DatasetError(f"{where}: the header must be 'path,<split>[,<split>...]' "
                                       f"with distinct split names")
                continue
            if index == 0 and len(fields) > 2:
                names = [f"sp{k}" for k in range(1, len(fields))]
            roles = [f.lower() for f in fields[1:]]
            if len(fields) != len(names) + 1 or not all(r in ROLES for r in roles):
                problems.add("malformed line", where, f"{text.strip()!r} is not "
                             f"'<path>,{','.join('<train|test|unused>' for _ in names)}'"
                             f" ('<path>,<train|test>' for one split); {FIX}")
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
            for name, role in zip(names, roles):
                if ROLES[role] is not None:
                    splits.setdefault(name, {})[vid] = ROLES[role]
        for name in names:
            assign = splits.get(name, {})
            classes = {v.split("/", 1)[0] for v in first if v in disk}
            for role in (TRAIN, TEST):
                have = {v.split("/", 1)[0] for v, r in assign.items() if r == role}
                lacking = sorted(classes - have)
                if lacking and assign:
                    lines = sorted(first[v] for v in assign if v.split("/", 1)[0] in lacking)
                    where = at(self.split_csv, lines[0]) if lines else str(self.split_csv)
                    problems.add("class without " + role, where,
                                 f"split {name!r} gives class(es) {lacking} no {role} video; "
                                 f"mark some of their rows {role}")
        return {name: splits.get(name, {}) for name in names}
