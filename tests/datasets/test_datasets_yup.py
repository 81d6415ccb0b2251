"""YUP++: static, dynamic and mixed evaluations from the 10/90 split file over a synthetic layout,
and bad input."""
from __future__ import annotations

import logging

import pytest

from tests.dataset_fixtures import YUP_CLASSES, make_small_yup, touch, write
from pipeline.datasets import DatasetError, get_dataset
from pipeline.datasets.base import TEST, TRAIN
from pipeline.datasets.yup import YUPPlusPlus


def test_three_evaluations(tmp_path):
    make_small_yup(tmp_path)
    ds = get_dataset("YUP++", tmp_path)
    assert ds.classes == YUP_CLASSES and ds.metric == "accuracy"
    assert len(ds.items()) == 18 and ds.skipped == [] and ds.unlisted == []
    splits = ds.splits()
    assert sorted(splits) == ["dynamic", "mixed", "static"]
    static, dynamic, mixed = splits["static"], splits["dynamic"], splits["mixed"]
    assert all(v.startswith("camera_stationary/") for v in static)
    assert all(v.startswith("camera_moving/") for v in dynamic)
    assert mixed == {**static, **dynamic} and len(mixed) == 18
    assert static["camera_stationary/Beach/Beach_static_cam_1.mp4"] == TRAIN
    assert static["camera_stationary/Beach/Beach_static_cam_2.mp4"] == TEST   # named with .mp4
    assert dynamic["camera_moving/Ocean/Ocean_moving_cam_3.mp4"] == TEST      # named by stem
    assert sorted(r for r in static.values()) == [TEST] * 6 + [TRAIN] * 3
    item = {i.id: i for i in ds.items()}["camera_moving/Ocean/Ocean_moving_cam_1.mp4"]
    assert item.labels == (2,) and item.path.is_file() and item.frames is None


def test_split_file_locations(tmp_path):
    make_small_yup(tmp_path / "a", split_at=tmp_path / "a" / "splits" / "10_90_randsplit_1.txt")
    assert len(YUPPlusPlus(tmp_path / "a").items()) == 18
    other = make_small_yup(tmp_path / "b", split_at=tmp_path / "b" / "mine.txt")
    assert len(YUPPlusPlus(tmp_path / "b", split_file="mine.txt").items()) == 18
    assert len(YUPPlusPlus(tmp_path / "b", split_file=other).items()) == 18
    with pytest.raises(DatasetError, match=r"split file 10_90_randsplit_1.txt not found.*"
                                           r"pass split_file="):
        YUPPlusPlus(tmp_path / "b")


def test_missing_root_and_camera_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist; pass root="):
        YUPPlusPlus(tmp_path / "nowhere")
    touch(tmp_path, "Beach/x.mp4")
    with pytest.raises(DatasetError, match="neither .*camera_stationary nor .*camera_moving"):
        YUPPlusPlus(tmp_path)


def test_missing_moving_camera_folder(tmp_path, caplog):
    make_small_yup(tmp_path)
    for f in sorted((tmp_path / "camera_moving").rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (tmp_path / "camera_moving").rmdir()
    with pytest.raises(DatasetError, match=r"9 problem\(s\).*9 missing video"):
        YUPPlusPlus(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = YUPPlusPlus(tmp_path, strict=False)
    assert ds.splits()["dynamic"] == {} and len(ds.splits()["static"]) == 9
    assert "camera_moving does not exist" in caplog.text


@pytest.mark.parametrize("line, kind, expected", [
    ("Beach_static_cam_9 static_train", "missing video", "'Beach_static_cam_9' is not in"),
    ("Beach_static_cam_1 moving_test", "wrong camera", "tagged moving_* but lies in "
                                                       "camera_stationary"),
    ("camera_moving/Beach/Beach_moving_cam_1.mp4 static_test", "wrong camera",
     "lies in camera_moving"),
    ("Beach_static_cam_1 static_val", "malformed line", "with a tag among"),
    ("Beach_static_cam_1", "malformed line", "is not '<name> <tag>'"),
    ("../../etc/passwd static_train", "path escapes root", "escapes the dataset root"),
    ("Beach_static_cam_1 static_test", "duplicate", "already listed at"),
])
def test_bad_lines(tmp_path, line, kind, expected):
    split_file = make_small_yup(tmp_path)
    write(split_file, split_file.read_text() + line + "\n")
    with pytest.raises(DatasetError) as err:
        YUPPlusPlus(tmp_path)
    message = str(err.value)
    assert "10_90_randsplit_1.txt:19: " in message and expected in message
    assert f"1 {kind}" in message
    ds = YUPPlusPlus(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and len(ds.items()) == 18


def test_ambiguous_name_across_classes(tmp_path):
    split_file = make_small_yup(tmp_path)
    touch(tmp_path, "camera_stationary/Ocean/shared.mp4", "camera_stationary/Beach/shared.mp4")
    write(split_file, split_file.read_text() + "shared static_test\n")
    with pytest.raises(DatasetError, match=r":19: 'shared' matches 2 videos"):
        YUPPlusPlus(tmp_path)
    write(split_file, split_file.read_text().replace("shared static_test",
                                                     "Ocean/shared.mp4 static_test"))
    ds = YUPPlusPlus(tmp_path)
    assert ds.splits()["static"]["camera_stationary/Ocean/shared.mp4"] == TEST
    assert ds.unlisted == ["camera_stationary/Beach/shared.mp4"]


def test_unlisted_video_and_empty_split_file(tmp_path, caplog):
    split_file = make_small_yup(tmp_path)
    touch(tmp_path, "camera_moving/Beach/Beach_moving_cam_99.mp4")
    with caplog.at_level(logging.WARNING):
        ds = YUPPlusPlus(tmp_path)
    assert ds.unlisted == ["camera_moving/Beach/Beach_moving_cam_99.mp4"]
    assert "named by no split file" in caplog.text
    write(split_file, "")
    with pytest.raises(DatasetError, match=r"10_90_randsplit_1.txt: the file holds no entries"):
        YUPPlusPlus(tmp_path)
    with pytest.raises(DatasetError, match=r"no usable videos.*holds no entries"):
        YUPPlusPlus(tmp_path, strict=False)
