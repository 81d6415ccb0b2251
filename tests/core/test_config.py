"""key=value parsing, presets, validation and cache-key material."""
from __future__ import annotations

import pytest

from pipeline.pooling.settings import DescriptorConfig
from pipeline.learn.settings import EvaluateConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import key_params, parse_overrides


def test_presets_then_overrides():
    e, = parse_overrides(["dataset=HMDB51", "backbone=x3d_xs"], ExtractConfig)
    assert e.dataset == "hmdb51" and e.backbone == "x3d_xs"
    assert e.lengths == (24, 32, 48, 64) and e.strides == (6, 8, 8, 8)
    assert e.groups()[:2] == [(24, 6, 1), (24, 6, 2)] and len(e.groups()) == 16
    y, = parse_overrides(["dataset=yup"], ExtractConfig)
    assert y.strides == (16, 16, 16, 16) and y.steps == ((1, 2, 3), (1, 2), (1, 2), (1,))
    o, = parse_overrides(["dataset=yup", "lengths=(8,)", "strides=(4,)", "steps=(1,2)"], ExtractConfig)
    assert o.groups() == [(8, 4, 1), (8, 4, 2)]


def test_one_namespace_routes_keys_to_their_stage():
    e, d, v = parse_overrides(["sketch_dim=64", "C=0.5", "weights=none", "order=3"],
                              ExtractConfig, DescriptorConfig, EvaluateConfig)
    assert (e.weights, d.sketch_dim, d.order, v.C) == ("none", 64, 3, 0.5)


@pytest.mark.parametrize("argv, message", [
    (["sketchdim=3"], r"unknown key 'sketchdim'; did you mean sketch_dim\? allowed keys: .*sketch_dim"),
    (["sketch_dim=abc"], "sketch_dim='abc': expected <class 'int'>"),
    (["order"], "not of the form key=value"),
    (["order=4"], "order=4: choose 1"),
    (["epn=gamma", "epn_params={'gamma': 1.5}"], "gamma=1.5: Gamma needs 0 < gamma <= 1"),
    (["steps=(0,)"], "steps=.*integer >= 1"),
    (["strides=(1,2,3)"], "one entry per length"),
    (["pool=median"], "pool=\\('median',\\): choose one or more of \\('mean', 'max', 'map'\\)"),
    (["pool=map"], "add 'mean' or 'max'"),
    (["backend=ray"], "backend='ray': choose one of"),
    (["group_weights={'L8_s1': -1}"], "a weight must be a number >= 0"),
])
def test_errors_name_the_key(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(argv, ExtractConfig, DescriptorConfig)


def test_key_material_leaves_out_where_and_how_fast():
    e, = parse_overrides(["root=/x", "cache_root=/y", "batch_size=3", "device=cpu"], ExtractConfig)
    params = key_params(e)
    assert not {"root", "cache_root", "batch_size", "device"} & set(params)
    assert {"backbone", "weights", "lengths", "steps", "layer"} <= set(params)
