"""The softmax of a prompt's attention scores, causal, in place, one row at a time (runtime/blas.py).

numpy would make five passes over the whole [heads, queries, keys] block (mask, max, subtract, exp, sum),
each through the L3 cache; here each row is finished while it sits in L1, only over the keys its query
may see, with nn.exp_f32 (an exp that vectorizes).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.runtime.kernels.nn import exp_f32

F32 = np.float32
@njit(nogil=True, cache=True, fastmath=True)
def causal_softmax(scores, first_query, window):
    """scores [H, Q, K] in place: row q (query position first_query + q) becomes the softmax over keys
    lo..first_query + q (lo = 0, or the window's first key), zeros elsewhere. No GIL: runs beside the
    other workers' BLAS calls."""
    n_k = scores.shape[2]
    for h in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            row = scores[h, i]
            pos = first_query + i
            hi = min(pos + 1, n_k)
            lo = max(0, pos - window + 1) if window > 0 else 0
            seen = row[lo:hi]  # loops from 0: with a start of lo, LLVM did not vectorize them (3x slower)
            best = seen[0]
            for j in range(1, seen.shape[0]):  # a select, not max(): Numba's max checks for NaN, no vectors
                best = seen[j] if seen[j] > best else best
            total = F32(0.0)
            for j in range(seen.shape[0]):
                e = exp_f32(seen[j] - best)
                seen[j] = e
                total += e
            inv = F32(1.0) / total
            for j in range(seen.shape[0]):
                seen[j] *= inv
            row[:lo] = 0.0
            row[hi:] = 0.0
