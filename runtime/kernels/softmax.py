"""The softmax of a prompt's attention scores, causal, in place, one row at a time (runtime/blas.py).

numpy would make five passes over the whole [heads, queries, keys] block (mask, max, subtract, exp, sum),
each through the L3 cache; here each row is finished while it sits in L1, only over the keys its query
may see. Numba has no vector exp (no SVML here), so exp is written out (Cephes' expf: 2^k times a
degree-6 polynomial on [-ln2/2, ln2/2], within 2 ulp of libm) in operations LLVM vectorizes.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.quants.floats import u32_as_f32

F32 = np.float32
LOG2E, LN2_HI, LN2_LO = F32(1.44269504088896341), F32(0.693359375), F32(-2.12194440e-4)
P = (F32(1.9875691500e-4), F32(1.3981999507e-3), F32(8.3334519073e-3), F32(4.1665795894e-2),
     F32(1.6666665459e-1), F32(5.0000001201e-1))


@njit(inline="always", cache=True)
def exp_f32(x):
    """e^x for x <= 0 (softmax arguments after the max is subtracted); 0 below -87."""
    x = x if x > F32(-87.0) else F32(-87.0)
    k = np.floor(x * LOG2E + F32(0.5))
    r = x - k * LN2_HI - k * LN2_LO
    p = ((((P[0] * r + P[1]) * r + P[2]) * r + P[3]) * r + P[4]) * r + P[5]
    p = p * r * r + r + F32(1.0)
    return p * u32_as_f32((np.int32(k) + 127) << 23)


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
