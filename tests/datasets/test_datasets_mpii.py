"""MPII Cooking Activities: segment items (0-based half-open frames), multi-label merging, the
seven subject splits, and bad input, over a synthetic layout."""
from __future__ import annotations

import logging

import pytest

from tests.dataset_fixtures import MPII_SUBJECTS, make_small_mpii, mpii_rows, touch, write
from pipeline.datasets import DatasetError, get_dataset
from pipeline.datasets.base import TEST, TRAIN
from pipeline.datasets.mpii_cooking import TEST_SUBJECTS, MPIICooking
from pipeline.results.metrics import METRICS, labels_to_indicator


def test_segments_are_items_with_frame_ranges(tmp_path):
    make_small_mpii(tmp_path)
    ds = get_dataset("MPII_Cooking", tmp_path)
    assert ds.metric == "map" and ds.metric in METRICS
    assert ds.classes == ("Background activity", "cut apart", "open egg")    # by category id
    assert len(ds.items()) == 3 * len(MPII_SUBJECTS) and ds.skipped == [] and ds.unlisted == []
    items = {item.id: item for item in ds.items()}
    # csv "1,50" (1-based, inclusive) -> frames [0, 50); "51,120" -> [50, 120)
    first = items["s10-d01-cam-002/0-50"]
    assert first.frames == (0, 50) and first.labels == (1,)
    assert first.path == tmp_path / "videos" / "s10-d01-cam-002.avi"
    assert items["s10-d01-cam-002/50-120"].frames == (50, 120)
    assert items["s10-d01-cam-002/120-130"].labels == (0,)
    # two rows with the same range -> one multi-label item
    assert items["s08-d01-cam-002/0-50"].labels == (1, 2)
    assert ds.subject("s08-d01-cam-002/0-50") == 8
    indicator = labels_to_indicator([i.labels for i in ds.items()], len(ds.classes))
    assert indicator.sum() == len(ds.items()) + 1
    assert [i.id for i in ds.items()] == [i.id for i in MPIICooking(tmp_path).items()]


def test_seven_subject_splits(tmp_path):
    make_small_mpii(tmp_path)
    splits = MPIICooking(tmp_path).splits()
    assert list(splits) == ["s08", "s10", "s16", "s17", "s18", "s19", "s20"]
    for s in TEST_SUBJECTS:
        assign = splits[f"s{s:02d}"]
        test = sorted(v for v, r in assign.items() if r == TEST)
        assert test == [f"s{s:02d}-d01-cam-002/{r}" for r in ("0-50", "120-130", "50-120")]
        assert sum(r == TRAIN for r in assign.values()) == 3 * (len(MPII_SUBJECTS) - 1)
        assert all(assign[f"s07-d01-cam-002/{r}"] == TRAIN for r in ("0-50", "50-120"))


def test_header_other_extension_and_background_option(tmp_path, caplog):
    make_small_mpii(tmp_path, ["subject,fileName,startFrame,endFrame,categoryId,categoryName"]
                    + mpii_rows())
    for s in MPII_SUBJECTS:
        (tmp_path / "videos" / f"s{s:02d}-d01-cam-002.avi").rename(
            tmp_path / "videos" / f"s{s:02d}-d01-cam-002.mp4")
    ds = MPIICooking(tmp_path, background=False)
    assert ds.classes == ("cut apart", "open egg") and len(ds.items()) == 2 * len(MPII_SUBJECTS)
    assert all(i.path.suffix == ".mp4" for i in ds.items())


def test_options_for_other_places(tmp_path):
    make_small_mpii(tmp_path / "data")
    (tmp_path / "data" / "videos").rename(tmp_path / "clips")
    (tmp_path / "data" / "detectionGroundtruth-1-0.csv").rename(tmp_path / "gt.csv")
    with pytest.raises(DatasetError, match=r"annotation file .* not found.*pass annotations="):
        MPIICooking(tmp_path / "data")
    ds = MPIICooking(tmp_path / "data", annotations=tmp_path / "gt.csv", videos=tmp_path / "clips")
    assert len(ds.items()) == 3 * len(MPII_SUBJECTS)


def test_missing_video_is_one_problem_with_its_segment_count(tmp_path, caplog):
    make_small_mpii(tmp_path)
    (tmp_path / "videos" / "s17-d01-cam-002.avi").unlink()
    with pytest.raises(DatasetError, match=r"detectionGroundtruth-1-0.csv:13: video "
                                           r"'s17-d01-cam-002' \(named by 3 segment"):
        MPIICooking(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = MPIICooking(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and "1 missing video" in caplog.text
    assert "no segment of subject 17" in caplog.text
    assert not any(r == TEST for r in ds.splits()["s17"].values())


@pytest.mark.parametrize("row, kind, expected", [
    ("8,s08-d01-cam-002,60,59,2,cut apart", "malformed line", "need 1 <= start <= end"),
    ("8,s08-d01-cam-002,0,10,2,cut apart", "malformed line", "need 1 <= start <= end"),
    ("8,s08-d01-cam-002,1,50,2", "malformed line", "5 fields, expected 6"),
    ("8,s08-d01-cam-002,a,50,2,cut apart", "malformed line", "non-integer"),
    ("9,s08-d01-cam-002,200,250,2,cut apart", "conflict", "belongs to subject 8"),
    ("8,s08-d01-cam-002,200,250,2,peel", "conflict", "category 2 'peel' disagrees"),
    ("8,s08-d01-cam-002,51,120,5,open egg", "duplicate", "already on line 5"),
    ("8,../s08-d01-cam-002,1,5,2,cut apart", "path escapes root", "escapes the dataset root"),
    ("8,sub/s08-d01-cam-002,1,5,2,cut apart", "malformed line", "path separator"),
    ('8,"s08-d01-cam-002,x",1,5,2,cut apart', "missing video", "'s08-d01-cam-002,x'"),
])
def test_bad_rows(tmp_path, row, kind, expected):
    rows = mpii_rows()
    make_small_mpii(tmp_path, rows + [row])
    with pytest.raises(DatasetError) as err:
        MPIICooking(tmp_path)
    message = str(err.value)
    assert f"detectionGroundtruth-1-0.csv:{len(rows) + 1}: " in message, message
    assert expected in message and f"1 {kind}" in message
    ds = MPIICooking(tmp_path, strict=False)
    assert len(ds.skipped) == 1 and len(ds.items()) == 3 * len(MPII_SUBJECTS)


def test_conflicting_subject_for_one_segment(tmp_path):
    make_small_mpii(tmp_path, mpii_rows() + ["8,kitchen-a,1,10,2,cut apart",
                                             "10,kitchen-a,1,10,5,open egg"])
    touch(tmp_path, "videos/kitchen-a.avi")
    with pytest.raises(DatasetError, match=r"csv:27: segment kitchen-a 1..10 is given subject 8 "
                                           r"on line 26 and 10 here"):
        MPIICooking(tmp_path)


def test_unlisted_video_and_empty_csv(tmp_path, caplog):
    csv = make_small_mpii(tmp_path)
    touch(tmp_path, "videos/s21-d01-cam-002.avi")
    with caplog.at_level(logging.WARNING):
        ds = MPIICooking(tmp_path)
    assert ds.unlisted == ["s21-d01-cam-002.avi"] and "1 video(s)" in caplog.text
    write(csv, "subject,file,start,end,id,name\n")
    with pytest.raises(DatasetError, match=r"detectionGroundtruth-1-0.csv holds no segment"):
        MPIICooking(tmp_path)
