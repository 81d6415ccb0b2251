"""A small MLP head in torch: x (n, D) -> Linear(D, h) -> ReLU -> Dropout -> Linear(h, C) -> (n, C),
trained with cross-entropy and early stopping (a further head, docs/method.md "Heads")."""
from __future__ import annotations

import logging

from torch import nn

from pipeline.core.settings import store_params
from pipeline.learn.heads.base import TorchRowHead

log = logging.getLogger(__name__)

__all__ = ["MLPHead"]


class MLPHead(TorchRowHead):
    """One hidden layer of `hidden` ReLU units with dropout (ours: the paper gives no layout).

    Training as LinearHead: Adam, L2 weight_decay (one value or candidates chosen on the
    stratified validation part of the training part), early stopping, float32 row chunks.
    """

    def __init__(self, *, hidden: int = 256, dropout: float = 0.5, lr: float = 1e-3,
                 weight_decay=(0.0, 1e-4, 1e-3), batch_size: int = 64, max_epochs: int = 200,
                 patience: int = 10, validation_fraction: float = 0.2, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32", chunk_mb: float = 256.0):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _build_module(self, n_classes: int) -> nn.Module:
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"hidden={self.hidden!r} must be an integer >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        return nn.Sequential(nn.Linear(self.n_features_in_, self.hidden), nn.ReLU(),
                             nn.Dropout(self.dropout), nn.Linear(self.hidden, n_classes))
