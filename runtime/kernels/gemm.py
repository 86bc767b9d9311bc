"""Many tokens times a tile of float32 weight rows, in Numba (no BLAS: OpenBLAS's spinning threads and
Numba's fight over the cores, which made prefill several times slower than this loop).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

FASTMATH = {"reassoc", "contract"}  # lets LLVM vectorize the float32 dot products


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matmul_rows(x, rows, out, r0):
    """out[t, r0 + i] = dot(x[t], rows[i]) for x [T, n], rows [R, n] (float32, C-contiguous)."""
    n_t, n = x.shape
    for i in prange(rows.shape[0]):
        for t0 in range(0, n_t, 4):  # four tokens per pass over the row: the row is read once per four
            if t0 + 4 <= n_t:
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for k in range(n):
                    wk = rows[i, k]
                    a0 += wk * x[t0, k]
                    a1 += wk * x[t0 + 1, k]
                    a2 += wk * x[t0 + 2, k]
                    a3 += wk * x[t0 + 3, k]
                out[t0, r0 + i] = a0
                out[t0 + 1, r0 + i] = a1
                out[t0 + 2, r0 + i] = a2
                out[t0 + 3, r0 + i] = a3
            else:
                for t in range(t0, n_t):
                    acc = np.float32(0.0)
                    for k in range(n):
                        acc += rows[i, k] * x[t, k]
                    out[t, r0 + i] = acc
