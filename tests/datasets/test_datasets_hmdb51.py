"""HMDB51: the real official split files over placeholder videos, and every kind of bad input."""
from __future__ import annotations

import collections
import logging
import pathlib

import pytest

from tests.dataset_fixtures import make_small_hmdb, shared_splits, touch, videos_in_hmdb_splits, write
from pipeline.datasets import DATASETS, DatasetError, get_dataset
from pipeline.datasets.base import TEST, TRAIN
from pipeline.datasets.check import validate
from pipeline.datasets.hmdb51 import HMDB51


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(root with an empty .avi for each of the 6766 clips, the real split folder)."""
    split_dir = shared_splits("hmdb51")
    root = tmp_path_factory.mktemp("hmdb51")
    touch(root, *videos_in_hmdb_splits(split_dir))
    return root, split_dir


@pytest.mark.shared_data
def test_real_splits_counts(real):
    root, split_dir = real
    assert len(list(split_dir.glob("*_test_split*.txt"))) == 153
    ds = HMDB51(root, splits=split_dir)
    assert len(ds.classes) == 51 and len(ds.items()) == 6766
    assert ds.skipped == [] and ds.unlisted == []
    label_of = {item.id: item.labels[0] for item in ds.items()}
    assert sorted(ds.splits()) == ["sp1", "sp2", "sp3"]
    for name, assign in ds.splits().items():
        per_class = collections.Counter((label_of[vid], role) for vid, role in assign.items())
        for label in range(51):
            assert per_class[label, TRAIN] == 70 and per_class[label, TEST] == 30, (name, label)
        # every line is an item: 70 + 30 used, the rest (id 0) unused in this split
        assert len(assign) == 5100 and len(ds.items()) - len(assign) == 1666


@pytest.mark.shared_data
def test_real_ids_labels_and_class_order(real):
    root, split_dir = real
    ds = get_dataset("HMDB51", root, splits=split_dir)          # names are case-insensitive
    class_list = [line.strip() for line in (split_dir / "class_list.txt").read_text().splitlines()]
    assert list(ds.classes) == class_list                      # TSN order: kick_ball before kick
    assert ds.classes.index("kick_ball") < ds.classes.index("kick")
    items = {item.id: item for item in ds.items()}
    first = items["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"]
    assert first.labels == (0,) and first.frames is None and first.path.is_file()
    assert ds.splits()["sp1"][first.id] == TRAIN
    assert any("!" in vid or "(" in vid for vid in items)      # odd characters survive
    assert [item.id for item in ds.items()] == [item.id for item in HMDB51(root, splits=split_dir)
                                                .items()]      # deterministic order


@pytest.mark.shared_data
def test_real_order_without_class_list_is_sorted(real, tmp_path):
    root, split_dir = real
    linked = tmp_path / "splits"
    linked.mkdir()
    for f in split_dir.glob("*_test_split*.txt"):
        (linked / f.name).symlink_to(f)
    ds = HMDB51(root, splits=linked)
    class_list = [line.strip() for line in (split_dir / "class_list.txt").read_text().splitlines()]
    assert list(ds.classes) == sorted(class_list) != class_list


@pytest.mark.shared_data
def test_real_parser_opens_no_video(real, monkeypatch):
    root, split_dir = real
    opened = []
    real_open = pathlib.Path.open

    def spy(self, *args, **kwargs):
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", spy)
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: pytest.fail("a video was opened"))
    HMDB51(root, splits=split_dir)
    assert opened and not any(name.endswith(".avi") for name in opened)


def test_default_split_folder_inside_root_and_fallbacks(tmp_path):
    make_small_hmdb(tmp_path / "a")
    ds = HMDB51(tmp_path / "a")
    assert ds.split_dir.name == "testTrainMulti_7030_splits"
    assert ds.classes == ("kick", "kick_ball") and len(ds.items()) == 8
    assert ds.splits()["sp1"] == {
        **{f"{a}/{a}_clip_{i}.avi": r for a in ("kick", "kick_ball")
           for i, r in enumerate((TRAIN, TRAIN, TEST))}}
    make_small_hmdb(tmp_path / "b", folder="splits")
    assert HMDB51(tmp_path / "b").split_dir.name == "splits"
    make_small_hmdb(tmp_path / "c" / "hmdb51_org")
    (tmp_path / "c" / "hmdb51_org" / "testTrainMulti_7030_splits").rename(
        tmp_path / "c" / "testTrainMulti_7030_splits")
    assert len(HMDB51(tmp_path / "c" / "hmdb51_org").items()) == 8    # a sibling of root


def test_missing_root_and_split_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"root .*nowhere.* does not exist; pass root="):
        HMDB51(tmp_path / "nowhere")
    touch(tmp_path, "kick/a.avi")
    with pytest.raises(DatasetError, match=r"testTrainMulti_7030_splits.*pass splits="):
        HMDB51(tmp_path)
    with pytest.raises(DatasetError, match=r"elsewhere"):
        HMDB51(tmp_path, splits="elsewhere")


def test_unknown_option_lists_the_known_ones(tmp_path):
    make_small_hmdb(tmp_path)
    with pytest.raises(DatasetError, match=r"unknown option.*'split'.*'splits'"):
        get_dataset("hmdb51", tmp_path, split="x")
    assert DATASETS["hmdb51"] is HMDB51


def test_missing_split_file(tmp_path, caplog):
    split_dir = make_small_hmdb(tmp_path)
    (split_dir / "kick_test_split2.txt").unlink()
    with pytest.raises(DatasetError, match=r"kick_test_split2\.txt: split file missing"):
        HMDB51(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = HMDB51(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and "1 missing split file" in caplog.text
    assert not any(v.startswith("kick/") for v in ds.splits()["sp2"])
    assert any(v.startswith("kick/") for v in ds.splits()["sp1"])


def test_missing_video_is_reported_not_dropped(tmp_path, caplog):
    make_small_hmdb(tmp_path)
    (tmp_path / "kick" / "kick_clip_1.avi").unlink()
    with pytest.raises(DatasetError) as err:
        HMDB51(tmp_path)
    assert "kick_test_split1.txt:2: video 'kick_clip_1.avi' is not in" in str(err.value)
    assert "3 problem(s)" in str(err.value)                   # one per split file
    with caplog.at_level(logging.WARNING):
        ds = HMDB51(tmp_path, strict=False)
    assert len(ds.skipped) == 3 and "3 missing video" in caplog.text
    assert "kick/kick_clip_1.avi" not in {item.id for item in ds.items()}
    assert len(ds.items()) == 7


def test_video_on_disk_in_no_split_warns(tmp_path, caplog):
    make_small_hmdb(tmp_path)
    touch(tmp_path, "kick/extra.avi", "dance/x.avi", "kick/notes.txt")
    with caplog.at_level(logging.WARNING):
        ds = HMDB51(tmp_path)
    assert sorted(ds.unlisted) == ["dance/x.avi", "kick/extra.avi"]
    assert "2 video(s)" in caplog.text and "kick/extra.avi" in caplog.text


BAD_LINES = {
    "kick_clip_0.avi 1 extra \n": "3 fields",
    "kick_clip_0.avi 7 \n": "unknown id '7'",
    "../kick_ball/kick_ball_clip_0.avi 1 \n": "escapes the dataset root",
    "sub/kick_clip_0.avi 1 \n": "holds a path separator",
    "kick_clip_1.avi 1 \nkick_clip_1.avi 2 \n": "listed again (first at line 1)",
}


@pytest.mark.parametrize("text, expected", BAD_LINES.items())
def test_malformed_lines(tmp_path, text, expected):
    split_dir = make_small_hmdb(tmp_path)
    write(split_dir / "kick_test_split1.txt", text)
    with pytest.raises(DatasetError, match=f"kick_test_split1.txt:\\d+: .*{expected[:12]}"):
        HMDB51(tmp_path)
    ds = HMDB51(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and expected.split("(")[0].strip() in ds.skipped[0]


def test_escaping_path_is_its_own_kind(tmp_path):
    split_dir = make_small_hmdb(tmp_path)
    write(split_dir / "kick_test_split1.txt", "../../etc/passwd 1 \n")
    with pytest.raises(DatasetError, match="path escapes root"):
        HMDB51(tmp_path)


def test_non_utf8_and_empty_files(tmp_path):
    split_dir = make_small_hmdb(tmp_path)
    write(split_dir / "kick_test_split1.txt", b"kick_clip_0.avi 1 \n\xff\xfe.avi 1 \n")
    write(split_dir / "kick_test_split2.txt", b"\n  \n")
    with pytest.raises(DatasetError) as err:
        HMDB51(tmp_path)
    message = str(err.value)
    assert "kick_test_split1.txt:2: byte 0 is not UTF-8" in message
    assert "kick_test_split2.txt: the file holds no entries" in message
    ds = HMDB51(tmp_path, strict=False)
    assert len(ds.skipped) == 2
    assert ds.splits()["sp1"]["kick/kick_clip_0.avi"] == TRAIN


def test_class_not_in_class_list(tmp_path):
    split_dir = make_small_hmdb(tmp_path)
    write(split_dir / "class_list.txt", "kick\n")
    with pytest.raises(DatasetError, match=r"kick_ball_test_split1.txt: action 'kick_ball' is not "
                                           r"in the class list"):
        HMDB51(tmp_path)
    ds = HMDB51(tmp_path, strict=False)
    assert ds.classes == ("kick",) and len(ds.skipped) == 3
    assert {item.id.split("/")[0] for item in ds.items()} == {"kick"}


def test_many_problems_are_capped_with_a_count(tmp_path):
    split_dir = make_small_hmdb(tmp_path)
    write(split_dir / "kick_test_split1.txt", "".join(f"gone_{i}.avi 1 \n" for i in range(15)))
    with pytest.raises(DatasetError) as err:
        HMDB51(tmp_path)
    assert "15 problem(s)" in str(err.value) and "... and 5 more" in str(err.value)


def test_validate_reports_counts_and_problems(tmp_path):
    make_small_hmdb(tmp_path)
    report = validate("hmdb51", tmp_path)
    assert "8 items, 2 classes" in report and "sp1: 6 train, 2 test, 0 unused" not in report
    assert "sp1: 4 train, 2 test, 2 unused" in report and "kick_ball: 4 | 2/1" in report
    (tmp_path / "kick" / "kick_clip_3.avi").unlink()
    with pytest.raises(DatasetError, match=r"problems: 3"):
        validate("hmdb51", tmp_path)
    report = validate("hmdb51", tmp_path, strict=False)
    assert "problems: 3" in report and "kick_test_split1.txt:4" in report
