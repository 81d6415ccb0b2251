"""Registry of stage-1 feature extractors: name -> builder(*, weights, seed) -> (Backbone, WeightsInfo),
and, per name, how to tell the weights' identity without building the model."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from pipeline.extract.backbones.base import Backbone, InputSpec, TrunkLayer, WeightsError, WeightsInfo

Builder = Callable[..., "tuple[Backbone, WeightsInfo]"]
Identify = Callable[..., WeightsInfo]
BACKBONES: dict[str, Builder] = {}
IDENTIFY: dict[str, Identify] = {}     # name -> identify(*, weights, seed) -> WeightsInfo
TRUNK_KINDS: dict[str, str | None] = {}  # name -> its Backbone.trunk_kind, as registered (trunk=on)
TRUNK_DEFAULT: set[str] = set()        # names whose trunk=auto means on (measured, or exact per frame)


def register(name: str, identify: Identify | None = None, *, trunk: str | None = None,
             trunk_default: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: add a builder to BACKBONES under `name` (names are unique). `identify` tells the
    weights' identity without building the model; without one the model is built to tell it.
    `trunk` is the model's trunk_kind ("temporal", "frames" or None), for listing the backbones
    that support trunk=on without building them. `trunk_default`: trunk=auto (the default) means
    trunk=on for this backbone: only where the trunk was measured within noise of exact windows
    on real video, or is exact ("frames"); docs/stage1.md "The default"."""
    if trunk_default and trunk is None:
        raise ValueError(f"backbone {name!r}: trunk_default needs a trunk kind")
    def add(builder: Builder) -> Builder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = builder
        if identify is not None:
            IDENTIFY[name] = identify
        TRUNK_KINDS[name] = trunk
        if trunk_default:
            TRUNK_DEFAULT.add(name)
        return builder
    return add


def weights_identity(name: str, *, weights: str = "hub", seed: int = 0) -> WeightsInfo:
    """The identity of the weights `build_backbone(name, weights=, seed=)` would load (cache keys)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is unknown; choose one of {sorted(BACKBONES)}")
    if name in IDENTIFY:
        return IDENTIFY[name](weights=weights, seed=seed)
    return BACKBONES[name](weights=weights, seed=seed)[1]


def builder_module(name: str) -> str:
    """The module that registers backbone `name`: worker processes import it so that backbones
    registered outside this package (plugins, test doubles) exist there too."""
    builder = BACKBONES[name]
    return getattr(builder, "func", builder).__module__


def build_backbone(name: str, *, weights: str = "hub", seed: int = 0) -> tuple[Backbone, WeightsInfo]:
    """Build backbone `name` in eval mode with `weights` ("none" | "hub" | path)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is unknown; choose one of {sorted(BACKBONES)}")
    model, info = BACKBONES[name](weights=weights, seed=seed)
    return model.eval(), info


# Every module of this package registers its builders on import: a new backbone is a new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BACKBONES", "TRUNK_DEFAULT", "TRUNK_KINDS", "Backbone", "TrunkLayer", "weights_identity", "InputSpec", "WeightsError", "WeightsInfo", "build_backbone", "builder_module",
           "register"]
