"""Backends: items written atomically wherever they run, failures isolated, and local processes
or a Dask LocalCluster with two workers giving exactly the single-process output (stages 1, 2)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core.cache import item_path
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors, load_view
from pipeline.extract.features import extract_features
from pipeline.core.parallel import chunks, run_chunk, run_job
from tests.test_stages import snapshot


def write_value(value):
    def write(path):
        with h5py.File(path, "w") as f:
            f.attrs.update(value=value, complete=True)
    return write


def broken_write(path):
    path.write_bytes(b"half an item")
    raise OSError("disk full")


def job(ids):
    for i in ids:
        if i == "bad":
            yield i, ValueError("cannot decode bad")
        elif i == "unwritable":
            yield i, broken_write
        elif i == "crash":
            raise RuntimeError("the model could not be built")
        else:
            yield i, write_value(len(i))


def test_run_chunk_writes_items_and_isolates_failures(tmp_path):
    results = run_chunk(job, tmp_path, ["a", "bad", "bb", "unwritable", "crash", "later"])
    assert results["a"] is None and results["bb"] is None
    assert results["bad"] == "ValueError: cannot decode bad"
    assert results["unwritable"] == "OSError: disk full"
    assert results["crash"] == results["later"] == "RuntimeError: the model could not be built"
    with h5py.File(item_path(tmp_path, "bb"), "r") as f:
        assert f.attrs["value"] == 2
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == ["a.h5", "bb.h5"]  # no partials


def test_items_a_job_forgets_are_failures(tmp_path):
    def forgetful(ids):
        yield ids[0], write_value(1)

    assert run_chunk(forgetful, tmp_path, ["a", "b"]) == {
        "a": None, "b": "the job ended without producing this item"}


def test_chunks_cover_ids_in_order():
    ids = [str(i) for i in range(23)]
    parts = chunks(ids, workers=2)
    assert sum(parts, []) == ids and len(parts) == 8
    assert chunks([], 2) == [] and chunks(["x"], 4) == [["x"]]


def test_processes_backend_runs_a_job(tmp_path):
    failures = run_job(job, tmp_path, ["a", "bad", "ccc"], backend="processes", workers=2)
    assert failures == {"bad": "ValueError: cannot decode bad"}
    with h5py.File(item_path(tmp_path, "ccc"), "r") as f:
        assert f.attrs["value"] == 3


def test_unknown_backend_is_named(tiny_args):
    with pytest.raises(ValueError, match="backend='spark'.*serial"):
        parse_overrides(tiny_args + ["backend=spark"], ExtractConfig)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_backend_output_equals_the_single_process_run(tiny_args, tmp_path, backend):
    e, d = parse_overrides(tiny_args + ["sketch_dim=8", "order=3"], ExtractConfig, DescriptorConfig)
    features = extract_features(e).folder
    ids, reference, _ = load_view(compute_descriptors(e, d).folder)
    args = [a for a in tiny_args if not a.startswith("cache_root")] + [
        f"cache_root={str(tmp_path / backend)!r}", f"backend={backend}", "workers=2", "sketch_dim=8",
        "order=3"]
    e2, d2 = parse_overrides(args, ExtractConfig, DescriptorConfig)
    result = extract_features(e2)
    assert result.ok and result.computed == 9
    assert snapshot(result.folder) == snapshot(features)
    ids2, descriptors, _ = load_view(compute_descriptors(e2, d2).folder)
    assert ids2 == ids and np.array_equal(descriptors, reference)


def _serial_and_processes(tiny_args, tmp_path) -> tuple[dict, ExtractConfig]:
    """(a serial run's item files, the same settings on 2 fresh local worker processes)."""
    from joblib.externals.loky import get_reusable_executor
    e, = parse_overrides(tiny_args, ExtractConfig)
    reference = snapshot(extract_features(e).folder)
    args = [a for a in tiny_args if not a.startswith("cache_root")] + [
        f"cache_root={str(tmp_path / 'processes')!r}", "backend=processes", "workers=2"]
    get_reusable_executor().shutdown(wait=True)    # fresh workers read the FAKE_KILL_* settings
    return reference, parse_overrides(args, ExtractConfig)[0]


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_items_and_a_rerun_completes(tiny_args, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KILL_AT", "2")        # each worker SIGKILLs itself at its 2nd item
    reference, e2 = _serial_and_processes(tiny_args, tmp_path)
    first = extract_features(e2)
    assert first.failures and all("worker process died" in r for r in first.failures.values())
    assert (first.folder / "manifest.json").is_file()              # the driver went on
    monkeypatch.delenv("FAKE_KILL_AT")
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True)
    rerun = extract_features(e2)
    assert rerun.ok and rerun.computed == len(first.failures)
    assert snapshot(rerun.folder) == reference


@pytest.mark.slow
def test_a_transient_worker_death_is_retried_in_fresh_processes(tiny_args, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KILL_ONCE", str(tmp_path / "killed-once"))
    reference, e2 = _serial_and_processes(tiny_args, tmp_path)
    result = extract_features(e2)                  # one worker dies (as the OOM killer would)
    assert (tmp_path / "killed-once").is_file()
    assert result.ok and not result.failures       # its unfinished items ran in a fresh pool
    assert snapshot(result.folder) == reference
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True)
