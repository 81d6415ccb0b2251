"""The cache recomputes only what changed: a new split, folds, a removed video or a stage 2 on fewer
parts costs no forward pass, an added video costs its own; datasets never share item files; the
split keys the evaluation; broken videos leave the others running downstream (counting fake)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core.cache import StageError
from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors, load_view
from pipeline.learn.evaluate import evaluate
from pipeline.extract.features import extract_features
from tests.fakes import CountingBackbone

FAKE = ["dataset=folder", "backbone=fake_counting", "layer=('stats','means')", "weights=none",
        "streams=('rgb',)", "lengths=(4, 8)", "strides=(2, 4)", "steps=((1, 2), (1,))", "size=32",
        "sketch_dim=8"]


@pytest.fixture
def persons(tiny_root, tmp_path) -> Path:
    """A copy of the tiny synthetic set as a folder dataset: <class>/<class>_<k>.avi, 3 x 3."""
    root = tmp_path / "persons"
    shutil.copytree(tiny_root, root)
    (root / "dataset.json").unlink()
    return root


def configs(root: Path, cache: Path, *extra: str):
    return parse_overrides([f"root={str(root)!r}", f"cache_root={str(cache)!r}", *FAKE, *extra],
                           ExtractConfig, DescriptorConfig, EvaluateConfig)


def forwards(root: Path, cache: Path, *extra: str) -> tuple[int, object]:
    """(forward passes, result) of one stage-1 run."""
    e, _, _ = configs(root, cache, *extra)
    CountingBackbone.calls = 0
    result = extract_features(e)
    return CountingBackbone.calls, result


def test_protocol_changes_cost_no_forward_pass_and_a_new_video_costs_one(persons, tmp_path):
    cache = tmp_path / "cache"
    calls, first = forwards(persons, cache)
    assert calls > 0 and first.computed == 9
    (persons / "split.csv").write_text("path,sp1,sp2\n" + "".join(
        f"{c}/{c}_{k:03d}.avi,{'test' if k == 0 else 'train'},{'test' if k == 1 else 'train'}\n"
        for c in ("move_right", "move_left", "move_up") for k in range(3)))
    assert forwards(persons, cache)[0] == 0                                    # a second split
    (persons / "split.csv").unlink()
    assert forwards(persons, cache, "dataset_options={'folds': 3}")[0] == 0    # folds
    assert forwards(persons, cache, "dataset_options={'folds': 3, 'seed': 4}")[0] == 0
    (persons / "move_up" / "move_up_002.avi").unlink()                         # one fewer video
    calls, result = forwards(persons, cache)
    assert calls == 0 and result.folder == first.folder and result.done == 8
    shutil.copy2(persons / "move_left" / "move_left_000.avi", persons / "move_left" / "extra.avi")
    CountingBackbone.windows = 0
    calls, result = forwards(persons, cache)                                   # one more video
    assert result.computed == 1 and calls > 0 and result.folder == first.folder
    e, d, _ = configs(persons, cache, "parts=('stats',)")                      # fewer parts
    CountingBackbone.calls = 0
    out = compute_descriptors(e, d)
    manifest = json.loads((out.folder / "manifest.json").read_text())
    assert CountingBackbone.calls == 0 and out.done == 9
    assert manifest["parts"] == ["rgb/stats/mean"]


def test_an_edited_video_is_recomputed(persons, tmp_path):
    cache = tmp_path / "cache"
    forwards(persons, cache)
    video = persons / "move_up" / "move_up_001.avi"
    shutil.copy2(persons / "move_up" / "move_up_000.avi", video)              # new content, same id
    calls, result = forwards(persons, cache)
    assert result.computed == 1 and calls > 0


def test_a_copied_dataset_keeps_its_cache_and_an_edit_of_the_same_size_is_seen(persons, tmp_path):
    """Items are identified by content (pipeline.core.digests), not mtime: a copy of the dataset with
    fresh mtimes (cp without -p, a new machine) costs no forward pass; a same-size edit with its
    mtime put back costs one video."""
    cache = tmp_path / "cache"
    first = forwards(persons, cache)[1].folder
    copy = tmp_path / "elsewhere" / persons.name
    shutil.copytree(persons, copy, copy_function=shutil.copyfile)        # new mtimes, same bytes
    calls, result = forwards(copy, cache)
    assert calls == 0 and result.folder == first and result.done == 9
    video = copy / "move_up" / "move_up_001.avi"
    st, data = video.stat(), bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    CountingBackbone.windows = 0
    calls, result = forwards(copy, cache)
    assert result.computed == 1 and calls > 0


def test_the_digest_memo_reads_each_file_once_and_is_optional(persons, tmp_path, monkeypatch):
    import hashlib

    from pipeline.core import digests
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, h: reads.append(f.name) or real(f, h))
    monkeypatch.setenv("HOT_DIGEST_MEMO", str(tmp_path / "memo.sqlite"))
    video = persons / "move_up" / "move_up_001.avi"
    first = digests.file_digest(video)
    assert digests.file_digest(video) == first and len(reads) == 1      # memoised
    video.touch()                                                        # ctime changed: rehashed
    assert digests.file_digest(video) == first and len(reads) == 2
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("HOT_DIGEST_MEMO", str(tmp_path / "file" / "memo.sqlite"))
    assert digests.file_digest(video) == first and len(reads) == 3       # no memo: still works


def test_two_folder_datasets_keep_their_own_features(persons, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other"
    shutil.copytree(persons, other)
    shutil.rmtree(other / "move_up")
    a = forwards(persons, cache)[1].folder
    b = forwards(other, cache)[1].folder
    assert a != b and a.parent.name == "folder-persons" and b.parent.name == "folder-other"
    for root, n in ((persons, 9), (other, 6)):
        e, d, _ = configs(root, cache)
        ids, _, _ = load_view(compute_descriptors(e, d).folder)
        assert len(ids) == n and all((root / i).is_file() for i in ids)


def test_a_split_file_edited_in_place_is_scored_anew(persons, tmp_path):
    cache = tmp_path / "cache"
    rows = [f"{c}/{c}_{k:03d}.avi" for c in ("move_right", "move_left", "move_up") for k in range(3)]
    split = persons / "split.csv"
    split.write_text("".join(f"{r},{'test' if r.endswith('0.avi') else 'train'}\n" for r in rows))
    e, d, v = configs(persons, cache)
    extract_features(e)
    compute_descriptors(e, d)
    folder1, first = evaluate(e, d, v)
    split.write_text("".join(f"{r},{'train' if r.endswith('0.avi') else 'test'}\n" for r in rows))
    folder2, second = evaluate(e, d, v)
    assert folder1 != folder2
    assert (first["splits"]["sp1"]["n_train"], second["splits"]["sp1"]["n_train"]) == (6, 3)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_head_after_an_svm_run_does_no_stage1_or_stage2_work(persons, tmp_path, caplog):
    """`make evaluate ARGS="head=logreg"` after an SVM run: the entry point reads the cached
    descriptors, runs no forward pass, writes nothing in stage 1's or stage 2's folders, says so
    in the log, and a second run of the same head is a no-op that says so too."""
    from stages.evaluate import main as evaluate_main
    cache = tmp_path / "cache"
    argv = [f"root={str(persons)!r}", f"cache_root={str(cache)!r}", *FAKE,
            "dataset_options={'folds': 3}"]
    e, d, _ = configs(persons, cache, "dataset_options={'folds': 3}")
    features = extract_features(e).folder
    descriptors = compute_descriptors(e, d).folder
    assert evaluate_main([*argv, "head=svm"]) == 0
    before = {folder: snapshot(folder) for folder in (features, descriptors)}
    CountingBackbone.calls = 0
    caplog.clear()
    with caplog.at_level("INFO"):
        assert evaluate_main([*argv, "head=logreg"]) == 0
    assert CountingBackbone.calls == 0
    assert {folder: snapshot(folder) for folder in (features, descriptors)} == before
    assert "no stage-1 or stage-2 work" in caplog.text and "[logreg]" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        assert evaluate_main([*argv, "head=logreg"]) == 0
    assert CountingBackbone.calls == 0 and "evaluation already complete" in caplog.text
    heads = sorted(p.parent.name.split("-")[0] for p in (cache / "evaluate").rglob("results.json"))
    assert heads == ["logreg", "svm"]


def test_a_broken_video_leaves_the_others_running_downstream(persons, tmp_path):
    cache = tmp_path / "cache"
    (persons / "move_up" / "broken.avi").write_bytes(b"not a video at all" * 50)
    e, d, v = configs(persons, cache, "dataset_options={'folds': 2}")
    result = extract_features(e)
    assert list(result.failures) == ["move_up/broken.avi"]
    out = compute_descriptors(e, d)
    manifest = json.loads((out.folder / "manifest.json").read_text())
    assert out.done == 9 and manifest["missing_upstream"] == ["move_up/broken.avi"]
    folder, results = evaluate(e, d, v)
    missing = sum(r["missing_test"] + r["missing_train"] for r in results["splits"].values())
    assert missing == 2                                   # once train and once test over 2 folds
    assert "missing" in (folder / "results.md").read_text()
    e, d, v = configs(persons, cache, "dataset_options={'folds': 2}", "require_complete=True")
    with pytest.raises(StageError, match="require_complete"):
        compute_descriptors(e, d)


def test_leave_one_group_out_gives_one_column_per_group(persons, tmp_path):
    cache = tmp_path / "cache"
    e, d, v = configs(persons, cache, r"dataset_options={'group': r'_(\d+)\.avi$'}")
    extract_features(e)
    compute_descriptors(e, d)
    folder, results = evaluate(e, d, v)
    assert list(results["splits"]) == ["000", "001", "002"]
    header = (folder / "results.md").read_text().splitlines()[0]
    assert all(f" {g} " in header for g in ("000", "001", "002")) and "mean" in header
    assert all(r["n_train"] == 6 and r["n_test"] == 3 for r in results["splits"].values())


def test_idt_on_and_only_are_different_evaluations(persons, tmp_path, monkeypatch):
    import numpy as np

    from pipeline.idt import encode, stage
    cache = tmp_path / "cache"
    e, d, v = configs(persons, cache, "dataset_options={'folds': 3}")
    extract_features(e)
    compute_descriptors(e, d)
    rng = np.random.default_rng(0)
    feats = {}

    def kernel(_e, _i, train_ids, test_ids):
        x = np.stack([feats.setdefault(i, rng.normal(size=8)) for i in [*train_ids, *test_ids]])
        return x[:len(train_ids)] @ x[:len(train_ids)].T, x[len(train_ids):] @ x[:len(train_ids)].T

    monkeypatch.setattr(stage, "idt_folder", lambda *a: (tmp_path / "idt-fake", {}))
    monkeypatch.setattr(encode, "idt_kernel", kernel)
    folders = {}
    for mode in ("only", "on"):
        _, _, v = configs(persons, cache, "dataset_options={'folds': 3}", f"idt={mode!r}")
        folders[mode], results = evaluate(e, d, v)
        assert results["method"] == {"only": "IDT (Fisher vectors)", "on": "SO+MaxExp+IDT"}[mode]
    assert folders["only"] != folders["on"]
