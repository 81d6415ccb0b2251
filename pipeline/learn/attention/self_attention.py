"""Self-attention over a video's positions (Vaswani et al. 2017; docs/method.md, "Self-attention"):
multi-head scaled dot-product attention with queries, keys and values all computed from the
positions X (n, f), then mean-pooled to one vector (`self`, `self_cells`); and attention pooling
with m *learned* queries (`learned_query`), a different model kept under its own name."""
from __future__ import annotations

import logging
import math

import numpy as np

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from pipeline.core.settings import check_int, store_params
from pipeline.learn.attention.base import PositionClassifierBase, masked_softmax
from pipeline.learn.attention.registry import (AttentionSpec, Option, integer,
                                               register_attention)

log = logging.getLogger(__name__)

__all__ = ["MultiHeadSelfAttention", "SelfAttentionClassifier", "LearnedQueryPooling",
           "LearnedQueryClassifier"]


class MultiHeadSelfAttention(nn.Module):
    """X (B, n, f), mask (B, n) -> logits (B, C) (docs/method.md, "Self-attention").

    Q = X W_q, K = X W_k, V = X W_v (f -> width each), cut into h heads of width / h columns;
    head i: A_i = softmax(Q_i K_i^T / sqrt(width / h)) over the valid keys, O_i = A_i V_i;
    Y = [O_1 ... O_h] W_o (B, n, width): one output per position, permutation-equivariant;
    pooled = the mean of Y over the valid positions (B, width); logits = a linear layer on it.
    """

    def __init__(self, f: int, n_classes: int, *, heads: int = 4, width: int = 64):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.heads, self.width = heads, width
        self.q, self.k, self.v = (nn.Linear(f, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.fc = nn.Linear(width, n_classes)

    def _split(self, Z: torch.Tensor) -> torch.Tensor:
        B, n, _ = Z.shape
        return Z.view(B, n, self.heads, self.width // self.heads).transpose(1, 2)  # (B, h, n, w/h)

    def attention(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, h, n, n): row i of head j, the weights query position i gives the key positions."""
        Q, K = self._split(self.q(X)), self._split(self.k(X))
        s = Q @ K.mT / math.sqrt(self.width // self.heads)
        return masked_softmax(s, mask[:, None, None, :])

    def encoded(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Y (B, n, width), one row per position (zero at padded positions)."""
        O = self.attention(X, mask) @ self._split(self.v(X))                  # (B, h, n, w/h)
        Y = self.out(O.transpose(1, 2).reshape(*X.shape[:2], self.width))
        return Y * mask[..., None].to(Y.dtype)

    def pooled(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, width): the mean of the encoded positions over the valid ones."""
        return self.encoded(X, mask).sum(1) / mask.sum(1, keepdim=True).to(X.dtype)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(X, mask))


class SelfAttentionClassifier(PositionClassifierBase):
    """Multi-head self-attention over positions, mean-pooled, trained end to end (cross-entropy,
    Adam, early stopping on a stratified seeded validation part of the training part).

    fit(samples, y): samples [(n_i, f) windows or (n_i, D, H, W) maps]. attention_map(samples):
    per sample (heads, *positions), the attention each position receives, averaged over the
    query positions (each row sums to 1); attention_matrix(samples): (heads, P, P).
    """

    def __init__(self, *, heads: int = 4, width: int = 64, lr: float = 1e-2, weight_decay=0.0,
                 batch_size: int = 32, max_epochs: int = 100, patience: int = 10,
                 validation_fraction: float = 0.2, seed: int = 0, device: str = "cpu",
                 dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _build_module(self, n_classes: int) -> nn.Module:
        return MultiHeadSelfAttention(self.n_features_in_, n_classes,
                                      heads=check_int("heads", self.heads, 1),
                                      width=check_int("width", self.width, 1))

    def _forward(self, module, batch):
        X, mask = batch
        return module(X, mask), None

    def _attention(self, module, X, mask, full: bool = False):
        A = module.attention(X, mask)                                         # (B, h, n, n)
        if full:
            return A
        return A.sum(2) / mask.sum(1).to(A.dtype)[:, None, None]             # (B, h, n)

    def attention_matrix(self, samples) -> list[np.ndarray]:
        """Per sample (heads, P, P) over its P positions (flattened, as base.positions)."""
        check_is_fitted(self, "module_")
        out = []
        with torch.no_grad():
            for x, _ in self._prepare(samples):
                mask = torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device)
                out.append(self._attention(self.module_, x[None], mask, full=True)[0]
                           .double().cpu().numpy())
        return out

    def _features(self, module, batch):
        return module.pooled(*batch)


class LearnedQueryPooling(nn.Module):
    """X (B, n, f), mask (B, n) -> logits (B, C); attention(X, mask) -> (B, m, n).

    m learned queries Q (m, d_k) attend over the positions: softmax(Q K^T / sqrt(d_k)) V with
    K = X W_k, V = X W_v (or X); the queries are parameters, not computed from X.

    n_queries m, key_dim d_k; value_dim d_v = 0 keeps V = X (d_v = f), else V = X W_v.
    """

    def __init__(self, f: int, n_classes: int, *, n_queries: int = 1, key_dim: int = 64,
                 value_dim: int = 0):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, key_dim) / math.sqrt(key_dim))
        self.key = nn.Linear(f, key_dim)
        self.value = nn.Identity() if value_dim == 0 else nn.Linear(f, value_dim)
        self.fc = nn.Linear(n_queries * (f if value_dim == 0 else value_dim), n_classes)

    def attention(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("md,bnd->bmn", self.query, self.key(X)) / math.sqrt(self.query.shape[1])
        return masked_softmax(s, mask[:, None, :])

    def pooled(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, m d_v): the attended values of the m queries, concatenated."""
        return (self.attention(X, mask) @ self.value(X)).flatten(1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(X, mask))


class LearnedQueryClassifier(PositionClassifierBase):
    """Attention pooling with learned queries trained end to end (cross-entropy, Adam, early stopping on a
    stratified seeded validation part of the training part).

    fit(samples, y): samples [(n_i, f) windows or (n_i, D, H, W) maps]. attention_map(samples):
    per sample (n_queries, *positions), each row summing to 1. n_queries defaults to 4, as
    the option queries (4 beat 1 on real video: docs/results.md).
    """

    def __init__(self, *, n_queries: int = 4, key_dim: int = 64, value_dim: int = 0,
                 lr: float = 1e-2, weight_decay=0.0, batch_size: int = 32, max_epochs: int = 100,
                 patience: int = 10, validation_fraction: float = 0.2, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32"):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _build_module(self, n_classes: int) -> nn.Module:
        return LearnedQueryPooling(self.n_features_in_, n_classes,
                                    n_queries=check_int("n_queries", self.n_queries, 1),
                                    key_dim=check_int("key_dim", self.key_dim, 1),
                                    value_dim=check_int("value_dim", self.value_dim, 0))

    def _forward(self, module, batch):
        X, mask = batch
        return module(X, mask), None

    def _attention(self, module, X, mask, **kwargs):
        return module.attention(X, mask)

    def _features(self, module, batch):
        return module.pooled(*batch)


HEADS = {"self_heads": Option(4, int, "self, self_cells: attention heads (Vaswani et al. use 8 over "
                                  "512 dimensions; 4 over width 64 for the few videos of a split)",
                         integer(1)),
         "self_width": Option(64, int, "self, self_cells: width of Q, K, V and the output (ours: "
                                  "small, as the learned-query model's key_dim)", integer(1))}
QUERIES = {"queries": Option(4, int, "learned_query: learned queries (4 beat 1 on real video: "
                                     "docs/results.md)", integer(1))}


def _self_name(where: str):
    return lambda p, pooling: f"self-attention over {where} ({p['heads']} heads)"


for _name, _inputs, _where in (("self", "windows", "windows"), ("self_cells", "cells", "cells")):
    register_attention(AttentionSpec(
        name=_name, classifier=SelfAttentionClassifier, inputs=_inputs, options=HEADS,
        params=lambda t, d: {"heads": t.self_heads, "width": t.self_width}, row_name=_self_name(_where),
        doc=f"multi-head scaled dot-product self-attention over a video's {_where}, mean-pooled"))
register_attention(AttentionSpec(
    name="learned_query", classifier=LearnedQueryClassifier, inputs="windows", options=QUERIES,
    params=lambda t, d: {"n_queries": t.queries},
    row_name=lambda p, pooling: (f"learned-query pooling over windows ({p['n_queries']} "
                                 f"quer{'y' if p['n_queries'] == 1 else 'ies'})"),
    doc="attention pooling with m learned queries over the windows (not self-attention)"))
