"""Shared fixtures: a tiny lossless synthetic dataset, a fresh cache root, the shared data folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The content-digest memo (pipeline.core.digests) of the test run lives in a temporary folder, not in
# the user's ~/.cache; subprocesses (stage CLIs, the chaos harness) inherit it.
os.environ["HOT_DIGEST_MEMO"] = str(Path(tempfile.mkdtemp(prefix="hot-digests-")) / "digests.sqlite")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = dict(classes=3, videos_per_class=3, train_per_class=2, frames=12, size=32, codec="FFV1")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A 3-class, 9-video synthetic dataset of 12 frames at 32 px, written losslessly."""
    from pipeline.datasets.synthetic import SyntheticDataset
    root = tmp_path_factory.mktemp("data") / "tiny"
    SyntheticDataset(root, **TINY)
    return root


@pytest.fixture
def tiny_args(tiny_root, tmp_path) -> list[str]:
    """key=value arguments selecting the tiny dataset, the fake backbone and a fresh cache."""
    return [f"root={str(tiny_root)!r}", f"dataset_options={TINY!r}", f"cache_root={str(tmp_path / 'cache')!r}",
            "backbone='fake_counting'", "layer='stats'", "weights='none'", "streams=('rgb',)",
            "lengths=(4, 8)", "strides=(2, 4)", "steps=((1, 2), (1,))", "size=32"]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test material not found at {SHARED_DATA} (only in the project's workspace)")
    return SHARED_DATA
