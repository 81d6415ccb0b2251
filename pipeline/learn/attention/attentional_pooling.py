"""Attentional pooling (Girdhar & Ramanan, NeurIPS 2017, Sec. 3.1-3.2; docs/method.md,
"Attentional pooling") over n positions X (n, f): score(X, k) = (X a_k)^T (X b) = Tr(X^T X b a_k^T),
a rank-1 approximation of second-order pooling Tr(X^T X W_k^T); rank P, per-class bottom-up b_k;
average pooling = top-down only. `ap`: the paper's positions, the H' x W' cells of each window's
last convolutional map; `ap_windows`: the sketched windows as positions (our variant)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from pipeline.core.settings import check_int, store_params
from pipeline.learn.attention.base import PositionClassifierBase
from pipeline.learn.attention.registry import AttentionSpec, Option, choice, integer, register_attention

log = logging.getLogger(__name__)

__all__ = ["AttentionalPooling", "AttentionalPoolingClassifier"]


class AttentionalPooling(nn.Module):
    """Class scores of X (B, n, f) with mask (B, n) -> (B, K) (AP eq. 5-7).

    score_k = s * sum_p (X a_kp)^T (X b_p) + c_k with top-down a (K, P, f); bottom-up b (P, f)
    shared by the classes, or b (K, P, f) with per_class_bottom_up; bottom_up=False replaces X b
    by ones, giving s * sum_p 1^T X a_kp = a_k^T mean(X): average pooling, the top-down-only case.
    s = 1/n with mean_over_positions (ours: videos differ in n), else 1. bias: c (K,).
    """

    def __init__(self, f: int, n_classes: int, *, rank: int = 1, bottom_up: bool = True,
                 per_class_bottom_up: bool = False, mean_over_positions: bool = True,
                 bias: bool = True):
        super().__init__()
        self.mean_over_positions = mean_over_positions
        std = f ** -0.5
        self.a = nn.Parameter(torch.randn(n_classes, rank, f) * std)
        if not bottom_up:
            self.b = None
        elif per_class_bottom_up:
            self.b = nn.Parameter(torch.randn(n_classes, rank, f) * std)
        else:
            self.b = nn.Parameter(torch.randn(rank, f) * std)
        self.bias = nn.Parameter(torch.zeros(n_classes)) if bias else None

    def top_down(self, X: torch.Tensor) -> torch.Tensor:
        """Class-specific maps X a_kp: (B, n, f) -> (B, K, P, n)."""
        return torch.einsum("bnf,kpf->bkpn", X, self.a)

    def bottom_up(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Saliency maps X b_p: (B, P, n), or (B, K, P, n) per class; ones (B, 1, 1, n) on the
        valid positions without bottom-up."""
        if self.b is None:
            return mask[:, None, None, :].to(X.dtype)
        if self.b.ndim == 2:
            return torch.einsum("bnf,pf->bpn", X, self.b) * mask[:, None, :]
        return torch.einsum("bnf,kpf->bkpn", X, self.b) * mask[:, None, None, :]

    def pooled(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The class-independent part of the score, (B, P f) (or (B, K P f) with per-class b;
        (B, f) without bottom-up): s X^T (X b_p) per rank, the features the bottom-up map
        attends to, so that score_k = sum_p a_kp . pooled_p + c_k."""
        bu = self.bottom_up(X, mask)
        bu = bu[:, :, 0] if self.b is None else bu               # ones: (B, 1, n)
        pooled = torch.einsum("b...n,bnf->b...f", bu, X)
        if self.mean_over_positions:
            pooled = pooled / mask.sum(dim=1).to(X.dtype).view(-1, *[1] * (pooled.ndim - 1))
        return pooled.flatten(1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        td = self.top_down(X)
        bu = self.bottom_up(X, mask)
        bu = bu[:, None] if bu.ndim == 3 else bu
        score = (td * bu).sum(dim=(-1, -2))  # (B, K)
        if self.mean_over_positions:
            score = score / mask.sum(dim=1, keepdim=True).to(X.dtype)
        return score if self.bias is None else score + self.bias


class AttentionalPoolingClassifier(PositionClassifierBase):
    """AP trained end to end (cross-entropy, Adam, early stopping on a stratified seeded
    validation part of the training part; weight_decay may be a grid chosen there).

    fit(samples, y): samples [(n_i, f) windows or (n_i, D, H, W) maps]. attention_map(samples,
    kind): "bottom_up" -> per sample (P, *positions) (or (K, P, *positions) per class), "top_down"
    -> (K, P, *positions), the class maps X a_kp.
    """

    def __init__(self, *, rank: int = 1, bottom_up: bool = True,
                 per_class_bottom_up: bool = False, mean_over_positions: bool = True,
                 lr: float = 1e-2, weight_decay=0.0, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, validation_fraction: float = 0.2,
                 seed: int = 0, device: str = "cpu", dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _build_module(self, n_classes: int) -> nn.Module:
        return AttentionalPooling(self.n_features_in_, n_classes,
                                  rank=check_int("rank", self.rank, 1),
                                  bottom_up=bool(self.bottom_up),
                                  per_class_bottom_up=bool(self.per_class_bottom_up),
                                  mean_over_positions=bool(self.mean_over_positions))

    def _forward(self, module, batch):
        X, mask = batch
        return module(X, mask), None

    def _features(self, module, batch):
        return module.pooled(*batch)

    def _attention(self, module, X, mask, kind: str = "bottom_up"):
        if kind == "top_down":
            return module.top_down(X)
        if kind != "bottom_up":
            raise ValueError(f"kind={kind!r} must be 'bottom_up' or 'top_down'")
        return module.bottom_up(X, mask)

    def attention_map(self, samples, kind: str = "bottom_up"):
        """Per sample: kind="bottom_up" the saliency X b (P, *positions) ((K, P, *positions)
        with per-class b; ones without bottom-up); kind="top_down" X a (K, P, *positions)."""
        if kind not in ("bottom_up", "top_down"):
            raise ValueError(f"kind={kind!r} must be 'bottom_up' or 'top_down'")
        return super().attention_map(samples, kind=kind)


OPTIONS = {
    "rank": Option(1, int, "ap, ap_windows: rank P (P top-down x bottom-up pairs); the paper's "
                           "rank-1 is its main model", integer(1)),
    "bottom_up": Option("shared", str, "ap, ap_windows: 'shared' b (the paper), 'per_class' b_k, "
                                       "or 'none' (average pooling, the top-down-only case)",
                        choice("shared", "per_class", "none")),
}


def _params(t, d) -> dict:
    return {"rank": t.rank, "bottom_up": t.bottom_up != "none",
            "per_class_bottom_up": t.bottom_up == "per_class"}


def _row_name(where: str):
    def name(p: dict, pooling: str) -> str:
        if not p["bottom_up"]:
            return f"average pooling over {where}"
        return (f"AP over {where} (rank-{p['rank']}"
                f"{', per-class' if p['per_class_bottom_up'] else ''})")
    return name


register_attention(AttentionSpec(
    name="ap", classifier=AttentionalPoolingClassifier, inputs="cells", options=OPTIONS,
    params=_params, row_name=_row_name("cells"),
    doc="attentional pooling over the cells of the last convolutional map (the paper)"))
register_attention(AttentionSpec(
    name="ap_windows", classifier=AttentionalPoolingClassifier, inputs="windows", options=OPTIONS,
    params=_params, row_name=_row_name("windows"),
    doc="attentional pooling over the sketched windows (ours)"))
