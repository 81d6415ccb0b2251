"""YUP++ dynamic scenes as its authors distribute it: 20 scene classes filmed by a static and a
moving camera, 10/90 train/test split; accuracy on static, dynamic and mixed (Feichtenhofer et
al., CVPR 2017).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset
from pipeline.datasets.check import (Problems, at, check_relpath, find_path,
                                     read_lines, require_dir, scan_classes, warn_unlisted)

log = logging.getLogger(__name__)

CAMERAS = {"static": "camera_stationary", "moving": "camera_moving"}
TAGS = {"static_train": ("static", TRAIN), "static_test": ("static", TEST),
        "moving_train": ("moving", TRAIN), "moving_test": ("moving", TEST)}
EVALUATIONS = {"static": ("static",), "dynamic": ("moving",), "mixed": ("static", "moving")}
SPLIT_FILE = "10_90_randsplit_1.txt"
FIX = "fix the name or restore the video from the YUP++ archive, or remove the line"


@register_dataset("yup", "yup++")
class YUPPlusPlus(Dataset):
    """YUP++.

    Layout (LAYOUTS.md has the full description):
        root/camera_stationary/<Class>/<Class>_static_cam_<n>.mp4
        root/camera_moving/<Class>/<Class>_moving_cam_<n>.mp4
        root/10_90_randsplit_1.txt     `<name> <static_train|static_test|moving_train|moving_test>`
    <name> is a video file name (with or without its extension) or a path relative to root. The
    split file may also be in root/splits/, beside root, or given by split_file=.

    Options: strict (False: skip bad entries with a count), split_file (default
    10_90_randsplit_1.txt under root). Splits: "static" (static camera), "dynamic" (moving camera),
    "mixed" (both: train on both cameras' train videos, test on both cameras' test videos)."""

    name = "yup"
    metric = "accuracy"
    layout = ("camera_stationary/<Class>/*.mp4, camera_moving/<Class>/*.mp4 and the split file "
              f"{SPLIT_FILE}")

    def __init__(self, root: Path, *, strict: bool = True, split_file: str | Path | None = None):
        self.root = Path(root)
        self.strict = strict
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        present = {cam: self.root / folder for cam, folder in CAMERAS.items()
                   if (self.root / folder).is_dir()}
        if not present:
            raise DatasetError(f"{self.name}: neither {self.root / CAMERAS['static']} nor "
                               f"{self.root / CAMERAS['moving']} exists; pass root= the folder "
                               f"that holds {self.layout}")
        for cam in set(CAMERAS) - set(present):
            log.warning("%s: %s does not exist; every %s_* line of the split file will be a "
                        "missing video", self.name, self.root / CAMERAS[cam], cam)
        self.split_file = find_path(
            self.name, self.root, split_file,
            [self.root / SPLIT_FILE, self.root / "splits" / SPLIT_FILE,
             self.root.parent / SPLIT_FILE],
            what=f"split file {SPLIT_FILE}", option="split_file", is_dir=False)
        disk = {cam: scan_classes(folder) for cam, folder in present.items()}
        self._classes = tuple(sorted({c for tree in disk.values() for c, v in tree.items() if v}))
        label = {c: i for i, c in enumerate(self._classes)}
        index = {cam: self._index(tree) for cam, tree in disk.items()}
        problems = Problems(self.name, self.root, strict=strict)
        roles: dict[str, dict[str, str]] = {cam: {} for cam in CAMERAS}
        paths: dict[str, int] = {}
        first: dict[str, str] = {}
        for number, text in read_lines(self.split_file, problems, dataset=self.name):
            where = at(self.split_file, number)
            fields = text.split()
            if len(fields) != 2 or fields[1].lower() not in TAGS:
                problems.add("malformed line", where, f"{text.strip()!r} is not '<name> <tag>' "
                             f"with a tag among {sorted(TAGS)}; fix or remove the line")
                continue
            cam, role = TAGS[fields[1].lower()]
            found, kind, why = self._resolve(fields[0], cam, index)
            if found is None:
                problems.add(kind, where, why)
                continue
            vid = f"{CAMERAS[cam]}/{found[0]}/{found[1]}"
            if vid in first:
                problems.add("duplicate", where, f"{vid!r} is already listed at {first[vid]}; "
                             f"remove one of the lines")
                continue
            first[vid] = where
            roles[cam][vid] = role
            paths[vid] = label[found[0]]
        self.skipped = problems.finish()
        self._items = [Item(vid, self.root / vid, (lab,)) for vid, lab in sorted(paths.items())]
        problems.require(len(self._items), "usable videos")
        self._splits = {name: {vid: r for cam in cams for vid, r in roles[cam].items()}
                        for name, cams in EVALUATIONS.items()}
        for cam, tree in disk.items():
            if set(self._classes) - set(tree):
                log.warning("%s: %s has no folder for class(es) %s", self.name,
                            self.root / CAMERAS[cam], sorted(set(self._classes) - set(tree)))
        self.unlisted = [f"{CAMERAS[cam]}/{c}/{v}" for cam, tree in disk.items()
                         for c, videos in tree.items() for v in videos
                         if f"{CAMERAS[cam]}/{c}/{v}" not in paths]
        warn_unlisted(self.name, self.unlisted, str(self.root))

    @staticmethod
    def _index(tree: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
        """file name and file stem -> [(class, file name)] for one camera folder."""
        index: dict[str, list[tuple[str, str]]] = {}
        for cls, videos in tree.items():
            for video in videos:
                index.setdefault(video, []).append((cls, video))
                stem = os.path.splitext(video)[0]
                if stem != video:
                    index.setdefault(stem, []).append((cls, video))
        return index

    def _resolve(self, name: str, cam: str, index) -> tuple[tuple[str, str] | None, str, str]:
        """((class, file name), "", "") for the entry `name` tagged `cam`, or (None, kind, why)."""
        rel, why = check_relpath(name)
        if rel is None:
            return None, why[0], f"{why[1]}; {FIX}"
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] in CAMERAS.values():
            if parts[0] != CAMERAS[cam]:
                return None, "wrong camera", (f"{name!r} is tagged {cam}_* but lies in "
                                              f"{parts[0]}; fix the tag or the path")
            parts = parts[1:]
        if len(parts) == 2:
            cls, video = parts
            matches = [m for m in index.get(cam, {}).get(video, []) if m[0] == cls]
        elif len(parts) == 1:
            matches = index.get(cam, {}).get(parts[0], [])
        else:
            return None, "malformed line", (f"{name!r} is neither a file name nor "
                                            f"<camera folder>/<Class>/<file>; {FIX}")
        if len(matches) > 1:
            return None, "ambiguous name", (f"{name!r} matches {len(matches)} videos in "
                                            f"{CAMERAS[cam]} ({matches[:3]}); name the video by "
                                            f"its path")
        if matches:
            return matches[0], "", ""
        other = "moving" if cam == "static" else "static"
        if index.get(other, {}).get(parts[-1]):
            return None, "wrong camera", (f"{name!r} is tagged {cam}_* but lies in "
                                          f"{CAMERAS[other]}; fix the tag")
        return None, "missing video", f"{name!r} is not in {self.root / CAMERAS[cam]}; {FIX}"
