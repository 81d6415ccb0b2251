"""Where torch work runs: the device a `device=` setting names, and dtypes by name."""
from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when present, else CPU). Determinism is promised
    on the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(name: str) -> torch.dtype:
    """'float32' or 'float64' -> the torch dtype."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype={name!r} is unknown; known: {', '.join(table)}")
    return table[name]
