"""Registry of the learned stage-2 attention classifiers (HoT, METHOD.md "Further attention and
pooling"): name -> class with fit(samples, y) / predict / decision_function (n, C) / save / load."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.learn.attention.attentional_pooling import AttentionalPoolingClassifier
from pipeline.learn.attention.hot import HoTAttentionClassifier, NoAttentionClassifier
from pipeline.learn.attention.pyramid import PyramidAttentionClassifier
from pipeline.learn.attention.self_attention import SelfAttentionClassifier
from pipeline.learn.heads.base import PARAMS_FILE, read_json

log = logging.getLogger(__name__)

__all__ = ["ATTENTIONS", "get_attention", "build_attention", "load_attention",
           "HoTAttentionClassifier", "NoAttentionClassifier", "AttentionalPoolingClassifier",
           "PyramidAttentionClassifier", "SelfAttentionClassifier"]

ATTENTIONS: dict[str, type] = {
    "none": NoAttentionClassifier,          # HoT pooling, every window weighing 1
    "hot": HoTAttentionClassifier,          # HoT group attention (input: (phi, groups) pairs)
    "ap": AttentionalPoolingClassifier,     # Girdhar & Ramanan (input: (n, f) or maps)
    "pyramid": PyramidAttentionClassifier,  # Du et al. STPA (input: layers, top last)
    "self": SelfAttentionClassifier,        # learned-query scaled dot-product attention
}


def get_attention(name: str) -> type:
    """The class registered as `name`; unknown names raise listing the known ones."""
    if name not in ATTENTIONS:
        raise ValueError(f"attention={name!r} is unknown; known: {', '.join(ATTENTIONS)}")
    return ATTENTIONS[name]


def build_attention(name: str, **params):
    """An unfitted attention classifier `name` with `params` (see each class)."""
    return get_attention(name)(**params)


def load_attention(path):
    """The classifier saved in folder `path` by its save(), whichever class it is."""
    name = read_json(Path(path) / PARAMS_FILE)["class"]
    by_class = {cls.__name__: cls for cls in ATTENTIONS.values()}
    if name not in by_class:
        raise ValueError(f"{path} holds a {name!r}, not a known attention classifier "
                         f"({', '.join(by_class)})")
    return by_class[name].load(path)
