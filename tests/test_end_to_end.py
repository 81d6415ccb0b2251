"""All three stages on a tiny synthetic set with a real pytorchvideo model (X3D-XS, random
weights), through the command-line entry points, twice (the second run does nothing)."""
from __future__ import annotations

import json

import pytest

from stages import descriptors, evaluate, extract


@pytest.mark.slow
def test_three_stages_end_to_end(tiny_root, tmp_path, capsys, caplog):
    args = [f"root={str(tiny_root)!r}", "dataset_options={'classes': 3, 'videos_per_class': 3, "
            "'train_per_class': 2, 'frames': 12, 'size': 32, 'codec': 'FFV1'}",
            f"cache_root={str(tmp_path)!r}", "backbone=x3d_xs", "weights=none", "streams=('rgb',)",
            "layer=res5", "size=32", "lengths=(4,8)", "strides=(4,)", "steps=(1,)", "sketch_dim=16"]
    assert extract.main(args) == 0
    assert descriptors.main(args) == 0
    assert evaluate.main(args) == 0
    table = capsys.readouterr().out
    assert table.startswith("| method (synthetic, accuracy, %) | sp1 | mean |")
    assert "| SO+MaxExp |" in table                        # the default: the paper's (docs/statistics.md)
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    assert results["metric"] == "accuracy" and 0.0 <= results["scores"]["sp1"] <= 1.0
    assert results["config"]["extract"]["backbone"] == "x3d_xs"
    manifest = json.loads(next((tmp_path / "features").rglob("manifest.json")).read_text())
    assert manifest["weights"] == {"rgb": {"source": "none", "file": None, "sha256": None, "seed": 0}}
    caplog.clear()
    for stage in (extract, descriptors, evaluate):
        assert stage.main(args) == 0
    assert "features already complete" in caplog.text
    assert "descriptors already complete" in caplog.text
    assert "evaluation already complete" in caplog.text
