"""Where the numpy pooling engine runs: a lasting thread pool with BLAS held to one thread while
videos run side by side, and reusable scratch buffers for the big intermediates (ours)."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


class Scratch:
    """Work arrays reused from call to call for the big intermediates (ours): freshly mapped
    memory costs a page fault per 4 KiB, and unmapping it stalls every thread of the process;
    depending on the allocator's state that churn made threaded batches run at one-core speed.
    One per computation running at a time; free ones wait in _FREE_SCRATCH. Buffers grow to
    the largest stack's needs (about tensor_pool._STACK_BYTES) and are kept."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of shape and dtype, on buffer `name`."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._bufs.get(name)
        if buf is None or buf.size < nbytes:
            buf = self._bufs[name] = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)


_FREE_SCRATCH: list[Scratch] = []  # list.pop and list.append are atomic


@contextlib.contextmanager
def scratch_buffers():
    """A Scratch for the duration of one computation, back on the free list after."""
    try:
        scratch = _FREE_SCRATCH.pop()
    except IndexError:
        scratch = Scratch()
    try:
        yield scratch
    finally:
        _FREE_SCRATCH.append(scratch)



@functools.cache
def _blas_controller():
    """threadpoolctl's handle on the loaded BLAS libraries (numpy's), made once (~15 ms)."""
    from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn

    return ThreadpoolController().select(user_api="blas")


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    """A lasting pool of helper threads: fresh threads would redo BLAS's per-thread setup."""
    return ThreadPoolExecutor(workers, thread_name_prefix="hot_descriptors")


_THREADED = threading.Lock()  # held while a batch runs on threads with BLAS limited


def _after_fork_in_child() -> None:
    global _THREADED
    _pool.cache_clear()  # a forked child has none of the parent's threads
    _THREADED = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def blas_threads() -> int:
    return max((lib["num_threads"] for lib in _blas_controller().info()), default=1)


def run_all(fn: Callable[[int], None], n: int, threads: int) -> None:
    """fn(t) for t in range(n), on min(n, threads) threads with a one-thread BLAS (ours).

    Each task is many small GEMMs, LAPACK on k x k matrices and entry-wise passes, which BLAS
    threads barely speed up; tasks at once on threads (numpy releases the GIL) use every core
    BLAS was given (OMP_NUM_THREADS, a joblib worker's share). The calling thread takes tasks
    too, beside threads - 1 helpers. BLAS is limited to one thread process-wide meanwhile
    (threadpoolctl), so the threads never oversubscribe the cores; a batch started while
    another holds that limit runs its tasks one after another.
    """
    if min(n, threads) <= 1 or not _THREADED.acquire(blocking=False):
        for t in range(n):
            fn(t)
        return
    tasks = iter(range(n))  # shared: next() on it is atomic under the GIL

    def drain() -> None:
        for t in tasks:
            fn(t)

    try:
        with _blas_controller().limit(limits=1):
            helpers = [_pool(threads - 1).submit(drain) for _ in range(min(n, threads) - 1)]
            try:
                drain()
            finally:  # helpers finish (or fail) before the BLAS limit is lifted
                for helper in helpers:
                    helper.result()
    finally:
        _THREADED.release()


