"""UCF101 as its authors distribute it: 101 class folders of .avi clips and the official
recognition split lists; three splits, mean accuracy (Soomro et al., 2012).
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset
from pipeline.datasets.check import (Problems, at, check_name, check_relpath,
                                     find_path, parse_int, read_lines, require_dir, scan_classes,
                                     warn_unlisted)

log = logging.getLogger(__name__)

SPLIT_FOLDER = "ucfTrainTestlist"
SPLIT_NUMBERS = (1, 2, 3)
FIX = "restore the list from UCF101TrainTestSplits-RecognitionTask.zip, or remove the line"


def _lookup(name: str, names: dict[str, str], folded: dict[str, list[str]]) -> str | None:
    """The spelling of `name` in `names` (exact first, then the unique case-insensitive match)."""
    if name in names:
        return names[name]
    matches = folded.get(name.casefold(), [])
    return matches[0] if len(matches) == 1 else None


def _fold(names) -> dict[str, list[str]]:
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(name.casefold(), []).append(name)
    return folded


@register_dataset("ucf101")
class UCF101(Dataset):
    """UCF101.

    Layout (LAYOUTS.md has the full description):
        root/<Class>/v_<Class>_gXX_cYY.avi        (UCF101.rar, unpacked: UCF-101/)
        root/ucfTrainTestlist/classInd.txt        `<id> <Class>`, ids 1-based
        root/ucfTrainTestlist/trainlist0k.txt     `<Class>/<video>.avi <id>`, k = 1, 2, 3
        root/ucfTrainTestlist/testlist0k.txt      `<Class>/<video>.avi` (no label)
    The lists have CRLF line endings. Names are matched case-insensitively when the exact
    spelling is absent on disk (the lists say `HandstandPushups/v_HandStandPushups_...`; copies
    of the dataset differ in that case). The split folder may also be beside root, or splits=.

    Options: strict (False: skip bad entries with a count), splits (the folder with
    classInd.txt and the train/test lists)."""

    name = "ucf101"
    metric = "accuracy"
    layout = (f"<Class>/<video>.avi folders and {SPLIT_FOLDER}/ with classInd.txt, "
              "trainlist0k.txt, testlist0k.txt (k = 1, 2, 3)")

    def __init__(self, root: Path, *, strict: bool = True, splits: str | Path | None = None):
        self.root = Path(root)
        self.strict = strict
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        self.split_dir = find_path(
            self.name, self.root, splits, [self.root / SPLIT_FOLDER,
                                           self.root.parent / SPLIT_FOLDER],
            what=f"split folder ({SPLIT_FOLDER} from UCF101TrainTestSplits-RecognitionTask.zip)",
            option="splits", is_dir=True)
        problems = Problems(self.name, self.root, strict=strict)
        self._classes = self._read_classes(problems)
        self._class_index = {c: i for i, c in enumerate(self._classes)}
        self._class_names = ({c: c for c in self._classes}, _fold(self._classes))
        disk = scan_classes(self.root)
        self._disk = {d: ({v: v for v in videos}, _fold(videos)) for d, videos in disk.items()}
        self._dirs = ({d: d for d in disk}, _fold(disk))
        self._paths: dict[str, tuple[Path, int]] = {}      # item id -> (path on disk, label)
        self._splits: dict[str, dict[str, str]] = {}
        for k in SPLIT_NUMBERS:
            lists = {TRAIN: self.split_dir / f"trainlist{k:02d}.txt",
                     TEST: self.split_dir / f"testlist{k:02d}.txt"}
            missing = [p for p in lists.values() if not p.is_file()]
            for path in missing:
                problems.add("missing split file", at(path), f"split list missing, so split sp{k} "
                             f"cannot be used; restore it from "
                             f"UCF101TrainTestSplits-RecognitionTask.zip")
            if missing:
                continue
            assign: dict[str, str] = {}
            first: dict[str, str] = {}
            for role, path in lists.items():
                self._parse(path, role, assign, first, problems)
            self._splits[f"sp{k}"] = assign
        self.skipped = problems.finish()
        self._items = [Item(vid, path, (label,))
                       for vid, (path, label) in sorted(self._paths.items())]
        problems.require(len(self._items), "usable videos")
        used = {path for path, _ in self._paths.values()}
        self.unlisted = [f"{d}/{v}" for d, videos in disk.items() for v in videos
                         if self.root / d / v not in used]
        warn_unlisted(self.name, self.unlisted, str(self.root))

    def _read_classes(self, problems: Problems) -> tuple[str, ...]:
        path = find_path(self.name, self.root, None, [self.split_dir / "classInd.txt"],
                         what="class index classInd.txt", option="splits", is_dir=False)
        by_id: dict[int, str] = {}
        names: dict[str, int] = {}
        for number, text in read_lines(path, problems, dataset=self.name):
            fields = text.split()
            where = at(path, number)
            cid = parse_int(fields[0]) if len(fields) == 2 else None
            if cid is None or cid < 1:
                problems.add("malformed line", where, f"{text.strip()!r} is not '<id> <Class>' "
                             f"with a 1-based id; {FIX}")
                continue
            cls = fields[1]
            bad = check_name(cls) or (("duplicate", f"class id {cid} or name {cls!r} is already "
                                                    f"defined") if cid in by_id or cls in names
                                      else None)
            if bad:
                problems.add(bad[0], where, f"{bad[1]}; {FIX}")
                continue
            by_id[cid], names[cls] = cls, cid
        if not by_id:
            raise DatasetError(f"{self.name}: {path} defines no class; restore it from "
                               f"UCF101TrainTestSplits-RecognitionTask.zip")
        gaps = sorted(set(range(1, max(by_id) + 1)) - set(by_id))
        if gaps:
            problems.add("malformed line", at(path), f"class ids {gaps[:10]} are missing (ids "
                         f"must run 1..{max(by_id)}); labels follow the ids that are present")
        self._class_ids = {cls: cid for cid, cls in by_id.items()}
        return tuple(by_id[cid] for cid in sorted(by_id))

    def _parse(self, path: Path, role: str, assign: dict[str, str], first: dict[str, str],
               problems: Problems) -> None:
        """Add the entries of one train or test list to `assign` (item id -> role)."""
        for number, text in read_lines(path, problems, dataset=self.name):
            where = at(path, number)
            fields = text.split()
            expected = (2,) if role == TRAIN else (1, 2)
            if len(fields) not in expected:
                form = "'<Class>/<video>.avi <id>'" if role == TRAIN else "'<Class>/<video>.avi'"
                problems.add("malformed line", where, f"{len(fields)} fields in "
                             f"{text.strip()!r}; expected {form}; {FIX}")
                continue
            vid, why = check_relpath(fields[0])
            if vid is None:
                problems.add(why[0], where, f"{why[1]}; {FIX}")
                continue
            parts = vid.split("/")
            if len(parts) != 2:
                problems.add("malformed line", where, f"{vid!r} is not '<Class>/<video>'; {FIX}")
                continue
            cls = _lookup(parts[0], *self._class_names)
            if cls is None:
                problems.add("unknown class", where, f"class {parts[0]!r} is not in "
                             f"{self.split_dir / 'classInd.txt'}; add it there or remove the line")
                continue
            if len(fields) == 2:
                if parse_int(fields[1]) != self._class_ids[cls]:
                    problems.add("malformed line", where, f"label {fields[1]!r} does not match "
                                 f"class {cls!r} (id {self._class_ids[cls]} in classInd.txt); "
                                 f"{FIX}")
                    continue
            vid = f"{cls}/{parts[1]}"         # the classInd spelling of the class: stable ids
            if vid in first:
                problems.add("duplicate", where, f"{vid!r} is already listed at {first[vid]}; "
                             f"remove one of the lines")
                continue
            first[vid] = where
            folder = _lookup(parts[0], *self._dirs)
            video = _lookup(parts[1], *self._disk[folder]) if folder is not None else None
            if video is None:
                problems.add("missing video", where, f"video {vid!r} is not under {self.root} "
                             f"(not even with other upper/lower case); {FIX}")
                continue
            if (folder, video) != tuple(parts):
                log.debug("%s: %s found on disk as %s/%s", self.name, where, folder, video)
            self._paths[vid] = (self.root / folder / video, self._class_index[cls])
            assign[vid] = role
