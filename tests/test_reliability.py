"""Reliability: bad videos classified, interrupted and concurrent runs, a full or read-only cache,
tampered items, untrusted video sizes, temporary-file sweeping, the results ledger written once per
split across a crash, and bit-identical reruns."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core import cache
from pipeline.extract import features
from pipeline.core import runner
from pipeline.extract import video
from pipeline.learn import evaluate as evaluate_module
from pipeline.learn import train as train_module
from pipeline.core.cache import (HOST, StageError, done_ids, h5_valid, item_path, seal, stage_lock,
                            sweep_temporary, up_to_date, writer_alive)
from pipeline.core.runner import run_items
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig, TrainConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.datasets.synthetic import write_video
from pipeline.pooling.descriptors import compute_descriptors, descriptors_dir, load_view
from pipeline.learn.evaluate import evaluate
from pipeline.learn.scoring import ledger_of
from pipeline.extract.features import extract_features, features_dir, load_dataset
from pipeline.extract.flow_cache import FlowCache
from pipeline.core.parallel import run_chunk
from pipeline.learn.train import train
from pipeline.extract.video import VideoError, VideoReader
from stages import extract as extract_stage
from tests.test_stages import snapshot

ROOT = Path(__file__).resolve().parents[1]
TWO_STREAMS = ["streams=('rgb','flow')", "flow_backbone='fake_counting_flow'", "flow='farneback'"]
CLI = "import sys, tests.fakes; from stages.extract import main; sys.exit(main(sys.argv[1:]))"


def moved(args: list[str], cache_root: Path, *extra: str) -> list[str]:
    """tiny_args with another cache_root (and extra or replaced keys)."""
    keys = {e.split("=", 1)[0] for e in extra} | {"cache_root"}
    return [a for a in args if a.split("=", 1)[0] not in keys] + [f"cache_root={str(cache_root)!r}", *extra]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob(".*") if cache.TEMPORARY.match(p.name)]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def strict(cfg: ExtractConfig) -> ExtractConfig:
    """cfg with strict_frames=True (a subclass until ExtractConfig has the field)."""
    if "strict_frames" in {f.name for f in dataclasses.fields(ExtractConfig)}:
        return dataclasses.replace(cfg, strict_frames=True)

    @dataclasses.dataclass(frozen=True)
    class Strict(ExtractConfig):
        strict_frames: bool = True
    return Strict(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ExtractConfig)})


# ---------------------------------------------------------------- bad videos, classified

@pytest.fixture
def bad_root(tmp_path) -> Path:
    """Two classes of two good 20-frame videos, a PNG named a/image.mp4 and b/cut.avi, an AVI
    cut to 60% of its bytes (its header still claims 20 frames)."""
    root = tmp_path / "videos"
    frames = np.random.default_rng(0).integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            write_video(root / cls / f"good{k}.avi", frames, fps=25, codec="FFV1")
    cv2.imwrite(str(tmp_path / "image.png"), frames[0])
    (root / "a" / "image.mp4").write_bytes((tmp_path / "image.png").read_bytes())
    avi = (root / "a" / "good0.avi").read_bytes()
    (root / "b" / "cut.avi").write_bytes(avi[: int(len(avi) * 0.6)])
    return root


def bad_args(root: Path, cache_root: Path) -> list[str]:
    return [f"root={str(root)!r}", "dataset=folder", f"cache_root={str(cache_root)!r}",
            "backbone=fake_counting", "layer=stats", "weights=none", "size=16",
            "lengths=(4,)", "strides=(4,)", "steps=(1,)"]


def test_an_image_fails_as_not_a_video_and_a_short_video_is_done_with_a_warning(bad_root, tmp_path, caplog):
    assert extract_stage.main(bad_args(bad_root, tmp_path / "c")) == 1
    folder = next((tmp_path / "c").rglob("manifest.json")).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["failures"]) == ["a/image.mp4"]
    assert "not a video (a PNG image)" in manifest["failures"]["a/image.mp4"]
    assert not item_path(folder, "a/image.mp4").exists()            # never a 1-frame "video"
    assert list(manifest["warnings"]) == ["b/cut.avi"] and manifest["done"] == 5
    with h5py.File(item_path(folder, "b/cut.avi"), "r") as f:
        claimed, decoded = int(f.attrs["claimed_frames"]), int(f.attrs["decoded_frames"])
        assert claimed == 20 and 0 < decoded < 20 and f.attrs["num_frames"] == decoded
    assert f"decoded {decoded} of the 20 frames" in manifest["warnings"]["b/cut.avi"]
    assert "1 items done with a warning" in caplog.text


def test_strict_frames_makes_a_short_video_a_failure(bad_root, tmp_path):
    cfg, = parse_overrides(bad_args(bad_root, tmp_path / "c"), ExtractConfig)
    result = extract_features(strict(cfg))
    assert set(result.failures) == {"a/image.mp4", "b/cut.avi"}
    assert "strict_frames=True" in result.failures["b/cut.avi"] and not result.warnings
    assert not item_path(result.folder, "b/cut.avi").exists()


def write_attrs(source: Path, value: float = 1.0):
    def write(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f["x"] = np.full(3, value, np.float32)
            f.attrs.update(path=str(source), source="s", complete=True)
    return write


def test_strict_frames_redoes_and_fails_an_item_a_lenient_run_kept(tmp_path):
    source = tmp_path / "video.avi"
    source.write_bytes(b"stands for a video")

    class Job:
        def __init__(self, strict_frames: bool):
            self.cfg = SimpleNamespace(strict_frames=strict_frames)

        def __call__(self, ids):
            video.record_shortfall(source, 20, 12)       # as a decode of a cut video does
            for i in ids:
                yield i, write_attrs(source)

    folder, sources = tmp_path / "stage", {"v": "s"}
    lenient = run_items(folder, ["v"], Job(False), manifest={}, sources=sources)
    assert lenient.ok and list(lenient.warnings) == ["v"]
    assert "decoded 12 of the 20 frames" in lenient.warnings["v"]
    assert up_to_date(folder, sources) and not up_to_date(folder, sources, strict=True)
    redone = run_items(folder, ["v"], Job(True), manifest={}, sources=sources)
    assert redone.computed == 0 and "strict_frames=True" in redone.failures["v"]


def test_non_finite_data_fails_its_item_only(tmp_path):
    def job(ids):
        for i in ids:
            yield i, write_attrs(tmp_path / "v", np.nan if i == "nan" else np.inf if i == "inf" else 1.0)

    results = run_chunk(job, tmp_path, ["a", "nan", "inf", "b"])
    assert results["a"] is None and results["b"] is None
    assert "holds NaN or Inf values; the item is not stored" in results["nan"]
    assert "holds NaN or Inf" in results["inf"]
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == ["a.h5", "b.h5"]


# ---------------------------------------------------------------- stale or tampered caches

def test_item_validation_checks_data_shape_and_seal(tmp_path):
    path = tmp_path / "item.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("rgb/L4_s1", data=np.ones((3, 2), np.float32)).attrs["starts"] = [0, 2, 4]
        f.attrs["complete"] = True
    assert h5_valid(path)                                       # unsealed (older runs): valid
    seal(path)
    assert h5_valid(path)
    with h5py.File(path, "r+") as f:
        f["rgb/L4_s1"][0, 0] = 2.0                              # edited after it was written
    assert not h5_valid(path)
    with h5py.File(path, "r+") as f:
        del f.attrs["digest"]
        f["rgb/L4_s1"][0, 0] = np.nan
    assert not h5_valid(path)                                   # NaN, sealed or not
    with h5py.File(path, "r+") as f:
        del f["rgb/L4_s1"]
        f.create_dataset("rgb/L4_s1", data=np.ones((2, 2), np.float32)).attrs["starts"] = [0, 2, 4]
    assert not h5_valid(path)                                   # 2 rows for 3 windows
    with pytest.raises(ValueError, match="NaN or Inf"):
        with h5py.File(tmp_path / "nan.h5", "w") as f:
            f["x"] = [np.inf]
        seal(tmp_path / "nan.h5")


def test_tampered_items_are_detected_never_used_and_redone(tiny_args):
    e, d = parse_overrides(tiny_args + ["sketch_dim=4"], ExtractConfig, DescriptorConfig)
    folder = extract_features(e).folder
    reference = snapshot(folder)
    ids = sorted(str(p.relative_to(folder / "items"))[:-3] for p in (folder / "items").rglob("*.h5"))
    truncated, nan, reshaped = (item_path(folder, i) for i in ids[:3])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with h5py.File(nan, "r+") as f:
        f["rgb/stats/mean/L4_s1"][0, 0] = np.nan
    with h5py.File(reshaped, "r+") as f:
        attrs = dict(f["rgb/stats/mean/L8_s1"].attrs)
        del f["rgb/stats/mean/L8_s1"]
        f.create_dataset("rgb/stats/mean/L8_s1", data=np.zeros((len(attrs["starts"]), 5), np.float32))
        f["rgb/stats/mean/L8_s1"].attrs.update(attrs)
    sources = load_dataset(e).sources()
    assert set(done_ids(folder, sources)) == set(ids[3:])         # never used
    rerun = extract_features(e)
    assert not rerun.skipped_run and rerun.computed == 3 and snapshot(folder) == reference
    descriptors = compute_descriptors(e, d).folder
    _, before, _ = load_view(descriptors)
    with h5py.File(item_path(descriptors, ids[4]), "r+") as f:
        f["descriptor"][0] = np.inf
    again = compute_descriptors(e, d)
    assert again.computed == 1 and np.array_equal(load_view(descriptors)[1], before)


def test_stage2_builds_its_view_before_its_manifest(tiny_args, monkeypatch):
    """A kill as the manifest is written leaves the view already there: a manifest never claims
    a folder whose view is missing, and the rerun writes the manifest and nothing else."""
    e, d = parse_overrides(tiny_args + ["sketch_dim=4"], ExtractConfig, DescriptorConfig)
    assert extract_features(e).ok
    write_json = runner.write_json

    def killed_at_the_manifest(path: Path, data) -> None:
        if path.name == cache.MANIFEST:
            raise RuntimeError("killed")
        write_json(path, data)

    monkeypatch.setattr(runner, "write_json", killed_at_the_manifest)
    with pytest.raises(RuntimeError, match="killed"):
        compute_descriptors(e, d)
    monkeypatch.undo()
    folder, _ = descriptors_dir(e, d)
    assert not (folder / cache.MANIFEST).exists()
    ids, view, _ = load_view(folder)
    rerun = compute_descriptors(e, d)
    assert rerun.ok and rerun.computed == 0 and (folder / cache.MANIFEST).is_file()
    assert load_view(folder)[0] == ids and np.array_equal(load_view(folder)[1], view)


# ---------------------------------------------------------------- temporary files

def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    items = tmp_path / "items" / "cls"
    items.mkdir(parents=True)
    dead = dead_pid()
    files = {"dead": items / f".a.h5.tmp-{dead}-{dead}@{HOST}", "legacy": items / f".b.h5.tmp-{dead}",
             "live": items / f".c.h5.tmp-{os.getpid()}-1@{HOST}",
             "elsewhere": items / f".d.h5.tmp-{dead}-1@another-host", "lock": tmp_path / ".lock"}
    for path in files.values():
        path.write_bytes(b"partial")
    assert not writer_alive(files["dead"]) and writer_alive(files["live"])
    assert writer_alive(files["elsewhere"])                     # cannot be checked from here
    assert sweep_temporary(tmp_path, before=time.time() - 60) == []   # newer than the run
    assert sorted(sweep_temporary(tmp_path)) == sorted([files["dead"], files["legacy"]])
    assert all(files[k].exists() for k in ("live", "elsewhere", "lock"))


def test_a_completed_run_sweeps_killed_writers_files_in_its_folders(tiny_args):
    cfg, = parse_overrides(tiny_args + TWO_STREAMS, ExtractConfig)
    dataset = load_dataset(cfg)
    folder = features_dir(cfg, dataset)
    flow = FlowCache(cfg.cache_root, dataset.identity, method="farneback", size=32, crop=True).folder
    item = "move_up/move_up_000.avi"
    dead = dead_pid()
    stale = [item_path(folder, item).with_name(f".move_up_000.avi.h5.tmp-{dead}"),
             item_path(flow, item).with_name(f".move_up_000.avi.h5.tmp-{dead}"),   # a killed flow writer
             folder / f".manifest.json.tmp-{dead}-7@{HOST}"]
    live = item_path(folder, item).with_name(f".other.h5.tmp-{os.getpid()}-1@{HOST}")
    for path in stale + [live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89HDF partial")
    assert extract_features(cfg).ok
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()
    assert temporaries(Path(cfg.cache_root)) == []


def run_slowly(args: list[str], env_delay: str = "0.3") -> subprocess.Popen:
    env = {**os.environ, "FAKE_DELAY": env_delay, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_cleanly_and_a_second_run_names_the_holder(tiny_args, tmp_path,
                                                                           signum, code):
    args = moved(tiny_args, tmp_path / "c", *TWO_STREAMS)
    cfg, = parse_overrides(args, ExtractConfig)
    reference = snapshot(extract_features(dataclasses.replace(cfg, cache_root=str(tmp_path / "r"))).folder)
    run = run_slowly(args)
    try:
        wait_for(lambda: temporaries(tmp_path / "c"))         # mid-item: a temporary file is open
        with pytest.raises(StageError, match=rf"another run \(pid {run.pid} on {HOST}, started"):
            extract_features(cfg)
        run.send_signal(signum)
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == code, err[-2000:]
    assert f"stopped by {signal.Signals(signum).name}: temporary files removed" in err
    assert temporaries(tmp_path / "c") == []
    assert extract_features(cfg).ok                           # the lock went with the process
    assert snapshot(features_dir(cfg, load_dataset(cfg))) == reference


def test_a_second_run_of_the_same_stage_refuses_naming_the_holder(tiny_args):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    folder = features_dir(cfg, load_dataset(cfg))
    with stage_lock(folder):
        with pytest.raises(StageError, match=rf"being written by another run \(pid {os.getpid()} "
                                             rf"on {HOST}, started \d{{4}}-"):
            extract_features(cfg)
    assert extract_features(cfg).ok


@pytest.mark.slow
def test_two_configurations_run_side_by_side_on_one_cache(tiny_args, tmp_path):
    runs = [moved(tiny_args, tmp_path / "shared", *TWO_STREAMS, f"pool={p!r}") for p in ("mean", "max")]
    references = [snapshot(extract_features(parse_overrides(moved(a, tmp_path / f"alone{k}"),
                                                            ExtractConfig)[0]).folder)
                  for k, a in enumerate(runs)]
    procs = [run_slowly(a, "0.02") for a in runs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for args, reference in zip(runs, references):
        cfg, = parse_overrides(args, ExtractConfig)
        assert snapshot(features_dir(cfg, load_dataset(cfg))) == reference
    assert temporaries(tmp_path / "shared") == []


# ---------------------------------------------------------------- disk full, read-only cache

@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_cache_stops_with_the_path_and_keeps_earlier_work(tiny_args, monkeypatch,
                                                                             caplog, code, text):
    cfg, = parse_overrides(tiny_args, ExtractConfig)
    original, calls = features.write_item, [0]

    def failing(out, **kwargs):
        calls[0] += 1
        original(out, **kwargs)                                 # a partial file is on disk
        if calls[0] == 3:
            raise OSError(code, text)

    monkeypatch.setattr(features, "write_item", failing)
    assert extract_stage.main(tiny_args) == 2
    assert re.search(r"cannot write \S+/items/\S+\.h5: .*" + text + r".*full or read-only", caplog.text)
    folder = features_dir(cfg, load_dataset(cfg))
    written = list((folder / "items").rglob("*.h5"))
    assert len(written) == 2 and all(h5_valid(p) for p in written)
    assert temporaries(folder) == [] and not (folder / "manifest.json").exists()
    monkeypatch.setattr(features, "write_item", original)
    assert extract_features(cfg).computed == 7


@pytest.fixture
def tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (tested with a patched writer otherwise)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_then_read_only_disk(tiny_args, tmpfs, tmp_path):
    cfg, = parse_overrides(moved(tiny_args, tmpfs), ExtractConfig)
    reference = snapshot(extract_features(dataclasses.replace(cfg, cache_root=str(tmp_path / "r"))).folder)
    with pytest.raises(StageError, match=r"cannot write \S+\.h5.*No space left on device"):
        extract_features(cfg)
    folder = features_dir(cfg, load_dataset(cfg))
    kept = list((folder / "items").rglob("*.h5"))
    assert 0 < len(kept) < 9 and all(h5_valid(p) for p in kept) and temporaries(tmpfs) == []
    subprocess.run(["mount", "-o", "remount,size=4m,ro", str(tmpfs)], check=True)
    with pytest.raises(StageError, match=rf"cannot write to the cache folder {re.escape(str(folder))}: "
                                         rf"Read-only file system"):
        extract_features(cfg)
    assert all(h5_valid(p) for p in kept)
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert extract_features(cfg).computed == 9 - len(kept) and snapshot(folder) == reference


# ---------------------------------------------------------------- the results ledger

def crash_after_the_ledger_record(monkeypatch, module, done_file: str) -> None:
    """Make module.write_json raise when it writes a split's `done_file` (the split's record is
    already committed to the ledger then): a SIGKILL at that moment, without the kill."""
    original = module.write_json

    def crashing(path, obj):
        if Path(path).name == done_file:
            raise KeyboardInterrupt(f"killed before {path} was written")
        original(path, obj)
    monkeypatch.setattr(module, "write_json", crashing)


def crash_in_the_first_ledger_append(monkeypatch) -> None:
    """The first Ledger.append dies (a kill after the split's file, before its record)."""
    from pipeline.results.ledger import Ledger
    original, calls = Ledger.append, []

    def crashing(self, record):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed before the ledger record")
        return original(self, record)
    monkeypatch.setattr(Ledger, "append", crashing)


@pytest.mark.parametrize("kill", ["split file", "ledger record"])
def test_a_crash_around_a_ledger_record_leaves_one_record_per_split_evaluate(tiny_args, monkeypatch,
                                                                            kill):
    e, d, v = parse_overrides(tiny_args + ["sketch_dim=4"], ExtractConfig, DescriptorConfig,
                              EvaluateConfig)
    extract_features(e)
    compute_descriptors(e, d)
    if kill == "split file":
        crash_after_the_ledger_record(monkeypatch, evaluate_module, "sp1.json")
    else:
        crash_in_the_first_ledger_append(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(e, d, v)
    monkeypatch.undo()
    _, results = evaluate(e, d, v)
    records = ledger_of(e, v).records(config_key=results["config_key"])
    assert sorted(r["split"] for r in records) == sorted(results["splits"])


@pytest.mark.parametrize("kill", ["split file", "ledger record"])
def test_a_crash_around_a_ledger_record_leaves_one_record_per_split_train(tiny_args, monkeypatch,
                                                                         kill):
    e, d, v, t = parse_overrides(tiny_args + ["sketch_dim=8", "attention=hot", "device=cpu",
                                              "max_epochs=2", "patience=1", "weight_decay=0"],
                                 ExtractConfig, DescriptorConfig, EvaluateConfig, TrainConfig)
    extract_features(e)
    if kill == "split file":
        crash_after_the_ledger_record(monkeypatch, train_module, train_module.RESULT_FILE)
    else:
        crash_in_the_first_ledger_append(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(e, d, v, t)
    monkeypatch.undo()
    _, results = train(e, d, v, t)
    records = ledger_of(e, v).records(config_key=results["config_key"])
    assert sorted(r["split"] for r in records) == sorted(results["splits"])


# ---------------------------------------------------------------- untrusted videos

def test_images_are_not_videos(tmp_path):
    image = np.zeros((24, 24, 3), np.uint8)
    for ext, name in ((".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP")):
        cv2.imwrite(str(tmp_path / f"x{ext}"), image)
        (tmp_path / f"{name}.mp4").write_bytes((tmp_path / f"x{ext}").read_bytes())
        with pytest.raises(VideoError, match=rf"{name}.mp4: not a video \(a {name} image\)"):
            list(VideoReader(tmp_path / f"{name}.mp4"))


def test_frame_size_and_count_are_bounded(tmp_path, monkeypatch):
    write_video(tmp_path / "square.avi", np.zeros((12, 32, 32, 3), np.uint8), fps=25, codec="FFV1")
    write_video(tmp_path / "strip.avi", np.zeros((3, 8, 64, 3), np.uint8), fps=25, codec="FFV1")
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 600)
    with pytest.raises(VideoError, match=r"square.avi: frames of 32x32 px exceed the limit of 600"):
        list(VideoReader(tmp_path / "square.avi"))
    assert len(list(VideoReader(tmp_path / "strip.avi"))) == 3                   # 512 px fit
    with pytest.raises(VideoError, match=r"strip.avi: resized frames of 256x32 px exceed"):
        list(VideoReader(tmp_path / "strip.avi", size=32, crop=False))
    monkeypatch.setattr(video, "MAX_FRAMES", 2)
    with pytest.raises(VideoError, match=r"strip.avi: more than 2 frames"):
        list(VideoReader(tmp_path / "strip.avi"))


# ---------------------------------------------------------------- determinism

@pytest.mark.slow
def test_same_config_and_seed_give_bit_identical_descriptors_and_accuracies(tiny_args, tmp_path):
    outputs = []
    for name, extra in (("a", []), ("b", []), ("c", ["backend=processes", "workers=2"])):
        e, d, v = parse_overrides(moved(tiny_args, tmp_path / name, "sketch_dim=8", "order=3", *extra),
                                  ExtractConfig, DescriptorConfig, EvaluateConfig)
        extract_features(e)
        ids, x, _ = load_view(compute_descriptors(e, d).folder)
        outputs.append((ids, x, evaluate(e, d, v)[1]["scores"]))
    (ids, x, scores), *others = outputs
    for ids2, x2, scores2 in others:
        assert ids2 == ids and x2.tobytes() == x.tobytes() and scores2 == scores


# ---------------------------------------------------------------- integrity (issue 23)

def flip_data_bytes(path: Path, dataset: str, n: int = 8) -> None:
    """XOR n bytes inside `dataset`'s stored data (contiguous layout), restoring the mtime."""
    st = path.stat()
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    assert offset is not None, f"{dataset} is not stored contiguously"
    with open(path, "r+b") as fh:
        fh.seek(offset)
        block = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in block))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_bit_rot_under_a_restored_mtime_is_named_and_only_that_item_redone(tiny_args, caplog):
    """8 data bytes of one stage-1 item flipped, size and mtime unchanged: `extract` no longer
    says "nothing to do", it names the file and recomputes that item only."""
    e, = parse_overrides(tiny_args, ExtractConfig)
    folder = extract_features(e).folder
    reference = snapshot(folder)
    sources = load_dataset(e).sources()
    assert up_to_date(folder, sources)
    path = sorted((folder / "items").rglob("*.h5"))[0]
    flip_data_bytes(path, "rgb/stats/mean/L4_s1")
    caplog.clear()
    assert not up_to_date(folder, sources)
    assert str(path) in caplog.text and "damaged" in caplog.text
    rerun = extract_features(e)
    assert not rerun.skipped_run and rerun.computed == 1 and snapshot(folder) == reference
    assert extract_features(e).skipped_run


def test_a_damaged_view_is_named_refused_by_evaluate_and_rebuilt_by_descriptors(tiny_args, caplog):
    """Rows of descriptors.h5 overwritten (mtime restored): evaluate refuses naming the file,
    descriptors rebuilds the view from its items (no item recomputed), evaluate then runs."""
    e, d, v = parse_overrides(tiny_args + ["sketch_dim=4"], ExtractConfig, DescriptorConfig,
                              EvaluateConfig)
    extract_features(e)
    folder = compute_descriptors(e, d).folder
    _, before, _ = load_view(folder)
    view = folder / "descriptors.h5"
    st = view.stat()
    with h5py.File(view, "r+") as f:
        f["descriptors"][0] = f["descriptors"][1]
    os.utime(view, ns=(st.st_atime_ns, st.st_mtime_ns))
    caplog.clear()
    with pytest.raises(StageError, match="make descriptors"):
        evaluate(e, d, v)
    assert str(view) in caplog.text
    again = compute_descriptors(e, d)
    assert not again.skipped_run and again.computed == 0
    assert np.array_equal(load_view(folder)[1], before)
    assert evaluate(e, d, v)[1]["scores"]


def test_json_files_carry_a_checksum_verified_on_read(tmp_path, caplog):
    path = tmp_path / "result.json"
    cache.write_json(path, {"score": 0.5, "n": [1, 2]})
    assert cache.read_json(path) == {"score": 0.5, "n": [1, 2]}
    path.write_text(path.read_text().replace("0.5", "0.9"))
    with pytest.raises(cache.CorruptFileError, match=re.escape(str(path))):
        cache.read_json(path)
    assert not cache.json_intact(path) and str(path) in caplog.text
    path.write_text("{not json")
    with pytest.raises(cache.CorruptFileError, match="not valid JSON"):
        cache.read_json(path)


def fitted_svm(tmp_path: Path) -> Path:
    from pipeline.learn.heads import SVMHead
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 6)), np.repeat([0, 1, 2], 10)
    return SVMHead(C=1.0).fit(X, y).save(tmp_path / "head")


def test_a_saved_head_with_nan_garbage_or_a_changed_file_is_refused_naming_the_file(tmp_path):
    from pipeline.learn.heads import load_head
    from pipeline.learn.persistence import ARRAYS_FILE, PARAMS_FILE
    folder = fitted_svm(tmp_path)
    head = load_head(folder)
    head.coef_[0, 0] = np.nan                      # a head saved with NaN coefficients
    head.save(folder)
    with pytest.raises(cache.CorruptFileError, match=r"arrays\.npz: coef_ holds 1 NaN or Inf"):
        load_head(folder)
    folder = fitted_svm(tmp_path)
    (folder / ARRAYS_FILE).write_bytes(b"garbage")
    with pytest.raises(cache.CorruptFileError, match=r"arrays\.npz: its content does not match"):
        load_head(folder)
    info = json.loads((folder / PARAMS_FILE).read_text())   # a head saved before checksums
    info.pop("files"), info.pop("checksum")
    (folder / PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(cache.CorruptFileError, match=r"arrays\.npz: is not the head's arrays"):
        load_head(folder)
    folder = fitted_svm(tmp_path)
    info = json.loads((folder / PARAMS_FILE).read_text())
    info["classes"] = info["classes"][:2]          # classes shortened, checksum left stale
    (folder / PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(cache.CorruptFileError, match=r"params\.json: its content does not match"):
        load_head(folder)
    info.pop("checksum")                           # ... or dropped: the count is checked
    (folder / PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(cache.CorruptFileError, match=r"lists 2 classes for 3 rows"):
        load_head(folder)


def test_a_pickled_state_dict_is_refused_without_unsafe_advice(tmp_path):
    import torch
    from pipeline.learn.heads import LinearHead, load_head
    from pipeline.learn.persistence import PARAMS_FILE, STATE_FILE
    rng = np.random.default_rng(0)
    folder = LinearHead(max_epochs=2, device="cpu").fit(
        rng.normal(size=(30, 6)).astype(np.float32), np.repeat([0, 1, 2], 10)).save(tmp_path / "h")
    torch.save({"weight": SimpleNamespace(x=1)}, folder / STATE_FILE)
    info = json.loads((folder / PARAMS_FILE).read_text())
    info.pop("files"), info.pop("checksum")
    (folder / PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(cache.CorruptFileError) as err:
        load_head(folder)
    assert "state.pt" in str(err.value) and "could run code" in str(err.value)
    assert "weights_only=False" not in str(err.value)


def test_unknown_keys_suggest_the_nearest_and_empty_root_is_refused():
    with pytest.raises(ValueError, match="did you mean lengths"):
        parse_overrides(["lenghts=(4,)"], ExtractConfig)
    with pytest.raises(ValueError, match="root= is empty"):
        parse_overrides(["root="], ExtractConfig)


def test_help_gives_each_keys_meaning_and_the_dataset_preset():
    from stages.common import CONFIGS, help_text
    text = help_text(["dataset=hmdb51"], CONFIGS[:2])
    assert "subsequence lengths L (frames)" in text                    # the comment beside it
    assert "lengths=(24, 32, 48, 64) (preset)" in text
    assert "sketch_dim=" in text and "Defaults shown for dataset=hmdb51" in text
    out = subprocess.run([sys.executable, "-m", "stages.sweep", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "grid=" in out.stdout and "sketch_dim=" in out.stdout


def test_a_ledger_that_is_not_sqlite_and_a_cache_root_that_is_a_file_exit_2(tiny_args, tmp_path, caplog):
    from stages import report
    garbage = tmp_path / "ledger.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    assert report.main(moved(tiny_args, tmp_path / "c") + [f"ledger={str(garbage)!r}"]) == 2
    assert str(garbage) in caplog.text and "Traceback" not in caplog.text
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    caplog.clear()
    assert extract_stage.main(moved(tiny_args, blocked)) == 2
    assert "is not writable" in caplog.text


def test_check_dataset_probes_files_without_decoding(tmp_path):
    from pipeline.datasets.check import probe_file, validate
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        write_video(root / cls / "good.avi", np.zeros((4, 16, 16, 3), np.uint8), fps=25, codec="FFV1")
    (root / "a" / "empty.avi").write_bytes(b"")
    (root / "a" / "text.avi").write_text("hello, I am not a video")
    (root / "b" / "dangling.avi").symlink_to(root / "missing.avi")
    (root / "b" / "loop.avi").symlink_to(root / "b" / "loop.avi")
    assert probe_file(root / "a" / "good.avi") is None
    assert "0 bytes" in probe_file(root / "a" / "empty.avi")
    assert "not a video container" in probe_file(root / "a" / "text.avi")
    assert "dangling symlink" in probe_file(root / "b" / "dangling.avi")
    assert "symlink loop" in probe_file(root / "b" / "loop.avi")
    report = validate("folder", root, strict=False)
    assert "problems: 4\n" in report and "symlink loop" in report, report
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for k in range(3):
        write_video(one / "only" / f"v{k}.avi", np.zeros((4, 16, 16, 3), np.uint8), fps=25, codec="FFV1")
    with pytest.raises(Exception, match="at least 2"):
        validate("folder", one)


def test_descriptors_refuse_what_cannot_fit_and_estimate_before_work(tmp_path, caplog):
    from pipeline.pooling.descriptors import check_size, size_estimate
    so = DescriptorConfig(order=2, sketch_dim=100000)
    with pytest.raises(StageError, match="GiB of memory"):
        check_size(tmp_path, so, 100000, 120, 1)
    to = DescriptorConfig(order=3, sketch_dim=256)
    memory, disk = size_estimate(to, 256, 120)
    assert 2.5e9 < disk < 3e9                       # the 2.6 GB the demo's TO wrote unannounced
    check_size(tmp_path, to, 256, 120, 1)
    assert "will write about 2.5 GiB for 120 videos" in caplog.text


def test_training_reports_progress_in_logs(caplog):
    import torch
    from pipeline.learn.training import train_early_stopping
    module = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    loss = lambda epoch: [torch.nn.functional.cross_entropy(module(x), y)]  # noqa: E731
    import pipeline.learn.training as training
    from pipeline.core.progress import Progress
    caplog.set_level("INFO", logger=training.log.name)
    original = Progress.__init__
    try:
        Progress.__init__ = lambda self, *a, **k: original(self, *a, **{**k, "every": 0.0})
        train_early_stopping(module, loss, lambda: 1.0, lr=0.1, weight_decay=0.0, max_epochs=3,
                             patience=5)
    finally:
        Progress.__init__ = original
    assert "1/3 epochs: loss" in caplog.text and "validation loss 1.0000" in caplog.text


def test_a_trained_split_writes_its_head_before_its_result(tiny_args):
    """result.json marks a split done: a head written after it would be redone by a kill
    between the two (the failing `make chaos` gate)."""
    args = tiny_args + ["sketch_dim=4", "attention=hot", "device=cpu", "max_epochs=2",
                        "patience=1", "weight_decay=0", "head=svm"]
    e, d, v, t = parse_overrides(args, ExtractConfig, DescriptorConfig, EvaluateConfig, TrainConfig)
    extract_features(e)
    folder, _ = train(e, d, v, t)
    for result in folder.glob("*/result.json"):
        heads = [p for p in (result.parent / "heads").rglob("*") if p.is_file()]
        assert heads and all(p.stat().st_mtime_ns <= result.stat().st_mtime_ns for p in heads)


def test_a_cached_evaluation_prints_the_name_this_run_gives(tiny_args, capsys):
    from stages import evaluate as evaluate_stage
    args = tiny_args + ["sketch_dim=4"]
    e, d = parse_overrides(args, ExtractConfig, DescriptorConfig)
    extract_features(e)
    compute_descriptors(e, d)
    assert evaluate_stage.main(args + ["name='first name'"]) == 0
    assert "first name" in capsys.readouterr().out
    assert evaluate_stage.main(args + ["name='second name'"]) == 0     # cached: no work
    out = capsys.readouterr().out
    assert "second name" in out and "first name" not in out


def test_the_demo_set_says_it_runs_with_weights_none():
    from stages.common import demo_hint
    e, = parse_overrides(["dataset=synthetic", "weights=hub"], ExtractConfig)
    assert "weights=none" in demo_hint(e, RuntimeError("no flow weights for inception_i3d_flow"))
    assert demo_hint(e, RuntimeError("disk full")) == ""
