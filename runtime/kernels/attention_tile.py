"""A prompt's attention in one parallel kernel, on float_tile's panels (no BLAS).

    prompt_attention(q [T, H, D] scaled, k_cache, v_cache [H_kv, ctx, D], pos0, window, out [T, H, D])

The keys and values the prompt sees (positions < pos0 + T) are first laid out as panels, once per call:
a key panel holds LANES keys side by side for each of the D dimensions, a value panel LANES dimensions
side by side for each key (float_tile's shape for this CPU, e.g. 32). Then, per query head and run of
TOKENS queries, float_tile's gemm computes the scores
against the key panels those queries may see (causal, and the sliding window), the softmax runs row by
row while the scores sit in L1, and the same gemm takes the probabilities times the value panels. So
no score is computed for a key its query cannot see (but for the part of a panel past the diagonal), and nothing waits on Python threads. Each output's bits depend on its query and head only.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels.float_tile import LANES, TOKENS, gemm16x8
from ggq.runtime.kernels.nn import exp_f32

F32 = np.float32
RUNS_PER_ITEM = 4  # runs of TOKENS queries per parallel work item (one scratch allocation each)


@njit(cache=True, fastmath=True)  # not inlined: an inlined body would compile with the caller's flags
def softmax_row(row, lo, hi):
    """row[lo:hi] <- its softmax, the rest of row <- 0 (the keys its query may not see). fastmath lets
    LLVM vectorize the max and the sum (reassociation)."""
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


@njit(cache=True)
def _head_apart(q, h, qh):
    for t in range(q.shape[0]):
        for d in range(q.shape[2]):
            qh[h, t, d] = q[t, h, d]


@njit(cache=True)
def _key_panel(k_cache, v_cache, n_k, h, b, kp, vp):
    """Keys b * LANES.. of kv head h into kp[h, b], their values into vp[h, :, (b * LANES)..]."""
    dim = k_cache.shape[2]
    for i in range(LANES):
        key = b * LANES + i
        for d in range(dim):
            kp[h, b, d * LANES + i] = k_cache[h, key, d] if key < n_k else F32(0.0)
        for p in range(vp.shape[1]):
            for j in range(LANES):
                d = p * LANES + j
                vp[h, p, key * LANES + j] = v_cache[h, key, d] if key < n_k and d < dim else F32(0.0)


@njit(parallel=True, cache=True)  # one loop over plain helpers: slices and branches inside it took 6 s to compile
def _panels(q, k_cache, v_cache, n_k, qh, kp, vp):
    """qh [H, T, D] <- q's heads apart; kp [H_kv, key panels, D * LANES] and vp [H_kv, dim panels,
    keys * LANES] <- the first n_k keys and values as panels, zero past n_k and past D."""
    n_head, n_kp = q.shape[1], kp.shape[1]
    for c in prange(n_head + k_cache.shape[0] * n_kp):
        if c < n_head:
            _head_apart(q, c, qh)
        else:
            _key_panel(k_cache, v_cache, n_k, (c - n_head) // n_kp, (c - n_head) % n_kp, kp, vp)


@njit(cache=True)
def _attend_run(qh, kp, vp, h, group, t0, n_q, pos0, window, s, o, out):
    """Queries t0..t0 + TOKENS - 1 (fewer at the end) of head h: scores s [TOKENS, keys], outputs o
    [TOKENS, dim panels * LANES]."""
    dim, n_kps, n_dp, kv = qh.shape[2], s.shape[1], vp.shape[1], h // group
    n = min(TOKENS, n_q - t0)
    first = pos0 + t0                                   # the run's first query position
    lo = max(0, first - window + 1) if window > 0 else 0
    base, end = (lo // LANES) * LANES, first + n        # keys base..end-1: the panels this run sees
    qflat, kflat, vflat, sflat, oflat = qh.reshape(-1), kp.reshape(-1), vp.reshape(-1), s.reshape(-1), o.reshape(-1)
    for b in range(base // LANES, (end + LANES - 1) // LANES):
        gemm16x8(kflat, (kv * kp.shape[1] + b) * dim * LANES, dim, qflat, (h * qh.shape[1] + t0) * dim, dim, n,
                 sflat, b * LANES, n_kps)
    for j in range(n):
        pos = first + j
        row_lo = max(0, pos - window + 1) if window > 0 else 0
        row = s[j]  # a 1-D row, then its slice: LLVM vectorized loops over that, not over s[j, a:b]
        softmax_row(row[base:end], row_lo - base, pos + 1 - base)
    for p in range(n_dp):
        gemm16x8(vflat, (kv * n_dp + p) * vp.shape[2] + base * LANES, end - base, sflat, base, n_kps, n,
                 oflat, p * LANES, o.shape[1])
    for j in range(n):
        for d in range(dim):
            out[t0 + j, h, d] = o[j, d]


@njit(parallel=True, cache=True)
def _attend(qh, kp, vp, pos0, window, out):
    n_head, n_q = qh.shape[0], qh.shape[1]
    group = n_head // kp.shape[0]
    runs = (n_q + TOKENS - 1) // TOKENS
    items = (runs + RUNS_PER_ITEM - 1) // RUNS_PER_ITEM
    for c in prange(n_head * items):                    # head-major: the two threads split the heads
        h, first_run = c // items, (c % items) * RUNS_PER_ITEM
        s = np.empty((TOKENS, kp.shape[1] * LANES), np.float32)
        o = np.empty((TOKENS, vp.shape[1] * LANES), np.float32)
        for r in range(first_run, min(runs, first_run + RUNS_PER_ITEM)):
            _attend_run(qh, kp, vp, h, group, r * TOKENS, n_q, pos0, window, s, o, out)


def prompt_attention(q, k_cache, v_cache, pos0: int, window: int, out) -> None:
    """Causal attention of T queries at positions pos0..pos0+T-1 over the cache (the contract of
    kernels.nn.attention): q [T, H, D] already scaled, caches [H_kv, ctx, D] holding the positions
    < pos0 + T, out [T, H, D]. window > 0: each query sees its last `window` positions only."""
    n_q, n_head, dim = q.shape
    n_k = pos0 + n_q
    n_kp, n_dp = -(-n_k // LANES), -(-dim // LANES)
    qh = np.empty((n_head, n_q, dim), np.float32)
    kp = np.empty((k_cache.shape[0], n_kp, dim * LANES), np.float32)
    vp = np.empty((k_cache.shape[0], n_dp, n_kp * LANES * LANES), np.float32)
    _panels(q, k_cache, v_cache, n_k, qh, kp, vp)
    _attend(qh, kp, vp, pos0, window, out)
