"""Property tests: on arbitrary bytes in any list file, every parser either builds a consistent
dataset or raises DatasetError naming the file; no other exception escapes."""
from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dataset_fixtures import (make_small_folder, make_small_hmdb, make_small_mpii, make_small_ucf,
                              make_small_yup, write)
from pipeline.datasets import DatasetError
from pipeline.datasets.base import TEST, TRAIN
from pipeline.datasets.folder import FolderDataset
from pipeline.datasets.hmdb51 import HMDB51
from pipeline.datasets.mpii_cooking import MPIICooking
from pipeline.datasets.ucf101 import UCF101
from pipeline.datasets.yup import YUPPlusPlus

# Arbitrary files: random bytes, and lines of fields drawn from tokens that reach deep into the
# parsers (path tricks, non-ASCII digits that str.isdigit accepts and int() rejects, quotes,
# control characters) or from arbitrary text.
WEIRD = ["..", "../x.avi", "a/b", "/abs", "C:\\x", "\\", "\x00", "\x1f", "é", "²", "٣", "-1",
         "0", "1", "2", "3", "99999999999999999999999", '"', ",", "", " ", "train", "test",
         "static_test", "moving_train", "x.avi", "s08", "camera_moving/../x", "YoYo"]
SEPARATORS = [" ", ",", "\t", "  "]
NEWLINES = ["\n", "\r\n", "\r"]

field = st.one_of(st.sampled_from(WEIRD), st.text(max_size=6))
line = st.tuples(st.lists(field, min_size=1, max_size=4), st.sampled_from(SEPARATORS)).map(
    lambda t: t[1].join(t[0]))
text_file = st.tuples(st.lists(line, max_size=12), st.sampled_from(NEWLINES)).map(
    lambda t: t[1].join(t[0]).encode("utf-8"))
arbitrary = st.one_of(st.binary(max_size=400), text_file)


@st.composite
def mutated(draw, valid: bytes):
    """A valid list file after 1-4 edits: a field replaced, dropped or added, a line duplicated
    or dropped, other line endings, stray bytes. Reaches every check behind a well-formed line."""
    text = valid.decode("utf-8")
    sep = "," if "," in text else " "
    lines = [row.split(sep) for row in text.splitlines() if row]
    stray = b""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "replace", "drop", "add", "dup", "del", "bytes"]))
        if not lines:
            lines.append([""])
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, max(len(lines[i]) - 1, 0)))
        if op == "replace" and lines[i]:
            lines[i][j] = draw(field)
        elif op == "drop" and lines[i]:
            del lines[i][j]
        elif op == "add":
            lines[i].insert(j, draw(field))
        elif op == "dup":
            lines.insert(draw(st.integers(0, len(lines))), list(lines[i]))
        elif op == "del":
            del lines[i]
        elif op == "bytes":
            stray = draw(st.binary(min_size=1, max_size=4))
    data = draw(st.sampled_from(NEWLINES)).join(sep.join(row) for row in lines).encode("utf-8")
    at = draw(st.integers(0, len(data)))
    return data[:at] + stray + data[at:]


FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check(build, target, pristine, choice) -> None:
    """Write an arbitrary or mutated version of `pristine` to `target`, then build strictly and
    leniently: a consistent dataset, or a DatasetError that names the file."""
    write(target, choice.draw(st.one_of(mutated(pristine.read_bytes()), arbitrary), label="file"))
    for strict in (True, False):
        try:
            ds = build(strict)
        except DatasetError as err:
            assert target.name in str(err), (strict, str(err))
            continue
        items = ds.items()
        ids = [item.id for item in items]
        assert len(set(ids)) == len(ids) and ids
        for item in items:
            assert item.labels and all(0 <= c < len(ds.classes) for c in item.labels)
        for assign in ds.splits().values():
            assert set(assign) <= set(ids) and set(assign.values()) <= {TRAIN, TEST}
        assert strict or isinstance(ds.skipped, list)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """One pristine tiny layout per dataset; each test copies the one it breaks."""
    base = tmp_path_factory.mktemp("pristine")
    make_small_hmdb(base / "hmdb")
    make_small_ucf(base / "ucf")
    make_small_yup(base / "yup")
    make_small_mpii(base / "mpii")
    make_small_folder(base / "folder", per_class=2)
    write(base / "folder" / "split.csv", "jump/jump_0.mp4,train\njump/jump_1.mp4,test\n")
    write(base / "hmdb" / "testTrainMulti_7030_splits" / "class_list.txt", "kick\nkick_ball\n")
    return base


def copy(layouts, name, tmp_path):
    dst = tmp_path / name
    if not dst.exists():
        shutil.copytree(layouts / name, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("target", ["kick_test_split1.txt", "class_list.txt"])
@FUZZ
@given(choice=st.data())
def test_hmdb51_split_files(layouts, tmp_path, target, choice):
    root, rel = copy(layouts, "hmdb", tmp_path), f"testTrainMulti_7030_splits/{target}"
    check(lambda strict: HMDB51(root, strict=strict), root / rel, layouts / "hmdb" / rel, choice)


@pytest.mark.parametrize("target", ["classInd.txt", "trainlist01.txt", "testlist01.txt"])
@FUZZ
@given(choice=st.data())
def test_ucf101_lists(layouts, tmp_path, target, choice):
    root, rel = copy(layouts, "ucf", tmp_path), f"ucfTrainTestlist/{target}"
    check(lambda strict: UCF101(root, strict=strict), root / rel, layouts / "ucf" / rel, choice)


@FUZZ
@given(choice=st.data())
def test_yup_split_file(layouts, tmp_path, choice):
    root, rel = copy(layouts, "yup", tmp_path), "10_90_randsplit_1.txt"
    check(lambda strict: YUPPlusPlus(root, strict=strict), root / rel, layouts / "yup" / rel,
          choice)


@FUZZ
@given(choice=st.data())
def test_mpii_annotations(layouts, tmp_path, choice):
    root, rel = copy(layouts, "mpii", tmp_path), "detectionGroundtruth-1-0.csv"
    check(lambda strict: MPIICooking(root, strict=strict), root / rel, layouts / "mpii" / rel,
          choice)


@FUZZ
@given(choice=st.data())
def test_folder_split_csv(layouts, tmp_path, choice):
    root, rel = copy(layouts, "folder", tmp_path), "split.csv"
    check(lambda strict: FolderDataset(root, strict=strict, split_csv=rel), root / rel,
          layouts / "folder" / rel, choice)


@FUZZ
@given(data=st.sampled_from([b"", b"\xef\xbb\xbf", b"\n\r\n", b"\xff\xfe\x00", b"\x00" * 9]))
def test_degenerate_files_name_the_file(layouts, tmp_path, data):
    root = copy(layouts, "yup", tmp_path)
    with pytest.raises(DatasetError, match="10_90_randsplit_1.txt"):
        write(root / "10_90_randsplit_1.txt", data)
        YUPPlusPlus(root)


TARGETS = {
    "hmdb": ("testTrainMulti_7030_splits/kick_test_split1.txt", HMDB51, {}),
    "ucf": ("ucfTrainTestlist/classInd.txt", UCF101, {}),
    "ucf/train": ("ucfTrainTestlist/trainlist01.txt", UCF101, {}),
    "yup": ("10_90_randsplit_1.txt", YUPPlusPlus, {}),
    "mpii": ("detectionGroundtruth-1-0.csv", MPIICooking, {}),
    "folder": ("split.csv", FolderDataset, {"split_csv": "split.csv"}),
}


@pytest.mark.parametrize("name", TARGETS)
def test_every_weird_token_in_every_field_of_a_line(layouts, tmp_path, name):
    """Exhaustive single substitutions in the first line: the cases random search may miss."""
    rel, cls, options = TARGETS[name]
    root = copy(layouts, name.split("/")[0], tmp_path)
    text = (layouts / name.split("/")[0] / rel).read_text()
    sep = "," if "," in text else " "
    first, rest = text.split("\n", 1)
    fields = first.split(sep)
    for j in range(len(fields)):
        for token in WEIRD:
            line = sep.join(fields[:j] + [token] + fields[j + 1:])
            check(lambda strict: cls(root, strict=strict, **options), root / rel,
                  layouts / name.split("/")[0] / rel, _Fixed(f"{line}\n{rest}".encode("utf-8")))


class _Fixed:
    """Stands in for hypothesis' st.data() with one fixed file."""

    def __init__(self, data: bytes):
        self.data = data

    def draw(self, strategy, label=None):
        return self.data
