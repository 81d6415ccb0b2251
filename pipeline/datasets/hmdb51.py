"""HMDB51 as its authors distribute it: 51 action folders of .avi clips and the official 70/30
split folder; three splits, mean accuracy (Kuehne et al., ICCV 2011).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset
from pipeline.datasets.check import (Problems, at, check_name, find_path, read_lines,
                                     require_dir, scan_classes, warn_unlisted)

log = logging.getLogger(__name__)

SPLIT_FOLDER = "testTrainMulti_7030_splits"
SPLIT_FILE = re.compile(r"^(?P<action>.+)_test_split(?P<k>[0-9]+)\.txt$")
SPLIT_NUMBERS = (1, 2, 3)
ROLES = {"0": None, "1": TRAIN, "2": TEST}       # None: listed but unused in that split
FIX = "fix or remove the line, or restore the file from test_train_splits.rar"


@register_dataset("hmdb51")
class HMDB51(Dataset):
    """HMDB51.

    Layout (LAYOUTS.md has the full description):
        root/<action>/<video>.avi                                       (hmdb51_org.rar, unpacked)
        root/testTrainMulti_7030_splits/<action>_test_split<k>.txt      (test_train_splits.rar)
    A split file line is `<video>.avi <id>` with 1 = train, 2 = test, 0 = unused (a trailing
    space after the id is normal). The split folder may also be root/splits, a sibling of root,
    or splits=.

    Options: strict (False: skip bad entries with a count), splits (the split folder),
    class_list (a file of action names, one per line, that fixes the class order, like the
    class_list.txt of the TSN repository; default <splits>/class_list.txt if present, else the
    sorted action names)."""

    name = "hmdb51"
    metric = "accuracy"
    layout = ("<action>/<video>.avi folders and the split folder "
              f"{SPLIT_FOLDER}/<action>_test_split<k>.txt (k = 1, 2, 3)")

    def __init__(self, root: Path, *, strict: bool = True, splits: str | Path | None = None,
                 class_list: str | Path | None = None):
        self.root = Path(root)
        self.strict = strict
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        self.split_dir = find_path(
            self.name, self.root, splits, [self.root / SPLIT_FOLDER, self.root / "splits",
                                           self.root.parent / SPLIT_FOLDER],
            what=f"split folder ({SPLIT_FOLDER} from test_train_splits.rar)", option="splits",
            is_dir=True)
        problems = Problems(self.name, self.root, strict=strict)
        files = self._split_files(problems)
        self._classes = self._class_order(files, class_list, problems)
        disk = scan_classes(self.root)
        label = {c: i for i, c in enumerate(self._classes)}
        self._splits: dict[str, dict[str, str]] = {f"sp{k}": {} for k in SPLIT_NUMBERS}
        listed: set[str] = set()
        for action in self._classes:
            on_disk = set(disk.get(action, ()))
            for k in SPLIT_NUMBERS:
                path = files.get((action, k))
                if path is None:
                    problems.add("missing split file",
                                 at(self.split_dir / f"{action}_test_split{k}.txt"),
                                 f"split file missing for action {action!r} (a class of "
                                 f"{self.class_source}), split {k}; restore it from "
                                 f"test_train_splits.rar")
                    continue
                self._parse(path, action, k, on_disk, listed, problems)
        self.skipped = problems.finish()
        self._items = [Item(vid, self.root / vid, (label[vid.split("/", 1)[0]],))
                       for vid in sorted(listed, key=lambda v: (label[v.split("/", 1)[0]], v))]
        problems.require(len(self._items), "usable videos")
        self.unlisted = [f"{d}/{v}" for d, videos in disk.items() for v in videos
                         if f"{d}/{v}" not in listed]
        warn_unlisted(self.name, self.unlisted, str(self.root))

    def _split_files(self, problems: Problems) -> dict[tuple[str, int], Path]:
        files, ignored = {}, []
        for path in sorted(self.split_dir.iterdir()):
            m = SPLIT_FILE.match(path.name)
            if m is None or not path.is_file():
                if path.name != "class_list.txt":
                    ignored.append(path.name)
                continue
            k = int(m["k"])
            bad = check_name(m["action"])
            if bad:
                problems.add(bad[0], at(path), f"the action in the file name: {bad[1]}; rename "
                             f"the file")
                continue
            if k not in SPLIT_NUMBERS:
                problems.add("unexpected split file", at(path),
                             f"split number {k} is not one of {SPLIT_NUMBERS}; remove or rename "
                             f"the file")
                continue
            files[m["action"], k] = path
        if ignored:
            log.info("%s: ignoring %d file(s) in %s that are not <action>_test_split<k>.txt: %s",
                     self.name, len(ignored), self.split_dir, ", ".join(ignored[:5]))
        if not files:
            raise DatasetError(f"{self.name}: {self.split_dir} holds no <action>_test_split<k>.txt "
                               f"files; pass splits= the folder from test_train_splits.rar")
        return files

    def _class_order(self, files: dict[tuple[str, int], Path], class_list: str | Path | None,
                     problems: Problems) -> tuple[str, ...]:
        """Actions in class-index order; split files of actions not in a class list are problems."""
        by_file = sorted({action for action, _ in files})
        self.class_source = f"the split file names in {self.split_dir}"
        if class_list is None and not (self.split_dir / "class_list.txt").is_file():
            return tuple(by_file)
        path = find_path(self.name, self.root, class_list, [self.split_dir / "class_list.txt"],
                         what="class list file", option="class_list", is_dir=False)
        self.class_source = f"the class list {path}"
        classes: list[str] = []
        for number, text in read_lines(path, problems, dataset=self.name):
            action = text.strip()
            bad = check_name(action) or (
                ("duplicate", f"action {action!r} is listed twice") if action in classes else None)
            if bad:
                problems.add(bad[0], at(path, number), f"{bad[1]}; fix the class list")
                continue
            classes.append(action)
        for (action, _), split_file in sorted(files.items()):
            if action not in classes:
                problems.add("unknown class", at(split_file),
                             f"action {action!r} is not in the class list {path}; add it there "
                             f"or remove the split file")
        if not classes:
            raise DatasetError(f"{self.name}: class list {path} names no action; fix it or pass "
                               f"class_list= another file")
        return tuple(classes)

    def _parse(self, path: Path, action: str, k: int, on_disk: set[str], listed: set[str],
               problems: Problems) -> None:
        seen: dict[str, int] = {}
        split = self._splits[f"sp{k}"]
        for number, text in read_lines(path, problems, dataset=self.name):
            where = at(path, number)
            fields = text.split()
            if len(fields) != 2:
                problems.add("malformed line", where, f"{len(fields)} fields in {text.strip()!r}; "
                             f"expected '<video>.avi <id>' with id 0, 1 or 2; {FIX}")
                continue
            video, code = fields
            if code not in ROLES:
                problems.add("malformed line", where, f"unknown id {code!r} for {video!r}; ids "
                             f"are 1 (train), 2 (test), 0 (unused); {FIX}")
                continue
            bad = check_name(video)
            if bad:
                problems.add(bad[0], where, f"{bad[1]}; {FIX}")
                continue
            if video in seen:
                problems.add("duplicate", where, f"{video!r} is listed again (first at line "
                             f"{seen[video]}); remove one of the lines")
                continue
            seen[video] = number
            if video not in on_disk:
                problems.add("missing video", where, f"video {video!r} is not in "
                             f"{self.root / action}; restore it from hmdb51_org.rar, or remove "
                             f"the line")
                continue
            vid = f"{action}/{video}"
            listed.add(vid)
            if ROLES[code] is not None:
                split[vid] = ROLES[code]
