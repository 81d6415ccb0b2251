"""Bad videos never stop a run: each is recorded with its reason, the run exits non-zero with a
summary, and a rerun retries only those (and completes once they are fixed)."""
from __future__ import annotations

import json

import numpy as np

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.datasets.synthetic import write_video
from stages import extract


def test_bad_videos_are_recorded_and_retried(tmp_path, caplog):
    root = tmp_path / "videos"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            write_video(root / cls / f"good{k}.avi", frames, fps=25, codec="FFV1")
    (root / "a" / "empty.mp4").write_bytes(b"")
    (root / "a" / "text.mp4").write_text("this is not a video\n" * 100)
    write_video(tmp_path / "whole.mp4", frames, fps=25, codec="mp4v")
    data = (tmp_path / "whole.mp4").read_bytes()
    (root / "b" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_video(root / "b" / "lying.avi", frames, fps=25, codec="FFV1")   # truncated AVI: header says 20
    avi = (root / "b" / "lying.avi").read_bytes()
    (root / "b" / "lying.avi").write_bytes(avi[: int(len(avi) * 0.6)])
    (root / "a" / "codec.avi").write_bytes(avi.replace(b"FFV1", b"QQQQ"))   # a codec nobody has
    args = [f"root={str(root)!r}", "dataset=folder", f"cache_root={str(tmp_path / 'c')!r}",
            "backbone=fake_counting", "layer=stats", "weights=none", "size=16",
            "lengths=(4,)", "strides=(4,)", "steps=(1,)"]
    assert extract.main(args) == 1
    manifest = json.loads(next((tmp_path / "c").rglob("manifest.json")).read_text())
    failures = manifest["failures"]
    assert set(failures) == {"a/empty.mp4", "a/text.mp4", "a/codec.avi", "b/truncated.mp4"}, failures
    assert "empty file" in failures["a/empty.mp4"]
    assert "cannot be opened" in failures["a/text.mp4"]
    assert "a codec this OpenCV build lacks" in failures["a/codec.avi"]
    assert "4 items failed" in caplog.text and "rerun to retry" in caplog.text
    assert manifest["done"] == manifest["items"] - 4           # the lying AVI is cut by its real length
    caplog.clear()
    assert extract.main(args) == 1
    assert "4 of 11 items to compute" in caplog.text
    for bad in ("a/empty.mp4", "a/text.mp4", "b/truncated.mp4"):
        (root / bad).write_bytes(data)
    (root / "a" / "codec.avi").write_bytes(avi)
    caplog.clear()
    assert extract.main(args) == 0
    assert "4 of 11 items to compute" in caplog.text
