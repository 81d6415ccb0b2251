"""Per-frame torchvision ResNets: layer shapes, independence of frames, weights plumbing."""
from __future__ import annotations

import logging

import pytest
import torch
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet101

from pipeline.extract.backbones import BACKBONES, build_backbone
from pipeline.extract.backbones import base


@pytest.fixture(scope="module")
def resnet50():
    model, _ = build_backbone("resnet50", weights="none", seed=0)
    return model


def test_layer_shapes(resnet50):
    x = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        assert resnet50(x, "pool").shape == (2, 2048, 3, 1, 1)
        assert resnet50(x, "logits").shape == (2, 1000, 3, 1, 1)
        assert resnet50(x, "layer4").shape == (2, 2048, 3, 2, 1)
        assert resnet50(x).shape == (2, 2048, 3, 1, 1)          # default layer: pool
    assert list(resnet50.layers) == ["pool", "logits", "layer4"]


def test_each_frame_is_the_2d_network_on_that_frame(resnet50):
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        logits = resnet50(x, "logits")
        for t in range(3):
            frame = resnet50.net(x[:, :, t])                       # torchvision's own forward
            torch.testing.assert_close(logits[:, :, t, 0, 0], frame, rtol=1e-4, atol=1e-4)


def test_frames_do_not_influence_each_other(resnet50):
    x = torch.randn(1, 3, 4, 32, 32)
    y = x.clone()
    y[:, :, 1] = torch.randn(1, 3, 32, 32)                         # change frame 1 only
    with torch.no_grad():
        a, b = resnet50(x, "layer4"), resnet50(y, "layer4")
    torch.testing.assert_close(a[:, :, [0, 2, 3]], b[:, :, [0, 2, 3]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


def test_input_spec(resnet50):
    spec = resnet50.spec
    assert (spec.channels, spec.size, spec.min_frames) == (3, 224, 1)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="layer='mixed_5c'"):
        resnet50(torch.randn(1, 3, 1, 32, 32), "mixed_5c")


def test_resnet101_and_weights_none_announced(caplog):
    with caplog.at_level(logging.WARNING):
        model, info = build_backbone("resnet101", weights="none", seed=3)
    assert "RANDOM initialisation" in caplog.text and info.source == "none" and info.seed == 3
    with torch.no_grad():
        assert model(torch.randn(1, 3, 2, 32, 32), "pool").shape == (1, 2048, 2, 1, 1)


@pytest.mark.parametrize("name, enum", [("resnet50", ResNet50_Weights), ("resnet101", ResNet101_Weights)])
def test_hub_uses_torchvision_imagenet1k_v2(tmp_path, monkeypatch, resnet50, name, enum):
    asked = []
    file = tmp_path / enum.IMAGENET1K_V2.url.rsplit("/", 1)[1]
    if name == "resnet50":
        torch.save({"model_state": resnet50.net.state_dict()}, file)
    else:
        torch.manual_seed(1)
        torch.save(resnet101(weights=None).state_dict(), file)

    def fake_fetch(url):
        asked.append(url)
        return file

    monkeypatch.setattr(base, "fetch_hub_checkpoint", fake_fetch)
    model, info = build_backbone(name, weights="hub", seed=9)
    assert asked == [enum.IMAGENET1K_V2.url]
    assert info.source == "hub" and info.file == file.name
    if name == "resnet50":
        x = torch.randn(1, 3, 2, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x, "logits"), resnet50(x, "logits"))


def test_registered():
    assert {"resnet50", "resnet101"} <= set(BACKBONES)


def test_forward_layers_derives_pool_and_logits_from_the_same_layer4(resnet50):
    x = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        logits, layer4, pool = resnet50.forward_layers(x, ("logits", "layer4", "pool"))
        assert layer4.shape == (2, 2048, 3, 2, 1) and pool.shape == (2, 2048, 3, 1, 1)
        torch.testing.assert_close(pool, layer4.mean(dim=(3, 4), keepdim=True))
        fc = resnet50.net.fc(pool[..., 0, 0].transpose(1, 2))           # (B, T, 1000)
        torch.testing.assert_close(logits[..., 0, 0], fc.transpose(1, 2))
    with pytest.raises(ValueError, match=r"layers=\(\) is empty; choose one or more of \['layer4'"):
        resnet50.forward_layers(x, ())
