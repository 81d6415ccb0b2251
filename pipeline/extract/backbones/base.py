"""The contract every feature extractor meets, and the weight loading they share.

A backbone is a torch module that maps normalised clips (B, C, T, H, W) to feature maps
(B, D, T', H', W') of named layers, several from one pass; the stage-1 engine pools space and
time itself.
Weights come from `weights=none|hub|<path>`; random initialisation is never silent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.error
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Pretrained weights could not be found or loaded; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a backbone expects of its input clips.

    channels: 3 for RGB, 2 for optical flow (x, y).
    size: spatial side in pixels that the model was trained at (frames are resized so the short
        side equals it, then centre-cropped to size x size unless the engine is told otherwise).
    min_frames: the shortest clip the network accepts (temporal kernels and pooling).
    mean, std: per-channel normalisation applied to frames scaled to [0, 1];
        mean=0.5, std=0.5 maps [0, 1] to [-1, 1] (Inception I3D).
    """

    channels: int = 3
    size: int = 224
    min_frames: int = 1
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)


@dataclasses.dataclass(frozen=True)
class TrunkLayer:
    """How a layer is computed from the stored trunk map (trunk=on; docs/method.md, Stage 1).

    source: the map the trunk stores for it (spatially averaged per temporal cell).
    stride: frames (of the subsampled video) per temporal cell of `source`.
    kernel: temporal cells the layers after the trunk average over (a head's average pool with
        stride 1, e.g. Inception I3D's 2 x 7 x 7); 1 for a map layer itself.
    head: whether `Backbone.trunk_head(layer, v)` maps the averaged cells to the layer.
    """

    source: str
    stride: int = 1
    kernel: int = 1
    head: bool = False


class Backbone(nn.Module):
    """Base class: subclasses set `spec` and `layers` and implement `layer_maps(x, wanted)`.

    forward_layers(x: (B, C, T, H, W) normalised float, layers: tuple[str, ...])
        -> [(B, D, T', H', W') per layer, in the order asked], from ONE pass of the network that
        stops at the deepest layer asked for.
    forward(x, layer) -> forward_layers(x, (layer,))[0]; layer defaults to the first of `layers`.
    `layers` maps each supported layer name to a one-line description, first = default.
    """

    spec: InputSpec = InputSpec()
    layers: dict[str, str] = {}
    # trunk=on (docs/method.md, Stage 1): "temporal" for networks convolutional in time (one pass
    # over the whole subsampled video, windows pooled from its map), "frames" for per-frame
    # networks (each frame once, windows pool exactly the frames they hold), None: not supported.
    trunk_kind: str | None = None

    def trunk_layer(self, layer: str) -> TrunkLayer:
        """The stored map and pooling `layer` is computed from under trunk=on; by default the
        layer's own map, one cell per frame (right for "frames" networks)."""
        self.check_layer(layer)
        return TrunkLayer(layer)

    def trunk_sources(self, x: torch.Tensor, sources: tuple[str, ...]) -> list[torch.Tensor]:
        """x: (B, C, T, H, W) normalised -> [(B, D, T', H', W') per source]: the trunk's maps."""
        return self.forward_layers(x, sources)

    def trunk_head(self, layer: str, v: torch.Tensor) -> torch.Tensor:
        """v: (P, D_source) cells averaged over the layer's kernel -> (P, D_layer); identity unless
        the layer lies after the trunk (TrunkLayer.head)."""
        return v

    def check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise ValueError(f"layer={layer!r} is not available for {type(self).__name__}; "
                             f"choose one of {sorted(self.layers)}")

    def check_layers(self, layers: Iterable[str]) -> tuple[str, ...]:
        """`layers` as a tuple of known, distinct names; at least one."""
        if isinstance(layers, str):
            raise TypeError(f"layers={layers!r} must be a tuple of layer names, e.g. ({layers!r},)")
        layers = tuple(layers)
        if not layers:
            raise ValueError(f"layers=() is empty; choose one or more of {sorted(self.layers)}")
        for layer in layers:
            self.check_layer(layer)
        repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
        if repeated:
            raise ValueError(f"layers={layers!r} names {repeated} more than once; "
                             f"ask for each layer once")
        return layers

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """x: (B, C, T, H, W) normalised -> (B, D, T', H', W') of `layer`."""
        return self.forward_layers(x, (next(iter(self.layers)) if layer is None else layer,))[0]

    def forward_layers(self, x: torch.Tensor, layers: Iterable[str]) -> list[torch.Tensor]:
        """x: (B, C, T, H, W) normalised -> [(B, D, T', H', W') of each of `layers`, in order].

        Runs layer_maps once and stops consuming it as soon as every layer asked for is out,
        so nothing deeper than the deepest of them is computed."""
        layers = self.check_layers(layers)
        wanted, maps = frozenset(layers), {}
        for name, y in self.layer_maps(x, wanted):
            if name in wanted:
                maps[name] = y
                if len(maps) == len(wanted):
                    break
        return [maps[layer] for layer in layers]

    def layer_maps(self, x: torch.Tensor, wanted: frozenset[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (layer, map) from shallow to deep, each computed only when the next one is asked
        for. `wanted` (known layers) lets a network skip side branches nobody asked for; layers
        outside it may still be yielded and are ignored.

        This fallback, for subclasses that implement only `forward(x, layer)`, runs the network
        once per layer; every registered backbone overrides it with a single pass."""
        if type(self).forward is Backbone.forward:
            raise NotImplementedError(f"{type(self).__name__} implements neither layer_maps "
                                      f"nor forward")
        for layer in self.layers:
            if layer in wanted:
                yield layer, self.forward(x, layer)


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Identity of the weights a model was built with; recorded in manifests and cache keys."""

    source: str                  # "none" (random init), "hub" or "file"
    file: str | None = None      # file name (hub cache or given path)
    sha256: str | None = None    # content hash of that file
    seed: int | None = None      # seed of the random initialisation (source == "none")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_checkpoint_file(url: str) -> Path:
    """Where torch.hub keeps (or would keep) the checkpoint downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file: plain state dicts and {"model_state": ...} /
    {"state_dict": ...} wrappers (pytorchvideo .pyth, Lightning) are accepted.
    Loaded with weights_only=True: no arbitrary code runs."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights={path}: no such file. Pass weights=hub, weights=none "
                           f"(random initialisation), or the path of a checkpoint file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name and the fix
        raise WeightsError(f"weights={path}: cannot be read as a PyTorch checkpoint "
                           f"({type(exc).__name__}: {exc})") from exc
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights={path}: expected a state dict (name -> tensor), "
                           f"got {type(obj).__name__}")
    return obj


def fetch_hub_checkpoint(url: str) -> Path:
    """The local file of a hub checkpoint: reused from the torch hub cache, else downloaded.

    Offline, raises WeightsError saying which file to place where."""
    target = hub_checkpoint_file(url)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target.with_suffix(target.suffix + ".part")),
                                       progress=False)
        os.replace(target.with_suffix(target.suffix + ".part"), target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsError(
            f"weights=hub: could not download {url} ({exc}). On a machine with internet, "
            f"download that file and place it at {target} (the torch hub cache; set TORCH_HOME "
            f"to move it), or pass weights=/path/to/{target.name}. "
            f"weights=none builds the model with random weights instead.") from exc
    return target


def identify_weights(weights: str, *, url: str | None, seed: int, name: str) -> tuple[WeightsInfo, Path | None]:
    """(identity, file) of `weights` ("none" | "hub" | a path) without building the model: what
    stage 1 keys its cache by and stage 2 finds its input by. "hub" fetches the file if needed."""
    if weights == "none":
        return WeightsInfo(source="none", seed=seed), None
    if weights == "hub":
        if url is None:
            raise WeightsError(f"weights=hub: no published checkpoint is known for "
                               f"{name}; pass weights=/path/to/checkpoint")
        path, source = fetch_hub_checkpoint(url), "hub"
    else:
        path, source = Path(weights).expanduser(), "file"
        if not path.is_file():
            raise WeightsError(f"weights={path}: no such file. Pass weights=hub, weights=none "
                               f"(random initialisation), or the path of a checkpoint file.")
    return WeightsInfo(source=source, file=path.name, sha256=file_sha256(path)), path


def announce_random(name: str, seed: int) -> None:
    log.warning("weights=none: %s uses RANDOM initialisation (seed %d); features will not "
                "be meaningful for recognition beyond tests and plumbing.", name, seed)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, path, name: str) -> None:
    """Load `state` into `model` with every key matched; else WeightsError naming the file."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"weights={path}: does not fit {name}: "
                           f"missing {list(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected {list(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}")
    log.info("loaded weights from %s", path)


def load_weights(model: nn.Module, weights: str, *, url: str | None, seed: int,
                 name: str | None = None, convert=None) -> WeightsInfo:
    """Load `weights` ("none" | "hub" | a path) into `model`; return their identity.

    convert: optional function mapping a foreign state dict onto the model's names.
    Random initialisation ("none") is announced in the log; the caller seeds the builder.
    """
    name = name or type(model).__name__
    info, path = identify_weights(weights, url=url, seed=seed, name=name)
    if path is None:
        announce_random(name, seed)
        return info
    state = read_checkpoint(path)
    load_state(model, convert(state) if convert is not None else state, path=path, name=name)
    return info
