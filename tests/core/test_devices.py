"""Host memory between large passes: glibc's free pages go back to the OS (trim_host_memory)."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from pipeline.core.devices import trim_host_memory


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's; elsewhere trim_host_memory does nothing")
def test_freed_heap_pages_go_back_to_the_os():
    """The trunk's pattern: once a freed large block has raised glibc's mmap threshold, arrays
    of a few MB come from the heap, and small arrays kept between them (the trunk's cells) leave
    their freed pages resident: free() alone does not shrink the process, the trim does."""
    x = np.ones(4_000_000)                                   # 32 MB, mmapped; its free raises
    del x                                                    # the threshold to 32 MB
    big, kept = [], []
    for _ in range(300):
        big.append(np.ones(200_000))                         # 1.6 MB each, touched: 480 MB
        kept.append(np.ones(1000))                           # a survivor after each
    del big
    before = resident_kib()
    assert trim_host_memory() is True
    assert resident_kib() < before - 200_000, "most of the 480 MB freed should leave the process"
    assert sum(k.sum() for k in kept) == 300 * 1000
