"""The memory-copy bandwidth of this machine with the runtime's threads: the physical limit of decode,
which reads every weight once per token (`ggq bench` prints both side by side).

    copy_bandwidth()   # bytes read + written per second with Numba's thread count, best of a few copies
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

COPY_BYTES = 256 << 20  # well past any last-level cache, so the copy streams from memory
ROUNDS = 5


@njit(parallel=True, cache=True)
def _copy(src, dst):
    n = src.shape[0]
    chunks = 64
    for c in prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        dst[lo:hi] = src[lo:hi]


def copy_bandwidth() -> float:
    """Bytes moved (read + written) per second by a parallel copy of COPY_BYTES, with Numba's
    current thread count; the best of ROUNDS copies."""
    src = np.ones(COPY_BYTES // 8, np.float64)
    dst = np.zeros_like(src)
    _copy(src, dst)  # compile, and fault the pages in
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        _copy(src, dst)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best
