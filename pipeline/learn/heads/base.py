"""What every head and learned attention classifier shares: row sources that stream float32 chunks
(numpy, h5py or a reader function), seeded stratified splits, early-stopped torch training with a
hyper-parameter grid chosen on the training part only, and pickle-free save/load (JSON + arrays)."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted
from torch import nn

from pipeline.core.cache import CorruptFileError, atomic_path, file_checksum, verify_file, with_checksum
from pipeline.core.cache import read_json as read_checked_json
from pipeline.core.devices import resolve_device, torch_dtype

log = logging.getLogger(__name__)

__all__ = ["RowSource", "as_row_source", "stratified_holdout", "stratified_folds", "as_grid",
           "encode_labels", "TrainResult", "train_early_stopping",
           "TorchClassifierBase", "TorchRowHead", "RowData", "SampleData", "pad_samples",
           "ArrayHeadBase", "in_training_basis", "select_by_cv", "two_columns", "write_json",
           "read_json", "PARAMS_FILE", "saved_intact", "check_finite", "REFIT", "Progress"]

PARAMS_FILE = "params.json"   # every saved head/classifier: its class, parameters, fitted metadata
STATE_FILE = "state.pt"        # torch state dict (torch.load(..., weights_only=True))
ARRAYS_FILE = "arrays.npz"     # numpy arrays (np.load(..., allow_pickle=False))


# --------------------------------------------------------------------------------------------
# row sources: descriptors read in float32 chunks, never all at once
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RowSource:
    """Rows (n_rows, n_features) that are read on demand.

    read(indices) gets strictly increasing int64 indices (what h5py fancy indexing needs) and
    returns (len(indices), n_features). rows() and chunks() take any order and return float32.
    """

    read: Callable[[np.ndarray], np.ndarray]
    n_rows: int
    n_features: int

    def rows(self, indices) -> np.ndarray:
        """Rows at `indices` (k,) in the order given -> (k, n_features) float32."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        if indices.min() < 0 or indices.max() >= self.n_rows:
            raise IndexError(f"row indices must lie in [0, {self.n_rows})")
        uniq, inverse = np.unique(indices, return_inverse=True)
        block = np.asarray(self.read(uniq), dtype=np.float32)
        if block.shape != (len(uniq), self.n_features):
            raise ValueError(f"read_rows returned shape {block.shape}; expected "
                             f"{(len(uniq), self.n_features)}")
        return block[inverse]

    def chunk_rows(self, chunk_mb: float) -> int:
        """How many float32 rows fit in chunk_mb MiB (at least 1)."""
        return max(1, int(chunk_mb * 2 ** 20) // (4 * max(1, self.n_features)))

    def chunks(self, indices, chunk_mb: float, multiple: int = 1
               ) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `indices`, their rows float32) chunk by chunk, in the order given;
        chunks hold a multiple of `multiple` rows (at least `multiple`)."""
        indices = np.asarray(indices, dtype=np.int64)
        step = max(multiple, self.chunk_rows(chunk_mb) // multiple * multiple)
        for start in range(0, len(indices), step):
            sl = slice(start, min(len(indices), start + step))
            yield sl, self.rows(indices[sl])


def as_row_source(X, n_rows: int | None = None) -> RowSource:
    """A RowSource from an array (n, D), an h5py Dataset (n, D), a RowSource, or a function
    read_rows(indices) -> (k, D) (then n_rows is required; D is read from row 0)."""
    if isinstance(X, RowSource):
        return X
    if callable(X) and not hasattr(X, "shape"):
        if n_rows is None:
            raise ValueError("a read_rows function needs n_rows (the number of rows it serves)")
        first = np.asarray(X(np.array([0], dtype=np.int64)))
        if first.ndim != 2 or first.shape[0] != 1:
            raise ValueError(f"read_rows([0]) returned shape {first.shape}; expected (1, D)")
        return RowSource(X, int(n_rows), int(first.shape[1]))
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"X has shape {tuple(shape)}; expected (n_samples, n_features)")
    if n_rows is not None and n_rows != shape[0]:
        raise ValueError(f"X has {shape[0]} rows; y has {n_rows}")
    return RowSource(lambda idx: X[idx], int(shape[0]), int(shape[1]))


# --------------------------------------------------------------------------------------------
# seeded, stratified splits of the training part (hyper-parameters never see test labels)
# --------------------------------------------------------------------------------------------
def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """(classes (C,) sorted, codes (n,) int64 in [0, C)); at least two classes."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y has shape {y.shape}; expected one label per sample (n,)")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has {len(classes)} class(es); a classifier needs at least 2")
    return classes, codes.astype(np.int64)


def stratified_holdout(codes, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) into codes (n,), both sorted int64.

    Per class: round(fraction * n_c) samples go to validation, at least 1 and at most n_c - 1
    when n_c >= 2; a class with one sample stays in the fit part (ours). Seeded, deterministic.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction={fraction} must be in [0, 1)")
    codes = np.asarray(codes)
    rng = np.random.default_rng(seed)
    val = []
    if fraction > 0:
        for c in np.unique(codes):
            pos = rng.permutation(np.flatnonzero(codes == c))
            if len(pos) >= 2:
                val.append(pos[:min(len(pos) - 1, max(1, int(round(fraction * len(pos)))))])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    fit = np.setdiff1d(np.arange(len(codes)), val)
    return fit.astype(np.int64), val.astype(np.int64)


def stratified_folds(codes, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified k-fold over codes (n,): [(fit positions, validation positions)].

    k = min(n_folds, the largest class); classes smaller than k are spread as far as they go.
    """
    codes = np.asarray(codes)
    counts = np.bincount(codes)
    k = max(2, min(n_folds, int(counts.max())))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(a.astype(np.int64), b.astype(np.int64))
                for a, b in skf.split(np.zeros((len(codes), 1)), codes)]


def as_grid(value, name: str) -> tuple[float, ...]:
    """A hyper-parameter given as one value or a sequence of candidates -> sorted tuple."""
    values = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else (value,)
    if not values:
        raise ValueError(f"{name}={value!r}: give a value or a non-empty sequence of candidates")
    for v in values:
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) \
                or not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={value!r}: candidates must be finite numbers >= 0")
    return tuple(sorted(float(v) for v in values))


# --------------------------------------------------------------------------------------------
# torch training with early stopping
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    """best_epoch: 1-based epoch whose state was kept; best_val: its validation loss (nan when no
    validation part); history: per epoch {"epoch", "train_loss", "val_loss"}."""

    best_epoch: int
    best_val: float
    history: list[dict]


def make_optimizer(params: Sequence[torch.Tensor], *, lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The Adam every trained head uses: the fused kernel (one pass over all parameters; about
    3x faster steps than the per-tensor loop on CPU) where torch has it for these tensors."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train_early_stopping(module: nn.Module, epoch_losses: Callable[[int], Iterable[torch.Tensor]],
                         validate: Callable[[], float] | None, *, lr: float, weight_decay: float,
                         max_epochs: int, patience: int) -> TrainResult:
    """Adam on module's parameters; one step per loss that epoch_losses(epoch) yields.

    After every epoch validate() (no gradients) gives the validation loss; training stops after
    `patience` epochs without improvement and the best epoch's state is restored. Without a
    validation part (validate None) it runs max_epochs and keeps the last state.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    opt = make_optimizer(params, lr=lr, weight_decay=weight_decay)
    best_val, best_epoch, best_state, history = float("inf"), 0, None, []
    progress = Progress(max_epochs, "epochs")
    for epoch in range(1, max_epochs + 1):
        module.train()
        total, count = 0.0, 0
        for loss in epoch_losses(epoch):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()), count + 1
        module.eval()
        val = float("nan")
        if validate is not None:
            with torch.no_grad():
                val = float(validate())
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val})
        progress.step(f"loss {history[-1]['train_loss']:.4f}"
                      + (f", validation loss {val:.4f}" if validate is not None else ""))
        if validate is None:
            best_epoch, best_val = epoch, val
            continue
        if best_state is None or val < best_val - 1e-12 * abs(best_val):
            best_val, best_epoch = val, epoch
            best_state = copy.deepcopy(module.state_dict())
        elif epoch - best_epoch >= patience:
            break
    progress.close(f"best epoch {best_epoch}")
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(best_epoch, best_val, history)


class Progress:
    """Progress of a long loop: a tqdm bar on a terminal; otherwise a log line every `every`
    seconds (and at the end), so that a log file shows the run is alive."""

    def __init__(self, total: int, unit: str, *, every: float = 10.0, logger=None):
        import sys
        import time
        from tqdm import tqdm
        self.log, self.unit, self.total, self.every = logger or log, unit, total, every
        self.n, self.start, self.last, self.time = 0, time.monotonic(), time.monotonic(), time.monotonic
        self.bar = (tqdm(total=total, unit=unit.rstrip("s"), leave=False)
                    if sys.stderr.isatty() else None)

    def step(self, note: str = "") -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(1)
        elif self.time() - self.last >= self.every:
            self.last = self.time()
            self.log.info("%d/%d %s: %s (%.0f s)", self.n, self.total, self.unit, note,
                          self.last - self.start)

    def close(self, note: str = "") -> None:
        if self.bar is not None:
            self.bar.close()
        if self.time() - self.start >= self.every:
            self.log.info("%d %s in %.0f s%s", self.n, self.unit, self.time() - self.start,
                          f"; {note}" if note else "")


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_json(path: Path, obj: dict) -> None:
    """obj as JSON (numpy values converted) at path, written atomically (cache.atomic_path),
    with the checksum of its content (cache.write_json) that read_json verifies."""
    data = with_checksum(obj, prepare=_jsonable)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


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


def _info(path: Path, cls: type, binary: str) -> dict:
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


# --------------------------------------------------------------------------------------------
# data held by a torch classifier during fit/predict
# --------------------------------------------------------------------------------------------
class RowData:
    """Training rows streamed from a RowSource: batches of (x (b, D) tensor, positions)."""

    def __init__(self, source: RowSource, indices: np.ndarray, chunk_mb: float,
                 device: torch.device, dtype: torch.dtype):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.chunk_mb, self.device, self.dtype = chunk_mb, device, dtype

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, positions: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """(batch positions, x) in the order of positions, reading chunk by chunk."""
        # chunks are whole batches, so the batches do not depend on chunk_mb
        for sl, rows in self.source.chunks(self.indices[positions], self.chunk_mb, batch_size):
            x = torch.as_tensor(rows, device=self.device).to(self.dtype)
            pos = positions[sl]
            for b0 in range(0, len(pos), batch_size):
                yield pos[b0:b0 + batch_size], x[b0:b0 + batch_size]


class TorchClassifierBase(ClassifierMixin, BaseEstimator):
    """A torch classifier trained with early stopping on a stratified, seeded validation part
    carved from the training part; `weight_decay` may be a grid, chosen on that part.

    Subclasses define __init__ (storing parameters only, incl. the common ones below),
    _build_module(n_classes) -> nn.Module, _make_data(X, indices) -> data with .batches(),
    _forward(module, batch) -> (logits (b, C), extra loss or None), and _meta()/_set_meta()
    for the data-dependent shapes needed to rebuild the module on load.
    Common parameters: lr, weight_decay, batch_size, max_epochs, patience, validation_fraction,
    seed, device, dtype. Fitted: classes_, module_, chosen_params_ (the hyper-parameters picked
    on the training part: weight_decay, epochs), history_.
    """

    # ---- subclass hooks -----------------------------------------------------------------
    def _build_module(self, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def _make_data(self, X, indices=None):
        raise NotImplementedError

    def _forward(self, module: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _meta(self) -> dict:
        return {}

    def _set_meta(self, meta: dict) -> None:
        pass

    def _features(self, module: nn.Module, batch) -> torch.Tensor:
        """The learned representation of a batch (b, D) that the module's last linear layer
        reads (for transform); classifiers that pool define it."""
        raise NotImplementedError(f"{type(self).__name__} has no learned representation")

    # ---- training -----------------------------------------------------------------------
    def _check_common(self) -> None:
        for name in ("lr", "batch_size", "max_epochs", "patience"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}={v!r} must be > 0")
        as_grid(self.weight_decay, "weight_decay")
        torch_dtype(self.dtype)

    def _fit_data(self, data, y) -> "TorchClassifierBase":
        """Train on `data` (len n) with labels y (n,); sets the fitted attributes."""
        self._check_common()
        self.classes_, codes = encode_labels(y)
        self.device_ = resolve_device(self.device)
        dtype = torch_dtype(self.dtype)
        fit_pos, val_pos = stratified_holdout(codes, self.validation_fraction, self.seed)
        targets = torch.as_tensor(codes, device=self.device_)
        best = None
        for wd in as_grid(self.weight_decay, "weight_decay"):
            cuda = [self.device_.index or 0] if self.device_.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # seeded here, the caller's RNG untouched
                torch.manual_seed(self.seed)  # the same initialisation and dropout for each
                module = self._build_module(len(self.classes_)).to(self.device_, dtype)
                rng = np.random.default_rng(self.seed)

                def epoch_losses(epoch, module=module, rng=rng):
                    order = rng.permutation(fit_pos)
                    for pos, batch in data.batches(order, int(self.batch_size)):
                        logits, extra = self._forward(module, batch)
                        loss = nn.functional.cross_entropy(logits, targets[pos])
                        yield loss if extra is None else loss + extra

                def validate(module=module):
                    total = 0.0
                    for pos, batch in data.batches(val_pos, int(self.batch_size)):
                        logits, _ = self._forward(module, batch)
                        total += float(nn.functional.cross_entropy(logits, targets[pos],
                                                                   reduction="sum"))
                    return total / len(val_pos)

                result = train_early_stopping(
                    module, epoch_losses, validate if len(val_pos) else None, lr=self.lr,
                    weight_decay=wd, max_epochs=int(self.max_epochs),
                    patience=int(self.patience))
            log.debug("%s weight_decay=%g: best epoch %d, val loss %.4f",
                      type(self).__name__, wd, result.best_epoch, result.best_val)
            if best is None or result.best_val < best[1].best_val:  # first (smallest) wins ties
                best = (wd, result, module)
        wd, result, module = best
        self.module_ = module.eval()
        self.chosen_params_ = {"weight_decay": wd, "epochs": result.best_epoch}
        self.history_ = result.history
        return self

    # ---- prediction ---------------------------------------------------------------------
    def _logits(self, data) -> np.ndarray:
        check_is_fitted(self, "module_")
        out = np.zeros((len(data), len(self.classes_)), dtype=np.float64)
        self.module_.eval()
        with torch.no_grad():
            for pos, batch in data.batches(np.arange(len(data)), int(self.batch_size)):
                logits, _ = self._forward(self.module_, batch)
                out[pos] = logits.double().cpu().numpy()
        return out

    def transform(self, X) -> np.ndarray:
        """(n, D) float64: each sample's learned representation, the input of the trained last
        linear layer (a new head can be fitted on it)."""
        check_is_fitted(self, "module_")
        data = self._make_data(X)
        parts = {}
        self.module_.eval()
        with torch.no_grad():
            for pos, batch in data.batches(np.arange(len(data)), int(self.batch_size)):
                for p, row in zip(pos, self._features(self.module_, batch).double().cpu().numpy()):
                    parts[int(p)] = row
        return np.stack([parts[i] for i in range(len(data))])

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n, n_classes) (logits), columns in classes_ order."""
        return self._logits(self._make_data(X))

    def predict_proba(self, X) -> np.ndarray:
        s = self.decision_function(X)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        return s / s.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    # ---- persistence --------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write folder `path`: params.json (class, parameters, classes_, chosen_params_, shapes)
        and state.pt (the module's state dict). No pickle."""
        check_is_fitted(self, "module_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / STATE_FILE) as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.module_.state_dict().items()}, tmp)
        write_json(path / PARAMS_FILE, {            # last: it holds state.pt's checksum
            "class": type(self).__name__, "params": self.get_params(deep=False),
            "classes": self.classes_, "classes_dtype": self.classes_.dtype.str,
            "chosen_params": self.chosen_params_, "meta": self._meta(),
            "history": self.history_, "files": {STATE_FILE: file_checksum(path / STATE_FILE)}})
        return path

    @classmethod
    def load(cls, path) -> "TorchClassifierBase":
        """The classifier saved by save(path); state read with torch.load(weights_only=True).
        Every file is checked against its checksum and the state for NaN/Inf; a damaged,
        foreign or non-finite file raises CorruptFileError naming it."""
        path = Path(path)
        info = _info(path, cls, STATE_FILE)
        try:
            state = torch.load(path / STATE_FILE, weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a foreign file
            why = ("holds objects other than tensors (refused: unpickling them could run code)"
                   if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__
                   else f"is not a torch state dict ({type(exc).__name__})")
            raise CorruptFileError(path / STATE_FILE, why, REFIT) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CorruptFileError(path / STATE_FILE, "is not a state dict of tensors", REFIT)
        for name, value in state.items():
            check_finite(path / STATE_FILE, name, value)
        self = cls(**_restore_params(info["params"]))
        self.classes_ = np.asarray(info["classes"], dtype=np.dtype(info["classes_dtype"]))
        self.chosen_params_ = info["chosen_params"]
        self.history_ = info["history"]
        self._set_meta(info["meta"])
        self.device_ = resolve_device(self.device)
        module = self._build_module(len(self.classes_)).to(self.device_,
                                                           torch_dtype(self.dtype))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CorruptFileError(path / STATE_FILE, "does not fit the model params.json "
                                   f"describes ({str(exc).splitlines()[0]})", REFIT) from None
        self.module_ = module.eval()
        return self


def pad_samples(samples: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length samples [(n_i, ...)] -> (padded (B, n_max, ...) zeros, mask (B, n_max))."""
    n_max = max(s.shape[0] for s in samples)
    out = samples[0].new_zeros((len(samples), n_max, *samples[0].shape[1:]))
    mask = torch.zeros((len(samples), n_max), dtype=torch.bool, device=samples[0].device)
    for i, s in enumerate(samples):
        out[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = True
    return out, mask


class SampleData:
    """In-memory samples (a list of prepared items) batched by a collate function."""

    def __init__(self, items: list, collate: Callable[[list], Any]):
        self.items, self.collate = items, collate

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, positions: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        for b0 in range(0, len(positions), batch_size):
            pos = positions[b0:b0 + batch_size]
            yield pos, self.collate([self.items[p] for p in pos])


class TorchRowHead(TorchClassifierBase):
    """A torch head on descriptor rows (n, D): fit(X, y) with X an array or an h5py Dataset, or
    fit_stream(read_rows, y, indices); rows are read as float32 chunks of at most chunk_mb MiB
    (never all rows at once, never float64). Subclasses: __init__ and _build_module."""

    def fit(self, X, y) -> "TorchRowHead":
        """X: (n, D) array, h5py Dataset or RowSource; y: (n,) labels."""
        y = np.asarray(y)
        return self.fit_stream(as_row_source(X, n_rows=len(y)), y)

    def fit_stream(self, read_rows, y, indices=None) -> "TorchRowHead":
        """Train on rows `indices` (default all) of a source of n rows.

        read_rows: a function read_rows(sorted int64 indices) -> (k, D) array, an h5py Dataset,
        an array or a RowSource. y: (n,) labels of *every* row the source serves (aligned with
        it); only y[indices] is read, so labels of rows outside the training part (e.g. the test
        part) can never influence training or the hyper-parameters chosen.
        """
        y = np.asarray(y)
        source = as_row_source(read_rows, n_rows=len(y))
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        self.n_features_in_ = source.n_features
        return self._fit_data(self._make_data(source, indices), y[indices])

    def _make_data(self, X, indices=None) -> RowData:
        source = as_row_source(X)
        if hasattr(self, "n_features_in_") and source.n_features != self.n_features_in_:
            raise ValueError(f"X has {source.n_features} features; the head was fitted on "
                             f"{self.n_features_in_}")
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        return RowData(source, indices, self.chunk_mb, resolve_device(self.device),
                       torch_dtype(self.dtype))

    def decision_function(self, X, indices=None) -> np.ndarray:
        """Class scores (n, n_classes) of rows `indices` (default all) of X (array, h5py Dataset
        or RowSource), streamed in float32 chunks."""
        return self._logits(self._make_data(X, indices))

    def predict(self, X, indices=None) -> np.ndarray:
        return self.classes_[self.decision_function(X, indices).argmax(axis=1)]

    def _forward(self, module, batch):
        return module(batch), None

    def in_basis(self, rows, A) -> "TorchRowHead":
        """This head, fitted on coordinates z = x rows^T A (see in_training_basis), made the same
        head on the rows x themselves: its first linear layer W becomes (W A^T) rows (exact, the
        layer is linear in z). In place; returns self."""
        check_is_fitted(self, "module_")
        name = next(n for n, m in self.module_.named_modules() if isinstance(m, nn.Linear))
        key = f"{name}.weight" if name else "weight"
        state = self.module_.state_dict()
        W = in_training_basis(state[key].double().cpu().numpy(), rows, A)
        state[key] = torch.as_tensor(W, dtype=state[key].dtype, device=state[key].device)
        self.n_features_in_ = W.shape[1]
        module = self._build_module(len(self.classes_)).to(self.device_, torch_dtype(self.dtype))
        module.load_state_dict(state)
        self.module_ = module.eval()
        return self

    def _meta(self) -> dict:
        return {"n_features_in": self.n_features_in_}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])


def in_training_basis(M: np.ndarray, rows, A: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """(M A^T) rows (k, D) float64: a linear map M (k, r) on coordinates z = x rows^T A (rows
    (n, D) the training rows, A (n, r); evaluate.coordinate_basis) as a map on the rows x
    themselves. rows are read `chunk` at a time in float64 (never all of them)."""
    M, A = np.asarray(M, dtype=np.float64), np.asarray(A, dtype=np.float64)
    if M.ndim != 2 or A.ndim != 2 or M.shape[1] != A.shape[1] or A.shape[0] != len(rows):
        raise ValueError(f"M {M.shape}, A {A.shape}, rows {tuple(rows.shape)}: need M (k, r), "
                         f"A (n, r) and rows (n, D)")
    B = M @ A.T
    out = np.zeros((len(M), rows.shape[1]))
    for i0 in range(0, len(rows), chunk):
        out += B[:, i0:i0 + chunk] @ np.asarray(rows[i0:i0 + chunk], dtype=np.float64)
    return out


# --------------------------------------------------------------------------------------------
# scikit-learn heads: linear scores from stored arrays, saved as JSON + npz (no pickle)
# --------------------------------------------------------------------------------------------
def select_by_cv(codes: np.ndarray, candidates: Sequence[float], score: Callable, *, n_folds: int,
                 seed: int, extend: int = 0, name: str = "C") -> tuple[float, dict]:
    """The candidate with the best mean validation score over seeded stratified folds of the
    training part; score(candidate, fit_positions, val_positions) -> accuracy. Ties: the first
    (smallest) candidate. One candidate: returned without any fitting. -> (choice, {c: mean}).

    extend > 0 (a log-spaced grid such as C): when the winner sits at an end of the grid and
    strictly beats every other candidate, the grid is extended past that end by the ratio of its
    two outermost values, up to `extend` steps per end, until the winner is interior; a winner
    still at an end is logged as a warning with its value (docs/statistics.md "C at the edge").
    """
    if len(candidates) == 1:
        return candidates[0], {}
    if np.bincount(np.asarray(codes)).max() < 2:       # one video per class: nothing to validate on
        middle = 1.0 if 1.0 in candidates else sorted(candidates)[len(candidates) // 2]
        log.warning("every class has one training video: no cross-validation possible; "
                    "using %s from the grid %s", middle, list(candidates))
        return middle, {}
    folds = stratified_folds(codes, n_folds, seed)
    means = {c: float(np.mean([score(c, a, b) for a, b in folds])) for c in candidates}
    grid = sorted(means)
    steps = {"top": 0, "bottom": 0}
    while True:
        best = max(grid, key=lambda c: (means[c], -grid.index(c)))
        others = max(means[c] for c in grid if c != best)
        end = "top" if best == grid[-1] else "bottom" if best == grid[0] else None
        if end is None or means[best] <= others:      # interior, or a plateau reaching inside
            return best, means
        ratio = grid[-1] / grid[-2] if end == "top" else (grid[1] / grid[0] if grid[0] > 0 else 0)
        if steps[end] >= extend or not ratio > 1:
            if extend:
                log.warning("%s=%g is at the %s of the grid %s after %d extension(s) (CV "
                            "accuracy %.4f); widen the grid past it", name, best, end,
                            [float(f"{c:.6g}") for c in grid], steps[end], means[best])
            return best, means
        new = float(f"{(best * ratio if end == 'top' else best / ratio):.6g}")
        means[new] = float(np.mean([score(new, a, b) for a, b in folds]))
        grid = sorted(means)
        steps[end] += 1
        log.info("%s=%g won at the %s of the grid: extended to %g (CV accuracy %.4f vs %.4f)",
                 name, best, end, new, means[new], means[best])


def _grid_of(cv_scores: dict) -> dict:
    """{"C_grid": the candidates select_by_cv scored, sorted} for chosen_params_ ({} without CV)."""
    return {"C_grid": sorted(float(c) for c in cv_scores)} if cv_scores else {}


def two_columns(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A binary model's (1, D), (1,) -> (2, D), (2,) scores [-s, s], so scores are (n, C) always."""
    if coef.shape[0] == 1:
        return np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
    return coef, intercept


class ArrayHeadBase(ClassifierMixin, BaseEstimator):
    """A head whose fitted state is numpy arrays (coef_ (C, D), intercept_ (C,), ...) and a few
    JSON values; scores (n, C) = rows @ coef_^T + intercept_, computed chunk-wise.

    Subclasses list their array attributes in _ARRAYS and implement fit / fit_stream.
    """

    _ARRAYS: tuple[str, ...] = ("coef_", "intercept_")

    def decision_function(self, X, indices=None) -> np.ndarray:
        """Scores (n, n_classes) of rows `indices` (default all) of X (array, h5py Dataset or
        RowSource), read as float32 chunks and multiplied in float64."""
        check_is_fitted(self, "coef_")
        source = as_row_source(X)
        if source.n_features != self.coef_.shape[1]:
            raise ValueError(f"X has {source.n_features} features; the head was fitted on "
                             f"{self.coef_.shape[1]}")
        indices = np.arange(source.n_rows) if indices is None else np.asarray(indices, np.int64)
        out = np.empty((len(indices), len(self.classes_)), dtype=np.float64)
        for sl, rows in source.chunks(indices, self.chunk_mb):
            out[sl] = rows.astype(np.float64) @ self.coef_.T + self.intercept_
        return out

    def predict(self, X, indices=None) -> np.ndarray:
        return self.classes_[self.decision_function(X, indices).argmax(axis=1)]

    def in_basis(self, rows, A) -> "ArrayHeadBase":
        """This head, fitted on coordinates z = x rows^T A (see in_training_basis), made the same
        head on the rows x themselves: coef_ becomes (coef_ A^T) rows (exact, the scores are
        linear in z). In place; returns self."""
        check_is_fitted(self, self._ARRAYS[0])
        if not hasattr(self, "coef_"):
            raise ValueError(f"{type(self).__name__} scores kernel rows, not feature rows: "
                             f"in_basis needs a head linear in its rows (coef_)")
        self.coef_ = in_training_basis(self.coef_, rows, A)
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def save(self, path) -> Path:
        """Folder `path`: params.json (class, parameters, classes_, chosen_params_) and
        arrays.npz (the fitted arrays). No pickle."""
        check_is_fitted(self, self._ARRAYS[0])
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ARRAYS_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{name: getattr(self, name) for name in self._ARRAYS})
        write_json(path / PARAMS_FILE, {            # last: it holds arrays.npz's checksum
            "class": type(self).__name__, "params": self.get_params(deep=False),
            "classes": self.classes_, "classes_dtype": self.classes_.dtype.str,
            "chosen_params": self.chosen_params_, "meta": self._meta(),
            "files": {ARRAYS_FILE: file_checksum(path / ARRAYS_FILE)}})
        return path

    @classmethod
    def load(cls, path) -> "ArrayHeadBase":
        """The head saved by save(path). Every file is checked against its checksum and the
        arrays for NaN/Inf and for one row per class; a damaged, foreign or non-finite file
        raises CorruptFileError naming it."""
        path = Path(path)
        info = _info(path, cls, ARRAYS_FILE)
        self = cls(**_restore_params(info["params"]))
        self.classes_ = np.asarray(info["classes"], dtype=np.dtype(info["classes_dtype"]))
        self.chosen_params_ = info["chosen_params"]
        try:
            with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
                for name in self._ARRAYS:
                    setattr(self, name, arrays[name])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(path / ARRAYS_FILE, f"is not the head's arrays "
                                   f"({type(exc).__name__}: {exc})", REFIT) from None
        for name in self._ARRAYS:
            check_finite(path / ARRAYS_FILE, name, getattr(self, name))
        check_classes(path, self.classes_, len(getattr(self, self._ARRAYS[-1])), self._ARRAYS[-1])
        self._set_meta(info["meta"])
        return self

    def _meta(self) -> dict:
        """What save() keeps besides the arrays: the input width and the C grid's CV scores."""
        return {"n_features_in": self.n_features_in_,
                "cv_scores": {repr(k): v for k, v in self.cv_scores_.items()}}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        self.cv_scores_ = {float(k): v for k, v in meta["cv_scores"].items()}
