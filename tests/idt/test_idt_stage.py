"""The IDT stage (pipeline.idt.stage, encode; stages.idt) on the tiny synthetic dataset: no work
twice, crash-safe resume, identical output on local processes, segments, the text import, broken
videos recorded, and Fisher vectors fitted on training videos only, cached per training set."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from pipeline.core.cache import StageError, item_path
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.datasets import Item, get_dataset
from pipeline.idt import IDTConfig, extract_idt_video, stage, write_idt_text
from pipeline.idt.descriptors import OUTPUT_KEYS
from pipeline.idt.encode import idt_fisher_vectors, idt_kernel
from pipeline.idt.fisher import FisherVectorEncoder
from pipeline.idt.stage import extract_idt, import_idt_text
from pipeline.core.parallel import worker_state
from stages import idt as idt_stage
from tests.conftest import TINY
from tests.test_stages import snapshot

# Small settings under which the tiny 32 px sprites give trajectories (their motion is < 1 px
# per frame): one scale, 5-frame tracks, no static or camera-motion pruning to speak of.
SMALL = ["idt_length=5", "idt_scales=1", "idt_t_cells=1", "idt_min_var=0.1", "idt_min_motion=0.0",
         "idt_gmm_components=2", "idt_gmm_samples=500"]


def configs(root, cache, *extra) -> tuple[ExtractConfig, IDTConfig]:
    args = ["dataset=synthetic", f"root={str(root)!r}", f"dataset_options={TINY!r}",
            f"cache_root={str(cache)!r}", *SMALL, *extra]
    return tuple(parse_overrides(args, ExtractConfig, IDTConfig))


@pytest.fixture
def cfgs(tiny_root, tmp_path):
    return configs(tiny_root, tmp_path / "cache")


def counting(monkeypatch, module, name):
    """Wrap module.name to count its calls."""
    calls, original = [0], getattr(module, name)

    def wrapped(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_second_run_does_no_work_and_items_hold_trajectories(cfgs, tiny_root, tmp_path, monkeypatch):
    e, i = cfgs
    result = extract_idt(e, i)
    assert result.ok and result.computed == 9 and result.done == 9
    assert result.folder.parent == tmp_path / "cache" / "idt" / "synthetic"
    assert result.folder.name.startswith("idt-") and len(result.folder.name) == 16
    item = Item("move_up/move_up_001.avi", tiny_root / "move_up/move_up_001.avi", (2,))
    with h5py.File(item_path(result.folder, item.id), "r") as f:
        assert f.attrs["complete"] and f.attrs["id"] == item.id and f.attrs["source"] == item.source()
        dims = i.dims()
        assert {k: f[k].shape[1] for k in OUTPUT_KEYS} == dims and len(f["header"]) > 10
        assert all(f[k].dtype == np.float32 for k in OUTPUT_KEYS)
        np.testing.assert_array_equal(f["hog"][()], extract_idt_video(item.path, i)["hog"])
    calls = counting(monkeypatch, stage, "extract_idt_video")
    again = extract_idt(e, i)
    assert again.skipped_run and again.folder == result.folder and calls[0] == 0
    # encoding settings and the source folder key nothing here; an extraction setting does
    _, other_encoding = configs(tiny_root, tmp_path / "cache", "idt_gmm_components=4", "idt_seed=3")
    assert extract_idt(e, other_encoding).skipped_run and calls[0] == 0
    _, longer = configs(tiny_root, tmp_path / "cache", "idt_length=6")
    assert extract_idt(e, longer).folder != result.folder and calls[0] == 9


def test_crash_in_an_item_leaves_no_partial_file_and_a_rerun_completes(cfgs, tiny_root, tmp_path,
                                                                        monkeypatch):
    e, i = cfgs
    reference = snapshot(extract_idt(e, i).folder)
    e2, i2 = configs(tiny_root, tmp_path / "crash")
    original, seen = stage.write_idt_item, [0]

    def crash_at_third(out, **kwargs):
        seen[0] += 1
        original(out, **kwargs)
        if seen[0] == 3:
            raise RuntimeError("injected crash after writing the temporary file")

    monkeypatch.setattr(stage, "write_idt_item", crash_at_third)
    first = extract_idt(e2, i2)
    assert list(first.failures.values()) == ["RuntimeError: injected crash after writing the "
                                             "temporary file"]
    assert not list((first.folder / "items").rglob(".*tmp*"))               # nothing partial
    assert len(list((first.folder / "items").rglob("*.h5"))) == 8
    assert json.loads((first.folder / "manifest.json").read_text())["failures"] == first.failures
    monkeypatch.setattr(stage, "write_idt_item", original)
    rerun = extract_idt(e2, i2)
    assert rerun.ok and rerun.computed == 1 and snapshot(rerun.folder) == reference


def test_shards_together_equal_the_single_run(cfgs, tiny_root, tmp_path):
    reference = snapshot(extract_idt(*cfgs).folder)
    r1 = extract_idt(*configs(tiny_root, tmp_path / "s", "shard=1/2"))
    assert r1.computed == 5 and not (r1.folder / "manifest.json").exists()
    r2 = extract_idt(*configs(tiny_root, tmp_path / "s", "shard=2/2"))
    assert r2.computed == 4 and (r2.folder / "manifest.json").is_file()
    assert snapshot(r2.folder) == reference


@pytest.mark.slow
def test_processes_backend_gives_identical_files(cfgs, tiny_root, tmp_path):
    reference = snapshot(extract_idt(*cfgs).folder)
    result = extract_idt(*configs(tiny_root, tmp_path / "p", "backend=processes", "workers=2"))
    assert result.ok and result.computed == 9 and snapshot(result.folder) == reference


def test_segments_are_honoured(cfgs, tiny_root, tmp_path):
    e, i = cfgs
    path = tiny_root / "move_left/move_left_000.avi"
    segment = Item("move_left/move_left_000.avi", path, (1,), frames=(3, 11))
    job = stage.IDTJob(e, i, str(tmp_path / "f"), "segment-test")
    worker_state(f"{job.folder}:{job.listing}", lambda: {segment.id: segment})
    (item_id, write), = job([segment.id])
    write(tmp_path / "seg.h5")
    whole, part = extract_idt_video(path, i), extract_idt_video(path, i, frames=(3, 11))
    with h5py.File(tmp_path / "seg.h5", "r") as f:
        assert f.attrs["frame_range"].tolist() == [3, 11] and f.attrs["source"] == segment.source()
        np.testing.assert_array_equal(f["header"][()], part["header"])
    assert part["header"][:, 0].min() >= 3 + 4 and len(part["header"]) < len(whole["header"])


def test_a_broken_video_is_recorded_and_the_others_finish(tiny_root, tmp_path, caplog):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_root, root)
    broken = root / "move_right/move_right_001.avi"
    good = broken.read_bytes()
    broken.write_text("this is not a video\n" * 50)
    e, i = configs(root, tmp_path / "cache")
    args = ["dataset=synthetic", f"root={str(root)!r}", f"dataset_options={TINY!r}",
            f"cache_root={str(tmp_path / 'cache')!r}", *SMALL]
    assert idt_stage.main(args) == 1
    manifest = json.loads(next((tmp_path / "cache" / "idt").rglob("manifest.json")).read_text())
    assert list(manifest["failures"]) == ["move_right/move_right_001.avi"]
    assert "cannot be opened" in manifest["failures"]["move_right/move_right_001.avi"]
    assert manifest["done"] == 8 and "1 items failed" in caplog.text
    broken.write_bytes(good)
    rerun = extract_idt(e, i)
    assert rerun.ok and rerun.computed == 1
    assert idt_stage.main(args) == 0


def test_text_import_round_trips(cfgs, tiny_root, tmp_path):
    e, i = cfgs
    extracted = extract_idt(e, i).folder
    text = tmp_path / "txt"
    ids = sorted(p.relative_to(extracted / "items").as_posix()[:-3]
                 for p in (extracted / "items").rglob("*.h5"))
    for n, item_id in enumerate(ids):
        with h5py.File(item_path(extracted, item_id), "r") as f:
            feats = {k: f[k][()] for k in OUTPUT_KEYS}
        (text / item_id).parent.mkdir(parents=True, exist_ok=True)
        write_idt_text(text / f"{item_id}{'.txt.gz' if n % 2 else '.txt'}", feats)
    result = import_idt_text(e, i, text)
    assert result.ok and result.computed == 9
    assert result.folder.name.startswith("import-") and result.folder.parent == extracted.parent
    for item_id in ids:
        with h5py.File(item_path(extracted, item_id), "r") as a, \
                h5py.File(item_path(result.folder, item_id), "r") as b:
            for k in OUTPUT_KEYS:
                np.testing.assert_array_equal(a[k][()], b[k][()])
    assert import_idt_text(e, i, text).skipped_run
    # a malformed line and a missing file fail their items, naming file and line
    bad = text / f"{ids[0]}.txt"
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text("".join(lines[:2]) + "1 2 3\n" + "".join(lines[2:]))
    missing = next(text.rglob("*.txt.gz"))
    missing.rename(missing.with_name("elsewhere.gz"))
    again = import_idt_text(e, i, text)
    assert len(again.failures) == 2 and again.computed == 0
    assert f"{bad}, line 3: 3 values, expected" in again.failures[ids[0]]
    gone = missing.relative_to(text).as_posix()[:-len(".txt.gz")]
    assert "no DenseTrackStab output" in again.failures[gone] and str(missing)[:-3] in again.failures[gone]
    bad.write_text("".join(lines))
    missing.with_name("elsewhere.gz").rename(missing)
    fixed = import_idt_text(e, i, text)     # both files hold their old bytes again: their
    assert fixed.ok and fixed.computed == 0   # earlier items are valid (content identity)
    # the CLI runs the import with idt_import=
    args = ["dataset=synthetic", f"root={str(tiny_root)!r}", f"dataset_options={TINY!r}",
            f"cache_root={str(tmp_path / 'cache')!r}", *SMALL, f"idt_import={str(text)!r}"]
    assert idt_stage.main(args) == 0


def read_videos(folder, ids):
    out = []
    for item_id in ids:
        with h5py.File(item_path(folder, item_id), "r") as f:
            out.append({k: f[k][()] for k in OUTPUT_KEYS})
    return out


def test_fisher_vectors_fit_on_training_videos_and_are_cached(cfgs, monkeypatch):
    e, i = cfgs
    split = get_dataset("synthetic", e.root, **TINY).splits()["sp1"]
    ids = list(split)
    train = [v for v, part in split.items() if part == "train"]
    with pytest.raises(StageError, match="run `python -m stages.idt`"):
        idt_fisher_vectors(e, i, ids, train)
    folder = extract_idt(e, i).folder
    fits = counting(monkeypatch, FisherVectorEncoder, "fit")
    encodes = counting(monkeypatch, FisherVectorEncoder, "encode")
    x = idt_fisher_vectors(e, i, ids, train)
    # K = 2 Gaussians x (mean, std) x PCA halves of traj 10, hog 32, hof 36, mbhx 32, mbhy 32
    assert x.shape == (9, 2 * 2 * (5 + 16 + 18 + 16 + 16)) and x.dtype == np.float32
    assert fits[0] == 1 and encodes[0] == 9
    # fitted on the training videos only, sorted by id (the order seeds the sample)
    oracle = FisherVectorEncoder.from_config(i).fit(read_videos(folder, sorted(train)))
    np.testing.assert_allclose(x, oracle.transform(read_videos(folder, ids)), rtol=1e-5, atol=1e-6)
    fits[0] = encodes[0] = 0                                    # the oracle's calls
    fisher = next((folder / "fisher").iterdir())
    assert (fisher / "encoder.h5").is_file() and len(list((fisher / "items").rglob("*.h5"))) == 9
    # the same training videos: nothing refitted or re-encoded, in any order, for any subset
    np.testing.assert_array_equal(idt_fisher_vectors(e, i, ids[::-1], train[::-1]), x[::-1])
    np.testing.assert_array_equal(idt_fisher_vectors(e, i, ids[:2], train), x[:2])
    assert fits[0] == 0 and encodes[0] == 0
    # other training videos: another encoder, other vectors
    other = idt_fisher_vectors(e, i, ids, train[1:])
    assert fits[0] == 1 and encodes[0] == 9 and not np.allclose(other, x)
    assert len(list((folder / "fisher").iterdir())) == 2
    # kernels for fusion: unit diagonal, test rows against the training columns
    tests = [v for v in ids if v not in train]
    k_train, k_test = idt_kernel(e, i, train, tests)
    assert k_train.shape == (6, 6) and k_test.shape == (3, 6) and fits[0] == 1
    np.testing.assert_allclose(np.diag(k_train), 1.0, rtol=1e-6)


def test_cli_takes_every_stage_key_and_refuses_unknown_ones(tiny_root, tmp_path, caplog):
    args = ["dataset=synthetic", f"root={str(tiny_root)!r}", f"dataset_options={TINY!r}",
            f"cache_root={str(tmp_path / 'cache')!r}", *SMALL, "sketch_dim=8", "head=svm"]
    assert idt_stage.main(args) == 0
    assert idt_stage.main(args + ["idt_bogus=1"]) == 2 and "unknown key 'idt_bogus'" in caplog.text
    assert idt_stage.main(args + ["idt_length=1"]) == 2 and "idt_length=1 must be >= 2" in caplog.text
