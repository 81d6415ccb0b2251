"""UCF101: the real CRLF split lists over placeholder videos (HandstandPushups spelling included),
and bad input."""
from __future__ import annotations

import logging
import re

import pytest

from tests.dataset_fixtures import (UCF_CLASSES, make_small_ucf, shared_splits, touch,
                              videos_in_ucf_lists, write)
from pipeline.datasets import DatasetError, get_dataset
from pipeline.datasets.base import TEST, TRAIN
from pipeline.datasets.ucf101 import UCF101

COUNTS = {"sp1": (9537, 3783), "sp2": (9586, 3734), "sp3": (9624, 3696)}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(root with an empty .avi for each of the 13320 clips, spelled as the lists spell them,
    the real split folder)."""
    split_dir = shared_splits("ucf101")
    root = tmp_path_factory.mktemp("ucf101")
    touch(root, *videos_in_ucf_lists(split_dir))
    return root, split_dir


@pytest.mark.shared_data
def test_real_lists_counts_and_crlf(real):
    root, split_dir = real
    assert b"\r\n" in (split_dir / "trainlist01.txt").read_bytes()    # the test means something
    ds = get_dataset("UCF101", root, splits=split_dir)
    assert len(ds.classes) == 101 and len(ds.items()) == 13320
    assert ds.skipped == [] and ds.unlisted == []
    for name, (n_train, n_test) in COUNTS.items():
        roles = list(ds.splits()[name].values())
        assert (roles.count(TRAIN), roles.count(TEST)) == (n_train, n_test)
    assert not any("\r" in item.id or item.id != item.id.strip() for item in ds.items())
    assert ds.classes[0] == "ApplyEyeMakeup" and ds.classes[-1] == "YoYo"


@pytest.mark.shared_data
def test_real_labels_and_group_protocol(real):
    root, split_dir = real
    ds = UCF101(root, splits=split_dir)
    items = {item.id: item for item in ds.items()}
    # test lists carry no label: it comes from the class folder and classInd.txt
    assert items["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"].labels == (0,)
    assert items["YoYo/v_YoYo_g07_c04.avi"].labels == (100,)
    assert items["HandstandPushups/v_HandStandPushups_g01_c01.avi"].labels == (
        ds.classes.index("HandstandPushups"),)
    for vid, role in ds.splits()["sp1"].items():          # split 1 tests groups 1..7
        group = int(re.search(r"_g(\d\d)_c", vid)[1])
        assert (role == TEST) == (group <= 7), vid
    for item in items.values():
        assert ds.classes[item.labels[0]] == item.id.split("/")[0]


@pytest.mark.shared_data
def test_real_lists_with_other_spelling_on_disk(tmp_path):
    """Copies of UCF101 spell HandstandPushups files and folder differently from the lists."""
    split_dir = shared_splits("ucf101")
    respelled = [v.replace("HandstandPushups/", "HandStandPushups/")
                 .replace("v_HandStandPushups", "v_HandstandPushups")
                 for v in videos_in_ucf_lists(split_dir)]
    touch(tmp_path, *respelled)
    ds = UCF101(tmp_path, splits=split_dir)
    assert len(ds.items()) == 13320 and ds.skipped == [] and ds.unlisted == []
    item = next(i for i in ds.items() if i.id == "HandstandPushups/v_HandStandPushups_g08_c01.avi")
    assert item.path == tmp_path / "HandStandPushups" / "v_HandstandPushups_g08_c01.avi"


def test_small_layout(tmp_path):
    make_small_ucf(tmp_path)
    ds = UCF101(tmp_path)
    assert ds.classes == UCF_CLASSES and len(ds.items()) == 9
    sp2 = ds.splits()["sp2"]
    assert sp2["YoYo/v_YoYo_g02_c01.avi"] == TEST and sp2["YoYo/v_YoYo_g01_c01.avi"] == TRAIN
    assert [i.id for i in ds.items()] == sorted(i.id for i in ds.items())


def test_split_folder_beside_root(tmp_path):
    make_small_ucf(tmp_path / "UCF-101")
    (tmp_path / "UCF-101" / "ucfTrainTestlist").rename(tmp_path / "ucfTrainTestlist")
    assert len(UCF101(tmp_path / "UCF-101").items()) == 9
    with pytest.raises(DatasetError, match=r"split folder .*not found.*pass splits="):
        UCF101(tmp_path / "UCF-101" / "ApplyEyeMakeup")


def test_missing_class_index(tmp_path):
    split_dir = make_small_ucf(tmp_path)
    (split_dir / "classInd.txt").unlink()
    with pytest.raises(DatasetError, match=r"classInd\.txt not found"):
        UCF101(tmp_path)


def test_missing_list_drops_that_split_only_when_lenient(tmp_path, caplog):
    split_dir = make_small_ucf(tmp_path)
    (split_dir / "testlist02.txt").unlink()
    with pytest.raises(DatasetError, match=r"testlist02\.txt: split list missing"):
        UCF101(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = UCF101(tmp_path, strict=False)
    assert sorted(ds.splits()) == ["sp1", "sp3"] and len(ds.skipped) == 1
    assert "1 missing split file" in caplog.text


@pytest.mark.parametrize("line, expected", [
    ("YoYo/v_YoYo_g01_c01.avi 2", "label '2' does not match class 'YoYo' (id 3"),
    ("Juggling/v_Juggling_g01_c01.avi 3", "class 'Juggling' is not in"),
    ("YoYo/v_YoYo_g01_c01.avi", "1 fields"),
    ("YoYo/v_YoYo_g01_c01.avi 3 x", "3 fields"),
    ("../YoYo/v_YoYo_g01_c01.avi 3", "escapes the dataset root"),
    ("/abs/YoYo/v.avi 3", "is absolute"),
    ("YoYo/v_YoYo_g09_c01.avi 3", "video 'YoYo/v_YoYo_g09_c01.avi' is not under"),
    ("YoYo/deeper/v.avi 3", "is not '<Class>/<video>'"),
])
def test_bad_train_line(tmp_path, line, expected):
    split_dir = make_small_ucf(tmp_path)
    path = split_dir / "trainlist01.txt"
    write(path, path.read_text() + line + "\r\n")
    with pytest.raises(DatasetError) as err:
        UCF101(tmp_path)
    assert "trainlist01.txt:7: " in str(err.value) and expected in str(err.value)
    ds = UCF101(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and len(ds.items()) == 9


def test_duplicate_across_train_and_test(tmp_path):
    split_dir = make_small_ucf(tmp_path)
    write(split_dir / "testlist01.txt", (split_dir / "testlist01.txt").read_text()
          + "YoYo/v_YoYo_g02_c01.avi\r\n")
    with pytest.raises(DatasetError, match=r"testlist01.txt:4: 'YoYo/v_YoYo_g02_c01.avi' is "
                                           r"already listed at .*trainlist01.txt:5"):
        UCF101(tmp_path)
    ds = UCF101(tmp_path, strict=False)
    assert ds.splits()["sp1"]["YoYo/v_YoYo_g02_c01.avi"] == TRAIN       # the first one stands


def test_test_list_with_matching_label_is_accepted(tmp_path):
    split_dir = make_small_ucf(tmp_path)
    write(split_dir / "testlist01.txt", "".join(
        f"{c}/v_{c.replace('Handstand', 'HandStand')}_g01_c01.avi {i}\r\n"
        for i, c in enumerate(UCF_CLASSES, 1)))
    assert len(UCF101(tmp_path).splits()["sp1"]) == 9


def test_class_index_problems(tmp_path):
    split_dir = make_small_ucf(tmp_path)
    write(split_dir / "classInd.txt", "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n2 Again\r\n"
                                      "x YoYo\r\n4 YoYo\r\n", crlf=False)
    with pytest.raises(DatasetError) as err:
        UCF101(tmp_path)
    message = str(err.value)
    assert "classInd.txt:3: class id 2 or name 'Again' is already defined" in message
    assert "classInd.txt:4: 'x YoYo' is not '<id> <Class>'" in message
    assert "classInd.txt: class ids [3] are missing" in message


def test_unlisted_video_warns(tmp_path, caplog):
    make_small_ucf(tmp_path)
    touch(tmp_path, "YoYo/v_YoYo_g25_c01.avi")
    with caplog.at_level(logging.WARNING):
        ds = UCF101(tmp_path)
    assert ds.unlisted == ["YoYo/v_YoYo_g25_c01.avi"] and "1 video(s)" in caplog.text
