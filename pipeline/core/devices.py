"""Where torch work runs: the device a `device=` setting names, dtypes by name, and giving the
host's freed memory back between large passes."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

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


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_host_memory() -> bool:
    """Give the C heap's free pages back to the OS; True where that was possible (glibc).

    Tensors below glibc's mmap threshold (which rises to 32 MB as large blocks are freed) come
    from the heap; between passes of varying sizes, with small arrays that stay alive in between,
    the freed holes stay resident and peak memory creeps up with a video's length. Called after
    each trunk chunk (pipeline.extract.trunk), it keeps memory bounded by the chunk (measured in
    docs/stage1.md, "Memory")."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
