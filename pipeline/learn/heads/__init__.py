"""Registry of classification heads on cached descriptors (docs/method.md "Heads"): name -> class with
fit(X, y) / fit_stream(read_rows, y, indices) / decision_function (n, C) / predict / save / load."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.learn.persistence import PARAMS_FILE, read_json
from pipeline.learn.heads.linear import LinearHead
from pipeline.learn.heads.logistic import LogisticHead
from pipeline.learn.heads.mlp import MLPHead
from pipeline.learn.heads.svm import SVMHead

log = logging.getLogger(__name__)

__all__ = ["HEADS", "build_head", "load_head", "SVMHead", "LogisticHead", "LinearHead", "MLPHead"]

HEADS: dict[str, type] = {
    "svm": SVMHead,
    "logreg": LogisticHead,
    "linear": LinearHead,
    "mlp": MLPHead,
}


def build_head(name: str, **params):
    """An unfitted head `name` with `params` (see each class); unknown names raise."""
    if name not in HEADS:
        raise ValueError(f"head={name!r} is unknown; known: {', '.join(HEADS)}")
    return HEADS[name](**params)


def load_head(path):
    """The head saved in folder `path` by its save(), whichever class it is."""
    name = read_json(Path(path) / PARAMS_FILE)["class"]
    by_class = {cls.__name__: cls for cls in HEADS.values()}
    if name not in by_class:
        raise ValueError(f"{path} holds a {name!r}, not a known head ({', '.join(by_class)})")
    return by_class[name].load(path)
