"""Pickle-free saving of fitted heads and learned models: params.json (class, parameters, fitted
metadata and the checksums of the binary files) beside arrays.npz or state.pt, verified on load;
a damaged, foreign or non-finite file is refused, naming it."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.core.cache import CorruptFileError, file_checksum, verify_file
from pipeline.core.cache import read_json as read_checked_json
from pipeline.core.cache import write_json as write_json_checked

log = logging.getLogger(__name__)


PARAMS_FILE = "params.json"   # every saved head/classifier: its class, parameters, fitted metadata


STATE_FILE = "state.pt"        # torch state dict (torch.load(..., weights_only=True))


ARRAYS_FILE = "arrays.npz"     # numpy arrays (np.load(..., allow_pickle=False))


REFIT = ("delete its folder and rerun the command that fitted it (`make train` or `make "
         "evaluate` with the same settings) to fit it again")


def read_json(path: Path) -> dict:
    """A saved head's or model's JSON (params.json, config.json), its checksum verified;
    CorruptFileError naming the file when it is damaged or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(path, "is missing", REFIT)
    data = read_checked_json(path, REFIT)
    if not isinstance(data, dict):
        raise CorruptFileError(path, f"holds a JSON {type(data).__name__}, not an object", REFIT)
    return data


def read_params(path: Path, cls: type, binary: str) -> dict:
    """The verified params.json of a head saved in folder `path` for class `cls`, after checking
    `binary` (its arrays or state dict) against the checksum params.json recorded for it."""
    info = read_json(path / PARAMS_FILE)
    missing = [k for k in ("class", "params", "classes", "classes_dtype", "chosen_params", "meta")
               if k not in info]
    if missing:
        raise CorruptFileError(path / PARAMS_FILE, f"lacks {', '.join(missing)}", REFIT)
    if info["class"] != cls.__name__:
        raise ValueError(f"{path} holds a {info['class']}, not a {cls.__name__}")
    if not (path / binary).is_file():
        raise CorruptFileError(path / binary, "is missing", REFIT)
    verify_file(path / binary, info.get("files", {}).get(binary), REFIT)
    return info


def saved_intact(path: Path) -> bool:
    """Whether folder `path` holds a saved head or model whose params.json and arrays.npz or
    state.pt match their checksums (no model is built); a damaged one is logged, naming the
    file, and counts as absent so that the stage fits it again."""
    from pipeline.core.cache import warn_damaged
    path = Path(path)
    if not (path / PARAMS_FILE).is_file():
        return False
    try:
        info = read_json(path / PARAMS_FILE)
        binary = STATE_FILE if (path / STATE_FILE).is_file() or STATE_FILE in info.get(
            "files", {}) else ARRAYS_FILE
        if not (path / binary).is_file():
            raise CorruptFileError(path / binary, "is missing", REFIT)
        verify_file(path / binary, info.get("files", {}).get(binary), REFIT)
        return True
    except CorruptFileError as exc:
        warn_damaged(exc.path, str(exc).split(": ", 1)[-1].split("; ")[0], "it is fitted again")
        return False


def check_finite(path: Path, name: str, values) -> None:
    """Refuse a loaded array or tensor holding NaN or Inf, naming the file and the array."""
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = int(values.size - np.isfinite(values).sum())
        raise CorruptFileError(path, f"{name} holds {bad} NaN or Inf values (refused)", REFIT)


def check_classes(path: Path, classes: np.ndarray, rows: int, what: str) -> None:
    """The saved class list must match the fitted arrays' rows (a shortened list is refused)."""
    if len(classes) != rows:
        raise CorruptFileError(path / PARAMS_FILE, f"lists {len(classes)} classes for {rows} "
                               f"rows of {what}", REFIT)


def _restore_params(params: dict) -> dict:
    """JSON lists back to tuples (list-valued parameters are grids, given as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def write_params(path: Path, est, binary: str, **extra) -> None:
    """params.json of fitted `est` in folder `path`: class, parameters, classes_, chosen_params_,
    est._meta() and the checksum of the binary file beside it (written first: params.json is the
    last file of a save). extra: further fields (e.g. the training history)."""
    write_json(path / PARAMS_FILE, {
        "class": type(est).__name__, "params": est.get_params(deep=False),
        "classes": est.classes_, "classes_dtype": est.classes_.dtype.str,
        "chosen_params": est.chosen_params_, "meta": est._meta(), **extra,
        "files": {binary: file_checksum(path / binary)}})


def restore(cls: type, info: dict):
    """A new `cls` with the parameters, classes_ and chosen_params_ of a verified params.json."""
    est = cls(**_restore_params(info["params"]))
    est.classes_ = np.asarray(info["classes"], dtype=np.dtype(info["classes_dtype"]))
    est.chosen_params_ = info["chosen_params"]
    return est


def write_json(path: Path, obj: dict) -> None:
    """obj as JSON with the checksum read_json verifies (core.cache.write_json, sorted keys)."""
    write_json_checked(path, obj, sort_keys=True)
