"""Real datasets through all three stages: MPII Cooking segments (frame ranges, mAP) with the
counting fake backbone on tiny generated videos laid out as the real dataset is."""
from __future__ import annotations

import json

import h5py
import numpy as np

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.datasets.synthetic import write_video
from stages import descriptors, evaluate, extract
from tests.dataset_fixtures import MPII_SUBJECTS, make_small_mpii


def test_mpii_segments_through_all_stages(tmp_path, caplog):
    root = tmp_path / "mpii"
    make_small_mpii(root)
    rng = np.random.default_rng(0)
    for s in MPII_SUBJECTS:                       # replace placeholders by real 130-frame videos
        write_video(root / "videos" / f"s{s:02d}-d01-cam-002.avi",
                    rng.integers(0, 255, (130, 16, 16, 3), dtype=np.uint8), fps=25, codec="FFV1")
    args = [f"root={str(root)!r}", "dataset=mpii_cooking", f"cache_root={str(tmp_path / 'c')!r}",
            "backbone=fake_counting", "layer=stats", "weights=none", "size=16",
            "lengths=(8,)", "strides=(8,)", "steps=(1,)", "sketch_dim=4"]
    assert extract.main(args) == 0
    item = next((tmp_path / "c" / "features").rglob("s08-d01-cam-002/50-120.h5"))
    with h5py.File(item, "r") as f:
        assert f.attrs["num_frames"] == 70 and f.attrs["frame_range"].tolist() == [50, 120]
        assert f["rgb/stats/mean/L8_s1"].attrs["starts"].tolist() == [0, 8, 16, 24, 32, 40, 48, 56, 62]
    assert descriptors.main(args) == 0
    assert evaluate.main(args) == 0
    results = json.loads(next((tmp_path / "c").rglob("results.json")).read_text())
    assert results["metric"] == "map"
    assert sorted(results["scores"]) == ["mean", "s08", "s10", "s16", "s17", "s18", "s19", "s20"]
    assert all(0.0 <= v <= 1.0 for v in results["scores"].values())


def test_check_dataset_reports_and_exits_non_zero_on_problems(tmp_path, capsys, caplog):
    from stages import check_dataset
    from tests.dataset_fixtures import make_small_hmdb
    root = tmp_path / "hmdb51"
    make_small_hmdb(root)
    assert check_dataset.main(["dataset=HMDB51", f"root={str(root)!r}"]) == 0
    assert "sp1" in capsys.readouterr().out
    (root / "kick" / "kick_clip_0.avi").unlink()
    assert check_dataset.main(["dataset=hmdb51", f"root={str(root)!r}"]) == 2
    assert "kick_test_split1.txt:1" in caplog.text and "kick_clip_0.avi" in caplog.text
    assert check_dataset.main(["dataset=hmdb51", f"root={str(root)!r}",
                               "dataset_options={'strict': False}"]) == 0
    assert "kick_clip_0.avi" in capsys.readouterr().out and "restore it" in caplog.text
