"""Content keys, atomic writes and item validation."""
from __future__ import annotations

import h5py
import pytest

from pipeline.core.cache import atomic_path, h5_valid, stage_key, write_json


def test_key_changes_with_parameters_and_comes_back():
    base = stage_key("features", 1, {"a": 1, "b": (1, 2)})
    assert stage_key("features", 1, {"b": [1, 2], "a": 1}) == base   # canonical
    assert stage_key("features", 1, {"a": 2, "b": (1, 2)}) != base
    assert stage_key("features", 2, {"a": 1, "b": (1, 2)}) != base
    assert stage_key("features", 1, {"a": 1, "b": (1, 2)}, upstream=["up-1"]) != base
    assert stage_key("features", 1, {"a": 1, "b": (1, 2)}, weights={"sha256": "0"}) != base
    assert stage_key("features", 1, {"a": 1, "b": (1, 2)}) == base


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "items" / "a.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with h5py.File(tmp, "w") as f:
                f["x"] = [1, 2, 3]
            raise RuntimeError("crash mid-item")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["complete"] = True
    assert h5_valid(target) and list(target.parent.iterdir()) == [target]


def test_item_validation(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"\x00" * 100)
    assert not h5_valid(tmp_path / "garbage.h5")
    assert not h5_valid(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "incomplete.h5", "w") as f:
        f["x"] = 1
    assert not h5_valid(tmp_path / "incomplete.h5")
    write_json(tmp_path / "m.json", {"b": 1, "a": (1, 2)})
    assert (tmp_path / "m.json").read_text().startswith("{")
