"""The attention kernels: q/k/v finishing (bias, per-head norm, rope, scale, cache write), attention over
the GPU-resident KV cache, and greedy sampling. One block per (token, head); positions are read from
state[1] in device memory (see kernels.py).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64

from ggq.runtime.cuda.kernels import ARGMAX_THREADS, WARP, _block_max, _block_sum

MAX_HEAD_DIM = 256


@cuda.jit
def qkv_finish(qkv, bias, q_norm, k_norm, inv_freq, pos_scale, state, k_cache, v_cache, dims, flags, eps,
               attn_scale):
    """For token t = blockIdx.x and head blockIdx.y of q, k or v (in that order along qkv[t]):
    + bias; q and k: RMSNorm per head (qk_norm), rope by position state[1] + t, q times attn_scale;
    k and v are then written to the cache at that position. dims = (n_head, n_kv, head_dim, rope pairs),
    flags = (qkv_bias, qk_norm, neox)."""
    vec = cuda.shared.array(MAX_HEAD_DIM, float32)
    red = cuda.shared.array(WARP, float64)
    t, head, tid = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    n_head, n_kv, hd, half = dims[0], dims[1], dims[2], dims[3]
    col0 = head * hd
    for d in range(tid, hd, cuda.blockDim.x):
        vec[d] = qkv[t, col0 + d] + (bias[col0 + d] if flags[0] else float32(0.0))
    cuda.syncthreads()
    is_v = head >= n_head + n_kv
    pos = state[1] + t
    if not is_v:
        if flags[1]:
            ss = float64(0.0)
            for d in range(tid, hd, cuda.blockDim.x):
                ss += float64(vec[d]) * float64(vec[d])
            inv = float32(1.0 / math.sqrt(_block_sum(ss, red) / hd + eps))
            norm = q_norm if head < n_head else k_norm
            for d in range(tid, hd, cuda.blockDim.x):
                vec[d] = vec[d] * inv * norm[d]
            cuda.syncthreads()
        p = float64(pos) * pos_scale
        for i in range(tid, half, cuda.blockDim.x):
            angle = p * inv_freq[i]
            c, s = float32(math.cos(angle)), float32(math.sin(angle))
            ia, ib = (i, i + half) if flags[2] else (2 * i, 2 * i + 1)
            a, b = vec[ia], vec[ib]
            vec[ia] = a * c - b * s
            vec[ib] = a * s + b * c
        cuda.syncthreads()
    for d in range(tid, hd, cuda.blockDim.x):
        if head < n_head:
            qkv[t, col0 + d] = vec[d] * attn_scale
        elif not is_v:
            k_cache[head - n_head, pos, d] = vec[d]
        else:
            v_cache[head - n_head - n_kv, pos, d] = vec[d]


KEY_SPLIT = 4                   # threads per key position in the score pass, each summing hd / 4 products
UNROLL = 8                      # loads a thread has in flight in the score and value loops (see attend)
MAX_THREADS = 1024


@cuda.jit
def attend(qkv, k_cache, v_cache, state, window, scores, out):
    """out[t, head] = softmax(q . K[:p+1]) V for the query of token t at position p = state[1] + t
    (q already scaled), over the last `window` positions if window > 0; scores: [T, n_head, ctx] scratch.

    Written for latency: a loop that loads one value and uses it at once waits a whole memory round trip
    per iteration (a thread per position summing hd products in turn ran at ~1 % of the SMs). So the
    score pass gives each position KEY_SPLIT threads whose products are unrolled (their loads issued
    together), and the value pass splits positions among groups of threads, UNROLL loads at a time."""
    q = cuda.shared.array(MAX_HEAD_DIM, float32)
    parts = cuda.shared.array(MAX_THREADS, float32)
    red = cuda.shared.array(WARP, float64)
    redf = cuda.shared.array(WARP, float32)
    t, head, tid, nt = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x, cuda.blockDim.x
    hd = k_cache.shape[2]
    kv = head // (out.shape[1] // hd // k_cache.shape[0])
    p = state[1] + t
    lo = max(0, p - window + 1) if window > 0 else 0
    span = -(-hd // (KEY_SPLIT * 16)) * KEY_SPLIT * 16     # hd rounded up to a whole score round
    for d in range(tid, span, nt):
        q[d] = qkv[t, head * hd + d] if d < hd else float32(0.0)
    cuda.syncthreads()
    part, slot, per = tid % KEY_SPLIT, tid // KEY_SPLIT, nt // KEY_SPLIT
    best = float32(-np.inf)
    for base in range(lo, p + 1, per):              # the same trip count in every thread (barriers inside)
        j = base + slot
        jc = min(j, p)          # loads are clamped, never skipped by a branch, so that they issue together
        s = float32(0.0)
        for d0 in range(0, span, KEY_SPLIT * 16):
            for m in range(16):
                d = d0 + part + KEY_SPLIT * m
                s += q[d] * k_cache[kv, jc, min(d, hd - 1)]                # q is 0 past hd
        parts[tid] = s
        cuda.syncthreads()
        if part == 0 and j <= p:
            s = parts[tid]
            for k in range(1, KEY_SPLIT):
                s += parts[tid + k]
            scores[t, head, j] = s
            best = max(best, s)
        cuda.syncthreads()
    best = _block_max(best, redf)
    total = float64(0.0)
    for j in range(lo + tid, p + 1, nt):
        e = math.exp(scores[t, head, j] - best)
        scores[t, head, j] = e
        total += e
    inv_total = float32(1.0 / _block_sum(total, red))     # the block sum also orders the score writes
    groups = max(1, nt // hd)                        # threads per output value, each a share of positions
    g = tid // hd if groups > 1 else 0
    if groups == 1 or tid < groups * hd:
        for d in range(tid % hd if groups > 1 else tid, hd, hd if groups > 1 else nt):
            acc = float32(0.0)
            for j0 in range(lo + g, p + 1, groups * UNROLL):
                for u in range(UNROLL):
                    j = j0 + groups * u
                    jc = min(j, p)
                    e = scores[t, head, jc]
                    acc += (e if j <= p else float32(0.0)) * v_cache[kv, jc, d]
            if groups == 1:
                out[t, head * hd + d] = acc * inv_total
            else:
                parts[tid] = acc
    cuda.syncthreads()
    if groups > 1 and tid < hd:
        acc = parts[tid]
        for k in range(1, groups):
            acc += parts[tid + k * hd]
        out[t, head * hd + tid] = acc * inv_total


@cuda.jit
def argmax_token(logits, state):
    """state[2] = argmax of logits[0] (the first index among equal maxima, as numpy's argmax); one block."""
    best_v = cuda.shared.array(ARGMAX_THREADS, float32)
    best_i = cuda.shared.array(ARGMAX_THREADS, np.int64)
    tid, nt, n = cuda.threadIdx.x, cuda.blockDim.x, logits.shape[1]
    v, idx = float32(-np.inf), n
    for i0 in range(tid, n, nt * UNROLL):            # UNROLL loads in flight, each thread's in index order
        for u in range(UNROLL):
            i = i0 + nt * u
            value = logits[0, min(i, n - 1)]         # clamped, not skipped: the loads issue together
            if i < n and value > v:
                v, idx = value, i
    best_v[tid], best_i[tid] = v, idx
    cuda.syncthreads()
    step = nt // 2
    while step > 0:
        if tid < step:
            ov, oi = best_v[tid + step], best_i[tid + step]
            if ov > best_v[tid] or (ov == best_v[tid] and oi < best_i[tid]):
                best_v[tid], best_i[tid] = ov, oi
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        state[2] = best_i[0]
