"""Interaction-aware spatio-temporal pyramid attention (Du et al., ECCV 2018, Sec. 3, eq. 2-7;
docs/method.md, "Pyramid attention"): per layer j Y_j = W_j X_j^T + b_j (d, P) over P = K W H
positions, fused (max/sum/product), A = softmax over positions with l2-normalised rows,
M = A X_top; loss CE + beta l_inter + gamma l_attn. `pyramid`: the levels are stored maps of
different depths (Mixed_4f and Mixed_5c; res4/res5), the lower max-pooled to the top's grid;
`pyramid_windows`: the levels are sketched window features of different layers (ours)."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from pipeline.core.devices import resolve_device, torch_dtype
from pipeline.core.settings import check_int, store_params
from pipeline.learn.attention.base import PositionClassifierBase, masked_softmax, position_scale, positions
from pipeline.learn.attention.registry import (AttentionSpec, Option, choice, integer,
                                               register_attention)
from pipeline.learn.training import SampleData, pad_samples

log = logging.getLogger(__name__)

__all__ = ["FUSIONS", "PyramidAttention", "PyramidAttentionClassifier", "interaction_loss",
           "attention_loss", "pyramid_positions"]

FUSIONS = {
    "max": lambda ys: torch.stack(ys).amax(dim=0),
    "sum": lambda ys: torch.stack(ys).sum(dim=0),
    "product": lambda ys: torch.stack(ys).prod(dim=0),  # the best in STPA's ablation
}


def interaction_loss(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """l_inter = -sum(diag(A X X^T A^T)) + sum of squares of the off-diagonal of A A^T (STPA).

    A (B, d, P) attention, X (B, P, D) top-layer features (zero at padded positions) -> (B,).
    The first term rewards attended features of large norm, the second decorrelates the d maps.
    """
    M = A @ X
    AA = A @ A.mT
    off = AA - torch.diag_embed(torch.diagonal(AA, dim1=-2, dim2=-1))
    return -(M * M).sum(dim=(-1, -2)) + (off * off).sum(dim=(-1, -2))


def attention_loss(A: torch.Tensor, Ys: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """l_attn = sqrt(sum (1 - delta^2)), delta = |A - softmax(Y_j)| over layers j, maps and valid
    positions (STPA). A (B, d, P), Ys [(B, d, P)], mask (B, P) -> (B,)."""
    m = mask[:, None, :]
    total = sum(((1.0 - (A - masked_softmax(Y, m)) ** 2) * m).sum(dim=(-1, -2)) for Y in Ys)
    return torch.sqrt(total)


class PyramidAttention(nn.Module):
    """Layers [(B, P, D_j)] (top last) with mask (B, P) -> (logits (B, C), A (B, d, P), Ys).

    Y_j = W_j X_j^T + b_j: one linear map D_j -> n_maps per layer; fused entry-wise by `fusion`;
    A = masked softmax over positions, each row then l2-normalised; M = A X_top (B, d, D_top);
    logits = a linear layer on vec(M).
    """

    def __init__(self, dims: Sequence[int], n_classes: int, *, n_maps: int = 4,
                 fusion: str = "product"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is unknown; known: {', '.join(FUSIONS)}")
        self.fusion = fusion
        self.proj = nn.ModuleList(nn.Linear(D, n_maps) for D in dims)
        self.fc = nn.Linear(n_maps * dims[-1], n_classes)

    def attention(self, layers: Sequence[torch.Tensor], mask: torch.Tensor):
        """(A (B, d, P), [Y_j (B, d, P)])."""
        Ys = [proj(X).mT for proj, X in zip(self.proj, layers)]
        S = masked_softmax(FUSIONS[self.fusion](Ys), mask[:, None, :])
        return F.normalize(S, dim=-1), Ys

    def forward(self, layers: Sequence[torch.Tensor], mask: torch.Tensor):
        A, Ys = self.attention(layers, mask)
        return self.fc((A @ layers[-1]).flatten(1)), A, Ys

    def pooled(self, layers: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """vec(M) = vec(A X_top) (B, d D_top), what the linear layer reads."""
        return (self.attention(layers, mask)[0] @ layers[-1]).flatten(1)


def pyramid_positions(sample) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """A sample -> ([X_j (P, D_j)], position shape). sample: one array (n, f) or (n, D, H, W),
    or a list/tuple of layers (top last) sharing n. Lower map layers are max-pooled to the top
    layer's H x W (STPA; adaptive max pooling, to 1 x 1 when the top is a vector); a vector
    lower layer under a map top is repeated over its cells (ours)."""
    layers = list(sample) if isinstance(sample, (list, tuple)) else [sample]
    top = np.asarray(layers[-1], dtype=np.float64)
    _, shape = positions(top)
    H, W = (top.shape[2], top.shape[3]) if top.ndim == 4 else (1, 1)
    out = []
    for j, layer in enumerate(layers):
        x = np.asarray(layer, dtype=np.float64)
        if x.shape[0] != top.shape[0]:
            raise ValueError(f"layer {j} has {x.shape[0]} windows; the top layer {top.shape[0]}")
        if x.ndim == 4:
            pooled = F.adaptive_max_pool2d(torch.as_tensor(x), (H, W)).numpy()
            out.append(pooled.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]))
        elif x.ndim == 2:
            out.append(np.repeat(x, H * W, axis=0))
        else:
            raise ValueError(f"layer {j} has shape {x.shape}; expected (n, D) or (n, D, H, W)")
    return out, shape


class PyramidAttentionClassifier(PositionClassifierBase):
    """STPA trained end to end: total loss = CE + beta l_inter + gamma l_attn (1e-4 each, as
    the paper), Adam, early stopping on a stratified seeded validation part of the training part.

    fit(samples, y): samples = [layers] with layers one array ((n, f) windows, (n, D, H, W) maps)
    or a list of them (top last). n_maps: rows d of A (ours: 4). attention_map(samples): per
    sample A (n_maps, *positions), rows of unit l2 norm.
    """

    def __init__(self, *, n_maps: int = 4, fusion: str = "product", beta: float = 1e-4,
                 gamma: float = 1e-4, lr: float = 1e-2, weight_decay=0.0, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, validation_fraction: float = 0.2,
                 seed: int = 0, device: str = "cpu", dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _prepare(self, samples) -> list:
        if not isinstance(samples, (list, tuple)) or not samples:
            raise ValueError("samples must be a non-empty list of layers")
        device, dtype = resolve_device(self.device), torch_dtype(self.dtype)
        items = []
        scales = getattr(self, "input_scales_", None)       # None until fit has measured them
        for i, sample in enumerate(samples):
            if not isinstance(sample, (list, tuple)) or len(sample) < 2:
                raise ValueError(f"samples[{i}]: pyramid attention fuses two or more levels (maps "
                                 f"of different depths, top last); got "
                                 f"{len(sample) if isinstance(sample, (list, tuple)) else 1}")
            layers, shape = pyramid_positions(sample)
            if scales is not None:
                if len(scales) != len(layers):
                    raise ValueError(f"samples[{i}] has {len(layers)} levels; the classifier "
                                     f"was fitted on {len(scales)}")
                layers = [x * c for x, c in zip(layers, scales)]
            items.append(([torch.as_tensor(x, device=device).to(dtype) for x in layers], shape))
        dims = {tuple(x.shape[1] for x in layers) for layers, _ in items}
        if len(dims) != 1:
            raise ValueError(f"samples disagree on the layers' feature dimensions: {sorted(dims)}")
        return items

    def _make_data(self, samples, indices=None) -> SampleData:
        items = self._prepare(samples)
        dims = [x.shape[1] for x in items[0][0]]
        if dims != self.layer_dims_:
            raise ValueError(f"layer dimensions {dims}; the classifier was fitted on "
                             f"{self.layer_dims_}")

        def collate(batch):
            mask = None
            layers = []
            for j in range(len(dims)):
                padded, mask = pad_samples([item[0][j] for item in batch])
                layers.append(padded)
            return layers, mask

        return SampleData(items, collate)

    def fit(self, samples, y):
        """samples: [layers]; y: (n,) labels."""
        y = np.asarray(y)
        if len(y) != len(samples):
            raise ValueError(f"y has {len(y)} labels for {len(samples)} samples")
        self.input_scales_ = None
        items = self._prepare(samples)
        self.layer_dims_ = [x.shape[1] for x in items[0][0]]
        self.n_features_in_ = self.layer_dims_[-1]
        self.input_scales_ = [position_scale(layers[j].cpu().numpy() for layers, _ in items)
                              for j in range(len(self.layer_dims_))]      # one per level
        return self._fit_data(self._make_data(samples), y)

    def _build_module(self, n_classes: int) -> nn.Module:
        return PyramidAttention(self.layer_dims_, n_classes,
                                n_maps=check_int("n_maps", self.n_maps, 1), fusion=self.fusion)

    def _forward(self, module, batch):
        layers, mask = batch
        logits, A, Ys = module(layers, mask)
        extra = (self.beta * interaction_loss(A, layers[-1])
                 + self.gamma * attention_loss(A, Ys, mask)).mean()
        return logits, extra

    def _features(self, module, batch):
        return module.pooled(*batch)

    def attention_map(self, samples, **kwargs) -> list[np.ndarray]:
        """Per sample A (n_maps, *positions), rows of unit l2 norm."""
        check_is_fitted(self, "module_")
        items = self._prepare(samples)
        out = []
        with torch.no_grad():
            for layers, shape in items:
                mask = torch.ones(1, layers[0].shape[0], dtype=torch.bool,
                                  device=layers[0].device)
                A, _ = self.module_.attention([x[None] for x in layers], mask)
                out.append(A[0].double().cpu().numpy().reshape(A.shape[1], *shape))
        return out

    def _meta(self) -> dict:
        return {"n_features_in": self.n_features_in_, "layer_dims": self.layer_dims_,
                "input_scales": self.input_scales_}

    def _set_meta(self, meta: dict) -> None:
        self.n_features_in_ = int(meta["n_features_in"])
        self.layer_dims_ = [int(v) for v in meta["layer_dims"]]
        scales = meta.get("input_scales")               # models saved before: unscaled
        self.input_scales_ = [float(c) for c in scales] if scales else [1.0] * len(self.layer_dims_)


def _positive(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be a number >= 0")
    return float(value)


OPTIONS = {
    "pyramid_fusion": Option("product", str, "pyramid: fusion of the levels' scores: product (the "
                                             "best in STPA's ablation), sum or max",
                             choice(*FUSIONS)),
    "maps": Option(4, int, "pyramid: attention maps d (rows of A); the paper leaves d to the "
                           "reader (ours: 4)", integer(1)),
    "pyramid_beta": Option(1e-4, float, "pyramid: weight beta of the interaction loss (the "
                                        "paper's 1e-4)", _positive),
    "pyramid_gamma": Option(1e-4, float, "pyramid: weight gamma of the attention loss (the "
                                         "paper's 1e-4)", _positive),
}


def _params(t, d) -> dict:
    return {"fusion": t.pyramid_fusion, "n_maps": t.maps, "beta": t.pyramid_beta,
            "gamma": t.pyramid_gamma}


register_attention(AttentionSpec(
    name="pyramid", classifier=PyramidAttentionClassifier, inputs="levels", options=OPTIONS,
    params=_params, row_name=lambda p, pooling: f"STPA over cells ({p['fusion']})",
    doc="STPA over the cells of maps of two or more depths (the paper)"))
register_attention(AttentionSpec(
    name="pyramid_windows", classifier=PyramidAttentionClassifier, inputs="window_levels",
    options=OPTIONS, params=_params, row_name=lambda p, pooling: f"STPA over windows ({p['fusion']})",
    doc="STPA over the sketched windows, levels the window features of two or more layers (ours)"))
