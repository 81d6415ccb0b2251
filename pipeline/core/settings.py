"""Settings machinery shared by every stage: `key=value` parsing into frozen dataclasses, type
checks that name the key, and which fields enter a cache key (`key=False` fields do not).

All stages share one flat namespace of keys, so the same `ARGS` can be passed to every `make`
target: each stage reads its own settings and those of the stages upstream of it. The settings
themselves live with what they configure (extract/, pooling/, learn/, idt/ settings.py)."""
from __future__ import annotations

import ast
import dataclasses
import difflib
import numbers
import types
import typing
from dataclasses import field
from typing import Any


# keys whose empty value would silently mean something else (root= the current folder)
NON_EMPTY = {"root": "the dataset folder, e.g. root=/data/hmdb51",
             "cache_root": "a folder, e.g. cache_root=cache",
             "model": "a trained model folder", "videos": "a folder of videos or video files",
             "dataset": "a dataset name (see --help)"}


def nokey(default: Any = dataclasses.MISSING, **kw) -> Any:
    """A field that does not enter the cache key (where output goes, how fast it runs)."""
    return field(default=default, metadata={"key": False}, **kw)


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True                                   # validated by the dataclass itself
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is tuple:
        return isinstance(value, (tuple, list, int, str))     # one value stands for a 1-tuple
    return isinstance(value, origin or annotation)


def _parse_value(text: str) -> Any:
    """`ast.literal_eval`, with bare words (x3d_xs, /data/hmdb51) taken as strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(argv: list[str], *classes: type) -> list[Any]:
    """Build one instance of each config class from `key=value` tokens.

    Dataset presets (PRESETS[dataset]) are applied first, then the user's values. An unknown key,
    a malformed token or a wrong type raises ValueError naming the key and the allowed values.
    """
    fields = {f.name: (cls, f) for cls in classes for f in dataclasses.fields(cls)}
    given: dict[str, Any] = {}
    for token in argv:
        key, sep, text = token.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {token!r} is not of the form key=value")
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ValueError(f"unknown key {key!r}; {hint}allowed keys: {', '.join(sorted(fields))}")
        if not text.strip() and key in NON_EMPTY:
            raise ValueError(f"{key}= is empty (a make variable that expanded to nothing?); "
                             f"give {NON_EMPTY[key]}")
        value = _parse_value(text)
        hints = typing.get_type_hints(fields[key][0])
        if not _type_ok(value, hints[key]):
            raise ValueError(f"{key}={text!r}: expected {hints[key]}, got {type(value).__name__}")
        given[key] = value
    from pipeline.extract.settings import PRESETS, ExtractConfig   # window presets per dataset
    dataset = str(given.get("dataset", ExtractConfig.dataset)).lower()
    preset = {k: v for k, v in PRESETS.get(dataset, {}).items() if k in fields}
    values = {**preset, **given}
    if "dataset" in fields:
        values["dataset"] = dataset
    return [cls(**{k: v for k, v in values.items() if fields[k][0] is cls}) for cls in classes]


def key_params(config: Any) -> dict[str, Any]:
    """The fields of a config that change its stage's output (cache-key material)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("key", True)}




def check_int(name: str, value: Any, minimum: int) -> int:
    """value as an int, or ValueError naming `name` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def store_params(estimator: Any, params: dict) -> None:
    """scikit-learn's constructor convention in one line: `store_params(self, locals())` in an
    `__init__` stores every argument under its own name, unchanged (get_params and clone read them
    back); validation happens in fit."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)
