"""The attention registry (as timm registers models): an attention type is one file that declares
its name, its inputs, its `key=value` options and its row name, and registers itself here;
`make train` reads the declaration and never branches on the name (docs/method.md, "Attention")."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

__all__ = ["INPUTS", "Option", "AttentionSpec", "ATTENTIONS", "register_attention",
           "get_attention", "attention_options"]

# What a classifier's fit() receives per video, and where it comes from:
INPUTS = {
    "groups": "(phi (N, d), group (N,)) pairs: the sketched windows and their (length, rate) group",
    "windows": "phi (N, d): the sketched windows as positions",
    "window_levels": "[phi_j (N, d'_j)]: the sketched windows cut into their parts, one level per "
                     "layer of one stream and pooling (shallow to deep)",
    "cells": "(N, D, H', W'): the stored map of the last convolutional layer, every window's cells",
    "levels": "[(N, D_j, H_j, W_j)]: the stored maps of two or more depths, top last",
}


@dataclasses.dataclass(frozen=True)
class Option:
    """A flat `key=value` setting of `make train` that an attention type reads.

    check(value) -> the normalised value, or raises ValueError naming the key; `doc` says what
    it sets and why its default (it is printed by --help)."""

    default: Any
    annotation: Any
    doc: str
    check: Callable[[str, Any], Any] | None = None


def integer(low: int) -> Callable[[str, Any], int]:
    """An Option check: an integer >= low."""
    def check(name: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        return value
    return check


def choice(*allowed: str) -> Callable[[str, Any], str]:
    """An Option check: one of `allowed`."""
    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{name}={value!r}: choose one of {', '.join(allowed)}")
        return value
    return check


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """One registered attention type.

    classifier: the estimator class (fit(samples, y) / decision_function / transform / save /
    load / attention_map). inputs: a key of INPUTS. options: the `key=value` settings it reads
    (they key only its runs). params(tcfg, dcfg) -> the classifier's keyword arguments (besides
    the shared training ones). row_name(params, pooling) -> the results-table name, params being
    the classifier's get_params() and pooling stage 2's name ("SO+SigmE"). pooled: the stage-2
    pooling settings (order, EPN, ...) are part of the model (they key its runs)."""

    name: str
    classifier: type
    inputs: str
    params: Callable[[Any, Any], dict]
    row_name: Callable[[dict, str], str]
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
    pooled: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.inputs not in INPUTS:
            raise ValueError(f"attention {self.name!r}: inputs={self.inputs!r}; choose one of "
                             f"{', '.join(INPUTS)}")


ATTENTIONS: dict[str, AttentionSpec] = {}
_OPTIONS: dict[str, Option] = {}


def register_attention(spec: AttentionSpec) -> AttentionSpec:
    """Add `spec` to the registry. An option declared by several types must agree."""
    if spec.name in ATTENTIONS and ATTENTIONS[spec.name].classifier is not spec.classifier:
        raise ValueError(f"attention {spec.name!r} is registered twice")
    for key, option in spec.options.items():
        known = _OPTIONS.get(key)
        if known is not None and (known.default, known.annotation) != (option.default,
                                                                       option.annotation):
            raise ValueError(f"attention {spec.name!r} declares option {key!r} with default "
                             f"{option.default!r}; another type declared {known.default!r}")
        _OPTIONS.setdefault(key, option)
    ATTENTIONS[spec.name] = spec
    return spec


def get_attention(name: str) -> AttentionSpec:
    """The spec registered as `name`; unknown names raise listing the known ones."""
    if name not in ATTENTIONS:
        raise ValueError(f"attention={name!r} is unknown; known: {', '.join(ATTENTIONS)}")
    return ATTENTIONS[name]


def attention_options() -> dict[str, Option]:
    """Every option any registered attention type declares (TrainConfig's attention keys)."""
    return dict(_OPTIONS)


def owners(key: str) -> tuple[str, ...]:
    """The attention types that read option `key`."""
    return tuple(n for n, s in ATTENTIONS.items() if key in s.options)
