"""The flow cache: quantisation bounds, round trips, source validation, atomic writes, folder keys."""
from __future__ import annotations

import multiprocessing
import os

import h5py
import numpy as np
import pytest

from pipeline.extract.flow import flow_to_unit
from pipeline.extract.flow_cache import LEVELS, FlowCache, dequantise, quantise


@pytest.fixture
def video(tmp_path):
    """A stand-in source file (only its path, size and mtime matter to the cache)."""
    path = tmp_path / "data" / "v.avi"
    path.parent.mkdir()
    path.write_bytes(b"not really a video")
    return path


@pytest.fixture
def cache(tmp_path) -> FlowCache:
    return FlowCache(tmp_path / "cache", "tiny", method="tvl1", size=16, crop=True)


def unit_frames(n: int, h: int = 12, w: int = 10, seed: int = 0) -> list[np.ndarray]:
    """n smooth-ish unit flow frames (H, W, 2) float32, as AlignedFlow makes them."""
    rng = np.random.default_rng(seed)
    return [flow_to_unit(rng.normal(0, 8, (h, w, 2)).astype(np.float32)) for _ in range(n)]


def write(cache: FlowCache, item_id: str, video, frames, units) -> list[np.ndarray]:
    with cache.writer(item_id, video, frames) as w:
        return [w.push(u) for u in units]


def test_quantisation_error_is_half_a_level_and_zero_flow_is_exact():
    u = np.random.default_rng(1).uniform(0, 1, 100_000).astype(np.float32)
    u[:3] = 0.0, 1.0, 0.5
    back = dequantise(quantise(u))
    assert back.dtype == np.float32
    assert np.abs(back.astype(np.float64) - u).max() <= 0.5 / LEVELS + 1e-7
    zero = flow_to_unit(np.zeros((4, 5, 2), np.float32))
    assert (quantise(zero) == 127).all() and (dequantise(quantise(zero)) == 0.5).all()
    assert quantise(np.array([-0.3, 1.7])).tolist() == [0, 254]            # clipped
    with pytest.raises(ValueError, match="NaN"):
        quantise(np.array([np.nan]))
    with pytest.raises(ValueError, match="uint8"):
        dequantise(np.array([1.0]))


def test_round_trip_gives_exactly_what_push_returned(cache, video):
    units = unit_frames(5)
    pushed = write(cache, "class_a/v.avi", video, None, units)
    for u, p in zip(units, pushed):
        assert p.shape == (12, 10, 2) and p.dtype == np.float32
        assert np.abs(p - u).max() <= 0.5 / LEVELS + 1e-7
    assert cache.has("class_a/v.avi", video, None)
    assert cache.item_file("class_a/v.avi") == cache.folder / "items" / "class_a" / "v.avi.h5"
    assert cache.num_frames("class_a/v.avi") == 5
    read = list(cache.reader("class_a/v.avi"))
    assert len(read) == 5 and all(np.array_equal(r, p) for r, p in zip(read, pushed))
    with h5py.File(cache.item_file("class_a/v.avi"), "r") as f:
        ds = f["flow"]
        assert (ds.shape, ds.dtype, ds.chunks, ds.maxshape) == ((5, 12, 10, 2), np.uint8,
                                                                 (1, 12, 10, 2), (None, 12, 10, 2))
        assert ds.compression == "gzip" and "frame_range" not in f.attrs
        assert f.attrs["path"] == str(video.resolve()) and f.attrs["complete"]


def test_reading_is_chunked_and_yields_every_frame_in_order(cache, video):
    pushed = write(cache, "long", video, (3, 203), unit_frames(200, h=4, w=6))
    frames = cache.reader("long", block=64)
    assert not isinstance(frames, list)
    read = list(frames)
    assert len(read) == 200 == cache.num_frames("long")
    assert all(np.array_equal(r, p) for r, p in zip(read, pushed))
    assert not np.shares_memory(read[0], read[1])          # each frame its own array, not a view
    assert all(np.array_equal(r, p) for r, p in zip(cache.reader("long", block=7), pushed))


def test_has_is_false_unless_complete_and_from_the_same_source(cache, video, tmp_path):
    assert not cache.has("v", video, None)                                  # missing
    write(cache, "v", video, (10, 20), unit_frames(2))
    assert cache.has("v", video, (10, 20)) and cache.has("v", str(video), [10, 20])
    assert not cache.has("v", video, None)                                  # frame range
    assert not cache.has("v", video, (10, 21))
    other = tmp_path / "data" / "w.avi"
    other.write_bytes(video.read_bytes())
    assert not cache.has("v", other, (10, 20))                              # path
    assert not cache.has("v", tmp_path / "gone.avi", (10, 20))              # source deleted
    st, data = video.stat(), video.read_bytes()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.has("v", video, (10, 20))                                  # a copy: new mtime
    edited = bytearray(data)
    edited[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(edited))                                        # content, same size
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))                    # and same mtime
    assert not cache.has("v", video, (10, 20))
    video.write_bytes(data)
    assert cache.has("v", video, (10, 20))
    video.write_bytes(b"a regenerated video")                               # size
    assert not cache.has("v", video, (10, 20))

    write(cache, "x", video, None, unit_frames(2))
    with h5py.File(cache.item_file("x"), "a") as f:
        del f.attrs["complete"]
    assert not cache.has("x", video, None)                                  # not complete
    with pytest.raises(ValueError, match="incomplete"):
        cache.reader("x")
    with pytest.raises(FileNotFoundError, match="no cached flow"):
        cache.num_frames("missing")


def test_an_exception_in_the_writer_leaves_nothing_behind(cache, video):
    with pytest.raises(RuntimeError, match="backbone crashed"):
        with cache.writer("a/v", video, None) as w:
            w.push(unit_frames(1)[0])
            raise RuntimeError("backbone crashed")
    with pytest.raises(ValueError, match="no flow frames"):
        with cache.writer("a/v", video, None):
            pass
    with pytest.raises(ValueError, match="one size"):
        with cache.writer("a/v", video, None) as w:
            w.push(unit_frames(1, h=4)[0])
            w.push(unit_frames(1, h=5)[0])
    items = cache.folder / "items"
    assert [p for p in items.rglob("*") if p.is_file()] == []
    assert not cache.has("a/v", video, None)
    write(cache, "a/v", video, None, unit_frames(2))                       # a rerun completes
    assert [p.name for p in items.rglob("*") if p.is_file()] == ["v.h5"]


def test_a_rewrite_replaces_the_item_whole(cache, video):
    write(cache, "v", video, None, unit_frames(3, seed=1))
    second = write(cache, "v", video, None, unit_frames(2, seed=2))
    read = list(cache.reader("v"))
    assert len(read) == 2 and all(np.array_equal(r, p) for r, p in zip(read, second))


def _write_in_process(cache: FlowCache, video, seed: int) -> None:
    write(cache, "shared/v", video, None, unit_frames(30, h=32, w=32, seed=seed))


def test_two_processes_writing_one_item_leave_one_whole_item(cache, video):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_in_process, args=(cache, video, seed)) for seed in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert cache.has("shared/v", video, None)
    read = np.stack(list(cache.reader("shared/v")))
    expected = [np.stack([dequantise(quantise(u)) for u in unit_frames(30, h=32, w=32, seed=s)])
                for s in (1, 2)]
    assert any(np.array_equal(read, e) for e in expected)                  # one writer's, whole
    files = [p.name for p in (cache.folder / "items").rglob("*") if p.is_file()]
    assert files == ["v.h5"]                                               # no temporary left


def test_folder_key_changes_with_method_size_crop_and_comes_back(tmp_path):
    def folder(**kw):
        params = {"method": "tvl1", "size": 224, "crop": True, **kw}
        return FlowCache(tmp_path, "hmdb51", **params).folder
    base = folder()
    assert base.parent == tmp_path / "flow" / "hmdb51" and base.name.startswith("tvl1-224-crop-")
    others = [folder(method="dis"), folder(size=256), folder(crop=False)]
    assert len({base, *others}) == 4 and others[2].name.startswith("tvl1-224-")
    assert folder() == base
    assert FlowCache(tmp_path, "ucf101", method="tvl1", size=224, crop=True).folder != base
    with pytest.raises(ValueError, match="choose one of"):
        folder(method="nope")
    with pytest.raises(ValueError, match="size"):
        folder(size=-1)
