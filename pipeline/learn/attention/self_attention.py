"""Self-attention pooling (Vaswani et al. 2017, scaled dot-product; METHOD.md "Further attention"):
m learned queries Q (m, d_k) attend over the window features X (n, f): softmax(Q K^T / sqrt(d_k)) V
with K = X W_k, V = X W_v (or X), pooled to (m, d_v) and classified by a linear softmax layer."""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from pipeline.core.settings import check_int
from pipeline.learn.attention.base import PositionClassifierBase, masked_softmax

log = logging.getLogger(__name__)

__all__ = ["SelfAttentionPooling", "SelfAttentionClassifier"]


class SelfAttentionPooling(nn.Module):
    """X (B, n, f), mask (B, n) -> logits (B, C); attention(X, mask) -> (B, m, n).

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


class SelfAttentionClassifier(PositionClassifierBase):
    """Self-attention pooling trained end to end (cross-entropy, Adam, early stopping on a
    stratified seeded validation part of the training part).

    fit(samples, y): samples [(n_i, f) windows or (n_i, D, H, W) maps]. attention_map(samples):
    per sample (n_queries, *positions), each row summing to 1. n_queries defaults to 4, as
    TrainConfig.queries (arid_train, 15 folds: 87.1% against 82.2% with one query).
    """

    def __init__(self, *, n_queries: int = 4, key_dim: int = 64, value_dim: int = 0,
                 lr: float = 1e-2, weight_decay=0.0, batch_size: int = 32, max_epochs: int = 100,
                 patience: int = 10, validation_fraction: float = 0.2, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32"):
        self.n_queries = n_queries
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device
        self.dtype = dtype

    def _build_module(self, n_classes: int) -> nn.Module:
        return SelfAttentionPooling(self.n_features_in_, n_classes,
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
