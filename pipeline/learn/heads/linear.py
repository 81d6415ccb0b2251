"""Linear softmax head in torch: scores = x W^T + b on descriptor rows x (n, D) -> (n, C), trained
with cross-entropy and early stopping (HoT's "linear (softmax) layer"; docs/method.md "Heads")."""
from __future__ import annotations

import logging

from torch import nn

from pipeline.core.settings import store_params
from pipeline.learn.heads.base import TorchRowHead

log = logging.getLogger(__name__)

__all__ = ["LinearHead"]


class LinearHead(TorchRowHead):
    """Multinomial logistic regression trained by Adam on float32 row chunks.

    weight_decay: L2 penalty, one value or candidates chosen on a stratified validation part of
    the training part (validation_fraction, seed); training stops after `patience` epochs without
    a better validation loss and keeps the best epoch. chunk_mb: rows read at once (MiB).
    """

    def __init__(self, *, lr: float = 1e-2, weight_decay=(0.0, 1e-4, 1e-3), batch_size: int = 64,
                 max_epochs: int = 200, patience: int = 10, validation_fraction: float = 0.2,
                 seed: int = 0, device: str = "cpu", dtype: str = "float32",
                 chunk_mb: float = 256.0):
        store_params(self, locals())   # scikit-learn: __init__ only stores

    def _build_module(self, n_classes: int) -> nn.Module:
        return nn.Linear(self.n_features_in_, n_classes)
