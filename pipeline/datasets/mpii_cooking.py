"""MPII Cooking Activities as its authors distribute it: long videos with annotated activity
segments; items are segments; seven subject splits; mean average precision (Rohrbach et al.,
CVPR 2012).
"""
from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, Dataset, DatasetError, Item, register_dataset
from pipeline.datasets.check import (VIDEO_EXTENSIONS, Problems, at, check_name,
                                     find_path, list_videos, parse_int, read_lines, require_dir,
                                     warn_unlisted)

log = logging.getLogger(__name__)

ANNOTATIONS = "detectionGroundtruth-1-0.csv"
TEST_SUBJECTS = (8, 10, 16, 17, 18, 19, 20)    # split "sNN" tests subject NN, trains on the rest
BACKGROUND = "background activity"
FIELDS = "subject, file name, start frame, end frame, category id, category name"
FIX = f"fix the row (fields: {FIELDS}) or restore {ANNOTATIONS} from the official archive"


@register_dataset("mpii_cooking")
class MPIICooking(Dataset):
    """MPII Cooking Activities.

    Layout (LAYOUTS.md has the full description):
        root/videos/<file name>.avi          (videos.zip; any video extension is accepted)
        root/detectionGroundtruth-1-0.csv    subject, file name, start frame (1-based),
                                             end frame (inclusive), category id, category name
    A segment [start, end] (1-based, inclusive) becomes Item.frames = (start - 1, end): 0-based,
    half-open, so stage 1 decodes only that range. Rows with the same file and frame range but other
    categories merge into one multi-label item.

    Options: strict (False: skip bad rows with a count), annotations
    (the ground-truth csv), videos (the folder of videos; default root/videos, else root),
    background (keep the "Background activity" category: True, as in the ground truth)."""

    name = "mpii_cooking"
    metric = "map"
    layout = f"videos/<file name>.avi and {ANNOTATIONS}"

    def __init__(self, root: Path, *, strict: bool = True, annotations: str | Path | None = None,
                 videos: str | Path | None = None, background: bool = True):
        self.root = Path(root)
        self.strict = strict
        require_dir(self.name, self.root, "root", f"pass root= the folder that holds {self.layout}")
        self.annotations = find_path(
            self.name, self.root, annotations,
            [self.root / ANNOTATIONS, self.root / "annotations" / ANNOTATIONS,
             self.root.parent / ANNOTATIONS],
            what=f"annotation file {ANNOTATIONS}", option="annotations", is_dir=False)
        self.video_dir = find_path(self.name, self.root, videos, [self.root / "videos", self.root],
                                   what="video folder", option="videos", is_dir=True)
        problems = Problems(self.name, self.root, strict=strict)
        segments, names = self._read(problems, background)
        self._classes = tuple(names[cid] for cid in sorted(names))
        label = {cid: i for i, cid in enumerate(sorted(names))}
        on_disk = list_videos(self.video_dir)
        by_stem: dict[str, list[str]] = {}
        for video in on_disk:
            by_stem.setdefault(os.path.splitext(video)[0], []).append(video)
        stems: dict[str, list[tuple]] = {}
        for key in segments:
            stems.setdefault(key[0], []).append(key)
        items, subjects, used = [], {}, set()
        for stem in sorted(stems):
            keys = sorted(stems[stem])
            files = sorted(by_stem.get(stem, []),
                           key=lambda v: VIDEO_EXTENSIONS.index(os.path.splitext(v)[1].lower()))
            if not files:
                first = min(segments[k]["line"] for k in keys)
                problems.add("missing video", at(self.annotations, first),
                             f"video {stem!r} (named by {len(keys)} segment(s), first on this "
                             f"line) is not in {self.video_dir}; restore it from videos.zip or "
                             f"remove its rows")
                continue
            if len(files) > 1:
                log.warning("%s: %s holds %s; using %s", self.name, self.video_dir, files, files[0])
            used.add(files[0])
            for key in keys:
                seg = segments[key]
                vid = f"{stem}/{key[1]}-{key[2]}"
                items.append(Item(vid, self.video_dir / files[0],
                                  tuple(sorted(label[c] for c in seg["labels"])), (key[1], key[2])))
                subjects[vid] = seg["subject"]
        self.skipped = problems.finish()
        problems.require(len(items), "usable segments")
        self._items = items
        self._subjects = subjects
        self._splits = {f"s{s:02d}": {vid: TEST if subj == s else TRAIN
                                      for vid, subj in subjects.items()} for s in TEST_SUBJECTS}
        for s in TEST_SUBJECTS:
            if s not in subjects.values():
                log.warning("%s: no segment of subject %d, so split s%02d has no test item",
                            self.name, s, s)
        self.unlisted = [v for v in on_disk if v not in used]
        warn_unlisted(self.name, self.unlisted, str(self.video_dir))

    def _read(self, problems: Problems, background: bool):
        """Parse the csv: ({(stem, start0, end0): segment}, {category id: name})."""
        segments: dict[tuple[str, int, int], dict] = {}
        names: dict[int, str] = {}
        ids: dict[str, int] = {}
        dropped = 0
        for index, (number, text) in enumerate(read_lines(self.annotations, problems,
                                                          dataset=self.name)):
            where = at(self.annotations, number)
            try:
                fields = [f.strip() for f in next(csv.reader([text]))]
            except (csv.Error, StopIteration) as err:
                problems.add("malformed line", where, f"not a csv row ({err}); {FIX}")
                continue
            if len(fields) != 6:
                problems.add("malformed line", where, f"{len(fields)} fields, expected 6; {FIX}")
                continue
            subject_text, stem, start_text, end_text, cid_text, cname = fields
            start, end, cid = parse_int(start_text), parse_int(end_text), parse_int(cid_text)
            m = re.fullmatch(r"[sS]?0*([0-9]{1,6})", subject_text)
            if index == 0 and start is None and end is None and m is None:
                log.debug("%s: %s is a header line", self.name, where)
                continue
            if m is None or start is None or end is None or cid is None or not cname:
                problems.add("malformed line", where, f"{text.strip()!r} has a non-integer "
                             f"subject, frame or category id, or no category name; {FIX}")
                continue
            subject = int(m[1])
            stem = os.path.splitext(stem)[0] if stem.lower().endswith(VIDEO_EXTENSIONS) else stem
            bad = check_name(stem)
            if bad:
                problems.add(bad[0], where, f"file name {bad[1]}; {FIX}")
                continue
            prefix = re.match(r"[sS]0*([0-9]+)-", stem)
            if prefix and int(prefix[1]) != subject:
                problems.add("conflict", where, f"file {stem!r} belongs to subject "
                             f"{int(prefix[1])} but the row says subject {subject}; {FIX}")
                continue
            if not 1 <= start <= end:
                problems.add("malformed line", where, f"frames {start}..{end}: need "
                             f"1 <= start <= end (1-based, inclusive); {FIX}")
                continue
            if names.get(cid, cname) != cname or ids.get(cname, cid) != cid:
                problems.add("conflict", where, f"category {cid} {cname!r} disagrees with an "
                             f"earlier row ({cid} = {names.get(cid)!r}, {cname!r} = "
                             f"{ids.get(cname)}); {FIX}")
                continue
            if not background and cname.casefold() == BACKGROUND:
                dropped += 1
                continue
            names[cid], ids[cname] = cname, cid
            key = (stem, start - 1, end)
            seg = segments.setdefault(key, {"subject": subject, "labels": set(), "line": number})
            if seg["subject"] != subject:
                problems.add("conflict", where, f"segment {stem} {start}..{end} is given "
                             f"subject {seg['subject']} on line {seg['line']} and {subject} here; "
                             f"{FIX}")
            elif cid in seg["labels"]:
                problems.add("duplicate", where, f"segment {stem} {start}..{end} with category "
                             f"{cid} is already on line {seg['line']}; remove one of the rows")
            else:
                seg["labels"].add(cid)
        if dropped:
            log.info("%s: background=False: left out %d background segment(s)", self.name, dropped)
        if not names and not problems:
            raise DatasetError(f"{self.name}: {self.annotations} holds no segment; {FIX}")
        return segments, names

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def items(self) -> list[Item]:
        return list(self._items)

    def subject(self, item_id: str) -> int:
        """The subject (person) filmed in item `item_id`."""
        return self._subjects[item_id]

    def splits(self) -> dict[str, dict[str, str]]:
        return {name: dict(assign) for name, assign in self._splits.items()}
