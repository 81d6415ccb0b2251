"""Torch training shared by the torch heads and every attention classifier: early stopping on a
stratified, seeded validation part of the training part, a weight-decay grid chosen there,
progress on terminals and in logs, and save/load through learn/persistence.py."""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from pipeline.core.cache import CorruptFileError, atomic_path
from pipeline.core.devices import resolve_device, torch_dtype
from pipeline.learn.selection import as_grid, encode_labels, stratified_holdout
from pipeline.learn.persistence import (REFIT, STATE_FILE, check_finite, read_params, restore,
                                        write_params)
from pipeline.core.progress import Progress

log = logging.getLogger(__name__)


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
    progress = Progress(max_epochs, "epochs", logger=log)
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
        write_params(path, self, STATE_FILE, history=self.history_)  # last: state.pt's checksum
        return path

    @classmethod
    def load(cls, path) -> "TorchClassifierBase":
        """The classifier saved by save(path); state read with torch.load(weights_only=True).
        Every file is checked against its checksum and the state for NaN/Inf; a damaged,
        foreign or non-finite file raises CorruptFileError naming it."""
        path = Path(path)
        info = read_params(path, cls, STATE_FILE)
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
        self = restore(cls, info)
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
