"""Checking dataset layouts: the problem collector, list-file reader and disk scan that every
dataset parser shares, and `validate`, the report behind `make check-dataset` (opens no video).
"""
from __future__ import annotations

import collections
import errno
import inspect
import logging
import os
import re
import stat
from pathlib import Path

from pipeline.datasets.base import TEST, TRAIN, DatasetError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv")
SHOWN = 10          # problems quoted in an error or warning; the rest are counted
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Problems:
    """Problems found while parsing one dataset.

    strict=True: `finish` raises one DatasetError quoting up to SHOWN problems (file:line, what is
    wrong, what to do). strict=False: `finish` logs a warning with counts per kind and returns the
    reasons; the parser has already left the offending entries out.
    """

    def __init__(self, dataset: str, root: Path, *, strict: bool):
        self.dataset, self.root, self.strict = dataset, root, strict
        self.found: list[tuple[str, str]] = []   # (kind, "where: what is wrong; what to do")
        self._order: list[tuple[str, int]] = []  # (file, line) of each, to report in file order

    def add(self, kind: str, where: str, message: str) -> None:
        """Record a problem of `kind` at `where` ("file:line"); `message` says what to do."""
        self.found.append((kind, f"{where}: {message}"))
        m = re.fullmatch(r"(.*):([0-9]+)", where)
        self._order.append((m[1], int(m[2])) if m else (where, 0))

    def __len__(self) -> int:
        return len(self.found)

    def require(self, count: int, what: str) -> None:
        """DatasetError if nothing usable is left (quoting the first problem, if any)."""
        if count == 0:
            first = f"; first problem: {self.found[0][1]}" if self.found else ""
            raise DatasetError(f"{self.dataset}: no {what} under {self.root}{first}")

    def finish(self) -> list[str]:
        """Raise (strict) or warn (lenient) about everything found; return the reasons."""
        if not self.found:
            return []
        order = sorted(range(len(self.found)), key=self._order.__getitem__)
        self.found = [self.found[i] for i in order]
        self._order = [self._order[i] for i in order]
        reasons = [text for _, text in self.found]
        counts = collections.Counter(kind for kind, _ in self.found)
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
        quoted = "\n  ".join(reasons[:SHOWN])
        more = f"\n  ... and {len(reasons) - SHOWN} more" if len(reasons) > SHOWN else ""
        if self.strict:
            raise DatasetError(
                f"{self.dataset}: {len(reasons)} problem(s) in the dataset under {self.root} "
                f"({summary}). Fix them, or pass dataset_options={{'strict': False}} to skip the "
                f"affected entries and go on with a count:\n  {quoted}{more}")
        log.warning("%s: strict=False: skipping the entries behind %d problem(s) (%s):\n  %s%s",
                    self.dataset, len(reasons), summary, quoted, more)
        return reasons


def at(path: Path, line: int | None = None) -> str:
    """'path:line' (or 'path') for messages."""
    return f"{path}:{line}" if line is not None else str(path)


def read_lines(path: Path, problems: Problems, *, dataset: str,
               restore: str = "restore it from the official archive") -> list[tuple[int, str]]:
    """Non-blank lines of a list file as (1-based line number, text without line ending).

    Accepts LF and CRLF endings and a UTF-8 byte-order mark. A line that is not UTF-8 and an
    empty file are problems; a file that cannot be read at all raises DatasetError.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{dataset}: cannot read {path}: {err.strerror or err}; check that it "
                           f"is a readable file") from err
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines, undecodable = [], 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.add("not UTF-8", at(path, number),
                         f"byte {err.start} is not UTF-8 ({raw[:60]!r}); re-save the file as "
                         f"UTF-8 or {restore}")
            undecodable += 1
            continue
        if text.strip():
            lines.append((number, text))
    if not lines and not undecodable:
        problems.add("empty file", at(path), f"the file holds no entries; {restore}")
    return lines


def parse_int(text: str) -> int | None:
    """An ASCII decimal integer, or None (str.isdigit would accept '²', which int() rejects)."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,18}", text) else None


ESCAPES, MALFORMED = "path escapes root", "malformed line"     # problem kinds for names


def check_name(name: str) -> tuple[str, str] | None:
    """(problem kind, why) if `name` cannot be a bare file or folder name, else None."""
    if not name or name in (".", ".."):
        return MALFORMED, f"{name!r} is not a file name"
    if "/" in name or "\\" in name:
        if ".." in re.split(r"[/\\]", name):
            return ESCAPES, f"{name!r} escapes the dataset root ('..'); a bare name is expected"
        return MALFORMED, f"{name!r} holds a path separator; a bare file name is expected here"
    if _CONTROL.search(name):
        return MALFORMED, f"{name!r} holds a control character"
    return None


def check_relpath(text: str) -> tuple[str | None, tuple[str, str] | None]:
    """Normalise a relative path from a list ('\\' -> '/'): (path, None) or (None, (kind, why)).

    Rejects absolute paths and '..' (paths that would escape the dataset root), '.' and empty
    parts, and control characters.
    """
    path = text.replace("\\", "/")
    if _CONTROL.search(path):
        return None, (MALFORMED, f"{text!r} holds a control character")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return None, (ESCAPES, f"{text!r} is absolute; paths must be relative to the dataset root")
    parts = path.split("/")
    if ".." in parts:
        return None, (ESCAPES, f"{text!r} escapes the dataset root ('..'); paths must stay inside")
    if "" in parts or "." in parts:
        return None, (MALFORMED, f"{text!r} has an empty or '.' part")
    return path, None


def require_dir(dataset: str, path: Path, what: str, fix: str) -> Path:
    """`path` if it is a folder; DatasetError naming it and the fix otherwise."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{dataset}: {what} {path} {state}; {fix}")
    return path


def find_path(dataset: str, root: Path, value: str | os.PathLike | None,
              defaults: list[Path], *, what: str, option: str, is_dir: bool) -> Path:
    """Locate a split folder or list file.

    value given: absolute, else tried under `root`, then relative to the working directory.
    value None: the first of `defaults` that exists. Raises DatasetError listing what was tried.
    """
    ok = Path.is_dir if is_dir else Path.is_file
    if value is not None:
        given = Path(value).expanduser()
        tried = [given] if given.is_absolute() else [root / given, given]
        fix = f"pass {option}=<the {what}>"
    else:
        tried = list(defaults)
        fix = f"put it at {defaults[0]}, or pass {option}=<the {what}>"
    for path in tried:
        if ok(path):
            return path
    raise DatasetError(f"{dataset}: {what} not found (looked for {', '.join(map(str, tried))}); "
                       f"{fix}")


def is_video(name: str, extensions=VIDEO_EXTENSIONS) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def list_videos(folder: Path, extensions=VIDEO_EXTENSIONS) -> list[str]:
    """Names of the video files directly in `folder` (sorted; hidden files skipped)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(e.name for e in entries if is_video(e.name, extensions) and e.is_file())


def scan_classes(root: Path, extensions=VIDEO_EXTENSIONS) -> dict[str, list[str]]:
    """{folder name: sorted video names} for each non-hidden folder directly under `root`.

    Lists names only: no video is opened.
    """
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.name.startswith(".") and entry.is_dir():
            found[entry.name] = list_videos(Path(entry.path), extensions)
    return found


def warn_unlisted(dataset: str, unlisted: list[str], where: str) -> None:
    """Warn that videos on disk are named by no split (they are left out, not an error)."""
    if unlisted:
        log.warning("%s: %d video(s) under %s are named by no split file and are left out, "
                    "e.g. %s; add them to the split files or move them away if that is wrong",
                    dataset, len(unlisted), where, ", ".join(unlisted[:5]))


# the first bytes of the containers VIDEO_EXTENSIONS name: (offset, magic)
MAGIC = ((0, b"RIFF"), (4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"\x00\x00\x01\xba"),
         (0, b"\x00\x00\x01\xb3"), (0, b"FLV"), (0, b"\x30\x26\xb2\x75"), (0, b"OggS"),
         (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"))


def probe_file(path: Path) -> str | None:
    """Why `path` cannot be a video, from a stat and its first 12 bytes (nothing is decoded):
    a dangling symlink, a symlink loop, not a regular file, 0 bytes, unreadable, or a header
    that is no video container's. None when it looks like a video."""
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path}: a symlink loop; point the link at the video file"
        if os.path.islink(path):
            return f"{path}: a dangling symlink (to {os.readlink(path)}); fix or remove the link"
        return f"{path}: cannot be read ({err.strerror or err})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    if st.st_size == 0:
        return f"{path}: 0 bytes; copy the video again"
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or err}); check its permissions"
    if not any(head[o:o + len(m)] == m for o, m in MAGIC):
        return (f"{path}: not a video container (it starts with {head[:8]!r}); replace it with "
                f"the video or remove it")
    return None


def probe_files(items) -> list[str]:
    """probe_file of every distinct video of `items` (a stat and 12 bytes each)."""
    seen, found = set(), []
    for item in items:
        if item.path not in seen:
            seen.add(item.path)
            problem = probe_file(Path(item.path))
            if problem:
                found.append(problem)
    return found


def validate(name: str, root: str | os.PathLike | None = None, **options) -> str:
    """Parse dataset `name` under `root` and return a human report; no video is opened.

    The report gives counts per split and class, every problem (file:line, what to do) and the
    videos no split names. With strict=True (the default) problems raise DatasetError whose
    message is the report, so a command-line wrapper can exit non-zero; strict=False returns it.
    """
    from pipeline.datasets import DATASETS, get_dataset

    strict = options.pop("strict", True)
    key = name.lower()
    lenient = key in DATASETS and "strict" in inspect.signature(DATASETS[key].__init__).parameters
    dataset = get_dataset(name, root, **options, **({"strict": False} if lenient else {}))
    problems = list(getattr(dataset, "skipped", []))
    unlisted = list(getattr(dataset, "unlisted", []))
    items = dataset.items()
    splits = dataset.splits()
    lines = [f"dataset {dataset.name} at {getattr(dataset, 'root', root)}",
             f"layout: {dataset.layout}",
             f"metric: {dataset.metric}",
             f"{len(items)} items, {len(dataset.classes)} classes, splits: "
             + (", ".join(splits) or "none")]
    for split, assign in splits.items():
        n = collections.Counter(assign.values())
        lines.append(f"  {split}: {n[TRAIN]} train, {n[TEST]} test, "
                     f"{len(items) - len(assign)} unused")
    per_class = collections.Counter(label for item in items for label in item.labels)
    counts = {s: collections.Counter() for s in splits}
    by_id = {item.id: item for item in items}
    for split, assign in splits.items():
        for item_id, role in assign.items():
            for label in by_id[item_id].labels if item_id in by_id else ():
                counts[split][label, role] += 1
    lines.append("per class: items" + "".join(f" | {s} train/test" for s in splits))
    for label, cls in enumerate(dataset.classes):
        lines.append(f"  {cls}: {per_class[label]}" + "".join(
            f" | {counts[s][label, TRAIN]}/{counts[s][label, TEST]}" for s in splits))
    skipped = len(problems)
    problems += probe_files(items)
    if len(dataset.classes) < 2 or len(per_class) < 2:
        problems.append(f"{getattr(dataset, 'root', root)}: {len(per_class)} class(es) with videos "
                        f"({', '.join(dataset.classes[:3])}); a classifier needs at least 2: "
                        f"check root= (a folder per class)")
    lines.append(f"problems: {len(problems)}" + (f" ({skipped} entries skipped)" if skipped else ""))
    lines += [f"  {p}" for p in problems]
    lines.append(f"videos named by no split: {len(unlisted)}")
    lines += [f"  {u}" for u in unlisted[:SHOWN]]
    if len(unlisted) > SHOWN:
        lines.append(f"  ... and {len(unlisted) - SHOWN} more")
    report = "\n".join(lines)
    if strict and problems:
        raise DatasetError(f"{report}\n{name}: {len(problems)} problem(s) above; fix them or "
                           f"pass dataset_options={{'strict': False}} to go on without the "
                           f"affected entries")
    return report
