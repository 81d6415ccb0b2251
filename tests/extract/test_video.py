"""Window sampling arithmetic, the streaming cutter and OpenCV decoding."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from pipeline.datasets.synthetic import write_video
from pipeline.extract.video import (VideoError, VideoReader, WindowCutter, WindowGroup, cut_windows,
                            window_indices, window_starts)


def test_starts_follow_the_authors_rule():
    g = WindowGroup(length=4, stride=3, step=2)           # span 7
    assert g.span == 7
    # 0, 3, 6, 9, 12 fit (12 + 7 = 19 <= 20); 19 < 20, so one more window ends on the last frame.
    assert window_starts(20, g).tolist() == [0, 3, 6, 9, 12, 13]
    # exact fit: no extra window
    assert window_starts(19, g).tolist() == [0, 3, 6, 9, 12]
    starts, idx = window_indices(20, g)
    assert idx[0].tolist() == [0, 2, 4, 6] and idx[-1].tolist() == [13, 15, 17, 19]


def test_video_shorter_than_one_span_uses_all_frames_evenly():
    g = WindowGroup(length=8, stride=4, step=1)
    starts, idx = window_indices(5, g)
    assert starts.tolist() == [0]
    assert idx.shape == (1, 8) and set(idx[0].tolist()) == set(range(5))
    assert idx[0].tolist() == sorted(idx[0].tolist())     # repeats are in place, not appended
    # enough frames for L but not for the span at step 3: evenly spaced over the whole video
    starts, idx = window_indices(10, WindowGroup(length=4, stride=2, step=3))
    assert idx[0].tolist() == [0, 3, 6, 9]
    starts, idx = window_indices(9, WindowGroup(length=4, stride=2, step=3))
    assert idx[0][0] == 0 and idx[0][-1] == 8


def test_invalid_frame_count():
    with pytest.raises(ValueError, match="num_frames=0"):
        window_starts(0, WindowGroup(4, 2, 1))


@pytest.mark.parametrize("num_frames", [1, 3, 7, 8, 16, 23, 40])
def test_streaming_cutter_yields_exactly_the_windows_of_the_arithmetic(num_frames):
    groups = [WindowGroup(L, S, s) for L, S, s in itertools.product((2, 4), (1, 3), (1, 2, 3))]
    frames = (np.full((2, 2, 1), f, np.int64) for f in range(num_frames))   # a frame holds its index
    got: dict[int, list[tuple[int, list[int]]]] = {gi: [] for gi in range(len(groups))}
    for gi, start, clip in cut_windows(frames, groups):
        got[gi].append((start, clip[:, 0, 0, 0].tolist()))
    for gi, g in enumerate(groups):
        starts, idx = window_indices(num_frames, g)
        assert got[gi] == [(int(s), i.tolist()) for s, i in zip(starts, idx)], g


def test_cutter_keeps_only_the_longest_span_in_memory():
    groups = [WindowGroup(4, 4, 2), WindowGroup(3, 5, 1)]       # longest span 7
    cutter, largest, count = WindowCutter(groups), 0, 0
    for f in range(1000):
        count += len(cutter.push(np.full((1, 1, 1), f)))
        largest = max(largest, len(cutter.ring))
    count += len(cutter.finish())
    assert largest <= 7
    assert count == sum(len(window_starts(1000, g)) for g in groups)


def _write(path, frames):
    write_video(path, frames, fps=25, codec="FFV1")


def test_reader_decodes_lossless_frames_exactly_and_counts_them(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 24, 32, 3), dtype=np.uint8)
    _write(tmp_path / "v.avi", frames)
    reader = VideoReader(tmp_path / "v.avi")
    got = np.stack(list(reader))
    assert reader.decoded == 9
    np.testing.assert_array_equal(got, frames[..., ::-1])          # BGR on disk, RGB out
    part = np.stack(list(VideoReader(tmp_path / "v.avi", frames=(3, 6))))
    np.testing.assert_array_equal(part, frames[3:6, ..., ::-1])


def test_reader_resizes_short_side_and_crops(tmp_path):
    _write(tmp_path / "v.avi", np.zeros((2, 24, 48, 3), np.uint8))
    frame = next(iter(VideoReader(tmp_path / "v.avi", size=16, crop=True)))
    assert frame.shape == (16, 16, 3)
    frame = next(iter(VideoReader(tmp_path / "v.avi", size=16, crop=False)))
    assert frame.shape == (16, 32, 3)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        list(VideoReader(tmp_path / "missing.avi"))
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.avi: empty file"):
        list(VideoReader(tmp_path / "empty.avi"))
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 50)
    with pytest.raises(VideoError, match="text.mp4"):
        list(cut_windows(VideoReader(tmp_path / "text.mp4"), [WindowGroup(2, 1, 1)]))
    _write(tmp_path / "short.avi", np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(VideoError, match=r"short.avi: frame range \[2, 9\) passes the end"):
        list(VideoReader(tmp_path / "short.avi", frames=(2, 9)))


@pytest.mark.shared_data
def test_real_clips_decode(shared_data):
    clips = sorted((shared_data / "videos").rglob("*.mp4"))[:3] + \
        sorted((shared_data / "videos").rglob("*.avi"))[:1]
    assert clips, "no real clips found"
    for clip in clips:
        reader = VideoReader(clip, size=64, crop=True)
        windows = list(cut_windows(reader, [WindowGroup(8, 8, 2)]))
        meta = reader.metadata()
        assert reader.decoded > 8 and windows, clip
        assert abs(reader.decoded - meta["frame_count"]) <= 2, (clip, meta)
        assert windows[0][2].shape == (8, 64, 64, 3)
        assert cv2.mean(windows[0][2][0])[0] >= 0


def test_frame_range_of_a_long_lossy_video_matches_sequential_decoding(tmp_path):
    from pipeline.datasets.synthetic import MOTIONS, render_video
    video = render_video(MOTIONS["move_right"], np.random.default_rng(0), frames=120, size=32)
    write_video(tmp_path / "long.mp4", video, fps=25, codec="mp4v")      # keyframes every few frames
    sequential = np.stack(list(VideoReader(tmp_path / "long.mp4")))
    for start, end in [(0, 3), (37, 45), (100, 120)]:
        reader = VideoReader(tmp_path / "long.mp4", frames=(start, end))
        np.testing.assert_array_equal(np.stack(list(reader)), sequential[start:end])
        assert reader.decoded == end - start
    with pytest.raises(VideoError, match=r"long.mp4: frame range (starts at 130|\[130, 140\))"):
        list(VideoReader(tmp_path / "long.mp4", frames=(130, 140)))


def test_each_frame_is_decoded_once_whatever_the_number_of_groups(tmp_path):
    _write(tmp_path / "v.avi", np.zeros((40, 16, 16, 3), np.uint8))
    for groups in ([WindowGroup(8, 4, 1)],
                   [WindowGroup(L, 4, s) for L in (4, 8, 16) for s in (1, 2, 3)]):
        reader = VideoReader(tmp_path / "v.avi")
        n_windows = sum(1 for _ in cut_windows(reader, groups))
        assert reader.decoded == 40
        assert n_windows == sum(len(window_starts(40, g)) for g in groups)
