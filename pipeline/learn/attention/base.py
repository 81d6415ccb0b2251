"""Shared part of the attention classifiers over positions (AP, pyramid, self-attention): samples
as (n, f) window features or (n, D, H, W) maps -> positions (n H W, D), padded batches with masks,
and attention maps reshaped back to the sample's positions."""
from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from pipeline.core.devices import resolve_device, torch_dtype
from pipeline.learn.training import SampleData, TorchClassifierBase, pad_samples

log = logging.getLogger(__name__)

__all__ = ["positions", "position_scale", "PositionClassifierBase", "masked_softmax"]


def positions(sample) -> tuple[np.ndarray, tuple[int, ...]]:
    """(X (P, f) float64, position shape): (n, f) -> ((n, f), (n,)); maps (n, D, H, W) ->
    ((n H W, D), (n, H, W)), position (t, h, w) at row (t H + h) W + w."""
    x = np.asarray(sample, dtype=np.float64)
    if x.ndim == 2:
        return x, (x.shape[0],)
    if x.ndim == 4:
        n, D, H, W = x.shape
        return x.transpose(0, 2, 3, 1).reshape(n * H * W, D), (n, H, W)
    raise ValueError(f"a sample has shape {x.shape}; expected (n, f) windows or (n, D, H, W) maps")


def position_scale(xs) -> float:
    """1 / the mean l2 norm of the positions' features over the training samples `xs` ((P, f)
    arrays), 1 when that mean is 0. Frozen maps come at the backbone's arbitrary scale (measured:
    mean norm about 3e-6 for the random-weight flow I3D of the demo, about 10 for Kinetics
    I3D's Mixed_5c) and scores such as AP's (X a)^T (X b) are quadratic in X, so training on them
    unscaled stalls or diverges; one scalar per level, fitted on the training part and stored
    with the model, leaves each model's function class unchanged (ours; docs/method.md
    "Attention")."""
    norms = [np.linalg.norm(np.asarray(x, np.float64), axis=1) for x in xs]
    total, count = sum(float(n.sum()) for n in norms), sum(len(n) for n in norms)
    mean = total / count if count else 0.0
    return 1.0 / mean if mean > 0 and np.isfinite(mean) else 1.0


def masked_softmax(s: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax of s over `dim` where mask is True (broadcast); 0 elsewhere."""
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=dim).masked_fill(~mask, 0.0)


class PositionClassifierBase(TorchClassifierBase):
    """A torch classifier over a variable number of positions per sample.

    fit(samples, y): samples = [(n_i, f) or (n_i, D, H, W) arrays] (all f / D equal). Subclasses
    provide _build_module and _attention(module, X (B, P, f), mask (B, P)) -> (B, ..., P) maps;
    forward returns (logits, extra loss or None).
    """

    def _prepare(self, samples) -> list:
        if not isinstance(samples, (list, tuple)) or not samples:
            raise ValueError("samples must be a non-empty list of (n, f) or (n, D, H, W) arrays")
        device, dtype = resolve_device(self.device), torch_dtype(self.dtype)
        items = []
        scale = getattr(self, "input_scale_", 1.0)      # 1 until fit has measured it
        for i, sample in enumerate(samples):
            x, shape = positions(sample)
            if x.shape[0] < 1 or not np.isfinite(x).all():
                raise ValueError(f"samples[{i}] is empty or holds NaN/Inf")
            items.append((torch.as_tensor(x * scale, device=device).to(dtype), shape))
        dims = {x.shape[1] for x, _ in items}
        if len(dims) != 1:
            raise ValueError(f"samples disagree on the feature dimension: {sorted(dims)}")
        return items

    def _make_data(self, samples, indices=None) -> SampleData:
        items = self._prepare(samples)
        f = items[0][0].shape[1]
        if f != self.n_features_in_:
            raise ValueError(f"samples have {f} features; the classifier was fitted on "
                             f"{self.n_features_in_}")
        return SampleData(items, lambda batch: pad_samples([x for x, _ in batch]))

    def fit(self, samples, y):
        """samples: [(n_i, f) or (n_i, D, H, W)]; y: (n,) labels."""
        y = np.asarray(y)
        if len(y) != len(samples):
            raise ValueError(f"y has {len(y)} labels for {len(samples)} samples")
        self.input_scale_ = 1.0
        items = self._prepare(samples)
        self.n_features_in_ = items[0][0].shape[1]
        self.input_scale_ = position_scale(x.cpu().numpy() for x, _ in items)
        return self._fit_data(self._make_data(samples), y)

    def _attention(self, module, X: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def attention_map(self, samples, **kwargs) -> list[np.ndarray]:
        """Per sample, its attention over positions, shaped (*component axes, *position shape):
        see the subclass for the component axes; positions are (n,) or (n, H, W)."""
        check_is_fitted(self, "module_")
        items = self._prepare(samples)
        out = []
        with torch.no_grad():
            for x, shape in items:
                mask = torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device)
                maps = self._attention(self.module_, x[None], mask, **kwargs)[0]
                out.append(maps.double().cpu().numpy().reshape(*maps.shape[:-1], *shape))
        return out

    def _meta(self) -> dict:
        return {"n_features_in": self.n_features_in_, "input_scale": self.input_scale_}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        self.input_scale_ = float(meta.get("input_scale", 1.0))   # models saved before: unscaled
