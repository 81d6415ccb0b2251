"""The learned stage-2 attention types (docs/method.md, "Attention"): every module of this package
registers its types on import (registry.register_attention), so adding a type is adding one file.
A type's classifier has fit(samples, y) / predict / decision_function (n, C) / save / load."""
from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path

from pipeline.learn.attention.registry import (ATTENTIONS, AttentionSpec, Option, attention_options,
                                               get_attention, register_attention)
from pipeline.learn.persistence import PARAMS_FILE, read_json

log = logging.getLogger(__name__)

for _module in pkgutil.iter_modules(__path__):          # every file registers its types
    importlib.import_module(f"{__name__}.{_module.name}")

from pipeline.learn.attention.attentional_pooling import AttentionalPoolingClassifier  # noqa: E402
from pipeline.learn.attention.hot import HoTAttentionClassifier, NoAttentionClassifier  # noqa: E402
from pipeline.learn.attention.pyramid import PyramidAttentionClassifier  # noqa: E402
from pipeline.learn.attention.self_attention import (  # noqa: E402
    LearnedQueryClassifier, SelfAttentionClassifier)

__all__ = ["ATTENTIONS", "AttentionSpec", "Option", "attention_options", "get_attention",
           "register_attention", "build_attention", "load_attention", "HoTAttentionClassifier",
           "NoAttentionClassifier", "AttentionalPoolingClassifier", "PyramidAttentionClassifier",
           "SelfAttentionClassifier", "LearnedQueryClassifier"]


def build_attention(name: str, **params):
    """An unfitted classifier of the attention type `name` with `params` (see each class)."""
    return get_attention(name).classifier(**params)


def load_attention(path):
    """The classifier saved in folder `path` by its save(), whichever class it is."""
    name = read_json(Path(path) / PARAMS_FILE)["class"]
    by_class = {spec.classifier.__name__: spec.classifier for spec in ATTENTIONS.values()}
    if name not in by_class:
        raise ValueError(f"{path} holds a {name!r}, not a known attention classifier "
                         f"({', '.join(sorted(by_class))})")
    return by_class[name].load(path)
