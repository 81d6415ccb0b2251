"""Shared helpers for the dataset tests: the real split files in ../shared/data (skipped when
absent) and tiny on-disk layouts of empty placeholder videos (the parsers never open a video).
"""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_splits(name: str) -> Path:
    """../shared/data/splits/<name>, or skip the test saying why."""
    folder = SHARED_DATA / "splits" / name
    if not folder.is_dir():
        pytest.skip(f"real {name} split files not found at {folder} (../shared/data is absent in "
                    f"a fresh clone; these tests need it)")
    return folder


# the first bytes of a container, so that check-dataset's header probe takes a placeholder for a
# video (nothing decodes it)
HEADERS = {".avi": b"RIFF\x00\x00\x00\x00AVI ", ".mp4": b"\x00\x00\x00\x18ftypmp42"}


def touch(root: Path, *relpaths: str) -> None:
    """Create placeholder files root/<relpath> (a container's first bytes), with their folders."""
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(HEADERS.get(path.suffix.lower(), b"\x00\x00\x00\x18ftypisom"))


def write(path: Path, text: str | bytes, *, crlf: bool = False) -> Path:
    """Write a list file (text as UTF-8, LF or CRLF endings; bytes as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = (text.replace("\n", "\r\n") if crlf else text).encode("utf-8")
    path.write_bytes(text)
    return path


def videos_in_hmdb_splits(split_dir: Path) -> list[str]:
    """'<action>/<video>' for every line of the split-1 files (every split lists the same set)."""
    found = []
    for f in sorted(split_dir.glob("*_test_split1.txt")):
        action = f.name.rsplit("_test_split", 1)[0]
        found += [f"{action}/{line.split()[0]}" for line in f.read_text().splitlines()
                  if line.strip()]
    return found


def videos_in_ucf_lists(split_dir: Path) -> list[str]:
    """'<Class>/<video>' for every entry of trainlist01 and testlist01 (all of UCF101)."""
    found = []
    for name in ("trainlist01.txt", "testlist01.txt"):
        found += [line.split()[0] for line in (split_dir / name).read_text().splitlines()
                  if line.strip()]
    return found


def make_small_hmdb(root: Path, *, folder: str = "testTrainMulti_7030_splits") -> Path:
    """Two actions ('kick', 'kick_ball') x 4 clips; returns the split folder.

    Per split k the clips are: train, train, test, unused (k = 1), rotated by one per split.
    """
    split_dir = root / folder
    for action in ("kick", "kick_ball"):
        clips = [f"{action}_clip_{i}.avi" for i in range(4)]
        touch(root, *(f"{action}/{c}" for c in clips))
        for k in (1, 2, 3):
            codes = ["1", "1", "2", "0"]
            codes = codes[-(k - 1):] + codes[:-(k - 1)] if k > 1 else codes
            write(split_dir / f"{action}_test_split{k}.txt",
                  "".join(f"{c} {code} \n" for c, code in zip(clips, codes)))
    return split_dir


UCF_CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")


def make_small_ucf(root: Path) -> Path:
    """Three classes x 3 groups x 1 clip, CRLF lists; group 1 tests in split 1, g2 in 2, g3 in 3.

    Files of HandstandPushups are spelled v_HandStandPushups_* as in the real dataset.
    """
    split_dir = root / "ucfTrainTestlist"
    write(split_dir / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)),
          crlf=True)
    def clip(cls, g):
        spelled = "HandStandPushups" if cls == "HandstandPushups" else cls
        return f"{cls}/v_{spelled}_g{g:02d}_c01.avi"
    for cls in UCF_CLASSES:
        touch(root, *(clip(cls, g) for g in (1, 2, 3)))
    for k in (1, 2, 3):
        train = "".join(f"{clip(c, g)} {i}\n" for i, c in enumerate(UCF_CLASSES, 1)
                        for g in (1, 2, 3) if g != k)
        test = "".join(f"{clip(c, k)}\n" for c in UCF_CLASSES)
        write(split_dir / f"trainlist{k:02d}.txt", train, crlf=True)
        write(split_dir / f"testlist{k:02d}.txt", test, crlf=True)
    return split_dir


YUP_CLASSES = ("Beach", "Fountain", "Ocean")


def make_small_yup(root: Path, *, per_class: int = 3, split_at: Path | None = None) -> Path:
    """YUP++ layout: per class and camera `per_class` clips; clip 1 trains, the rest test.

    Names in the split file alternate between bare stems and file names with '.mp4'.
    Returns the split file.
    """
    lines = []
    for cls in YUP_CLASSES:
        for cam, folder in (("static", "camera_stationary"), ("moving", "camera_moving")):
            for n in range(1, per_class + 1):
                stem = f"{cls}_{cam}_cam_{n}"
                touch(root, f"{folder}/{cls}/{stem}.mp4")
                name = stem if n % 2 else f"{stem}.mp4"
                lines.append(f"{name} {cam}_{'train' if n == 1 else 'test'}\n")
    return write(split_at or root / "10_90_randsplit_1.txt", "".join(lines))


MPII_SUBJECTS = (7, 8, 10, 16, 17, 18, 19, 20)     # 7 only ever trains


def mpii_rows() -> list[str]:
    """Ground-truth rows: per subject one video with two segments, plus a background segment and a
    second label on one segment of subject 8 (a multi-label item)."""
    rows = []
    for s in MPII_SUBJECTS:
        video = f"s{s:02d}-d01-cam-002"
        rows += [f"{s},{video},1,50,2,cut apart", f"{s},{video},51,120,5,open egg",
                 f"{s},{video},121,130,1,Background activity"]
    rows.append("8,s08-d01-cam-002,1,50,5,open egg")
    return rows


def make_small_mpii(root: Path, rows: list[str] | None = None) -> Path:
    """videos/<file>.avi placeholders for every subject and the csv; returns the csv path."""
    touch(root, *(f"videos/s{s:02d}-d01-cam-002.avi" for s in MPII_SUBJECTS))
    return write(root / "detectionGroundtruth-1-0.csv",
                 "\n".join(rows if rows is not None else mpii_rows()) + "\n")


def make_small_folder(root: Path, classes=("jump", "run", "walk"), per_class: int = 5) -> None:
    """root/<class>/<class>_<i>.mp4 placeholders."""
    for cls in classes:
        touch(root, *(f"{cls}/{cls}_{i}.mp4" for i in range(per_class)))
