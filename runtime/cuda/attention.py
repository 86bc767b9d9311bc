"""The attention kernels: q/k/v finishing (bias, per-head norm, rope, scale, cache write), attention over
the GPU-resident KV cache, and greedy sampling. One block per (token, head); positions are read from
state[1] in device memory (see kernels.py).
"""
from __future__ import annotations

import math
import os

import numpy as np
from numba import cuda, float32, float64

from ggq.runtime.cuda.kernels import (ARGMAX_THREADS, SCRATCH, SIMULATED, WARP, _block_max, _block_sum, _warp_allsum,
                                      ix)

MAX_HEAD_DIM = 256
device = cuda.jit(device=True, inline=True)


@device
def _load_head(qkv, t, col0, bias, has_bias, hd, vec):
    """vec[:hd] = qkv[t, col0:col0 + hd] (+ bias); the caller syncs. (While loops: a range with a
    variable step costs an integer division for its trip count.)"""
    d = cuda.threadIdx.x
    while d < hd:
        vec[ix(d)] = qkv[ix(t), ix(col0 + d)] + (bias[ix(col0 + d)] if has_bias else float32(0.0))
        d += cuda.blockDim.x


@device
def _head_norm(vec, hd, norm, eps, red):
    """vec[:hd] = rmsnorm(vec) * norm (qk_norm), summed in float64 as the CPU runtime does; every thread
    of the block takes part (block sums), and the result is synced."""
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    ss = float64(0.0)
    d = tid
    while d < hd:
        ss += float64(vec[ix(d)]) * float64(vec[ix(d)])
        d += nt
    inv = float32(1.0 / math.sqrt(_block_sum(ss, red) / hd + eps))
    d = tid
    while d < hd:
        vec[ix(d)] = vec[ix(d)] * inv * norm[ix(d)]
        d += nt
    cuda.syncthreads()


@device
def _rope_pair(vec, i, half, neox, c, s):
    ia, ib = (i, i + half) if neox else (2 * i, 2 * i + 1)
    a, b = vec[ix(ia)], vec[ix(ib)]
    vec[ix(ia)] = a * c - b * s
    vec[ix(ib)] = a * s + b * c


@device
def _angle(pos, pos_scale, inv_freq, i):
    """cos and sin of pair i's angle at pos, in float64 as the CPU runtime's rope, rounded to float32."""
    angle = float64(pos) * pos_scale * inv_freq[ix(i)]
    return float32(math.cos(angle)), float32(math.sin(angle))


@cuda.jit
def qkv_finish(qkv, bias, q_norm, k_norm, inv_freq, pos_scale, state, k_cache, v_cache, dims, flags, eps,
               attn_scale):
    """For token t = blockIdx.x and head blockIdx.y of q, k or v (in that order along qkv[t]):
    + bias; q and k: RMSNorm per head (qk_norm), rope by position state[1] + t, q times attn_scale;
    k and v are then written to the cache at that position. dims = (n_head, n_kv, head_dim, rope pairs),
    flags = (qkv_bias, qk_norm, neox). The prompt path's; decode runs attend_decode, which does the same."""
    vec = cuda.shared.array(MAX_HEAD_DIM, float32)
    red = cuda.shared.array(WARP, float64)
    t, head, tid = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    n_head, n_kv, hd, half = dims[0], dims[1], dims[2], dims[3]
    col0 = head * hd
    _load_head(qkv, t, col0, bias, flags[0], hd, vec)
    cuda.syncthreads()
    is_v = head >= n_head + n_kv
    pos = state[1] + t
    if not is_v:
        if flags[1]:
            _head_norm(vec, hd, q_norm if head < n_head else k_norm, eps, red)
        for i in range(tid, half, cuda.blockDim.x):
            c, s = _angle(pos, pos_scale, inv_freq, i)
            _rope_pair(vec, i, half, flags[2], c, s)
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


# warps of a decode attention block, each its own share of positions (at most MAX_WARPS)
ATT_WARPS = 1 if SIMULATED else int(os.environ.get("GGQ_CUDA_ATT_WARPS", 16))
MAX_WARPS = 16
# k and v values a lane holds per round (positions a round x values a lane): 8 positions of 64-value
# heads, so that 16 warps cover a 128-token context in the one round whose loads are issued first;
# wider heads take fewer positions a round rather than spill registers
ROUND_VALUES = int(os.environ.get("GGQ_CUDA_ATT_VALUES", 16))


def positions_a_round(nd: int) -> int:
    return max(1, min(8, ROUND_VALUES // nd))


@device
def _load_kv(k_cache, v_cache, g, base, last, lane, hd, kr, vr):
    """kr[u], vr[u] = this lane's values of cached positions min(base + u, last), all loads issued at once
    (clamped, never skipped by a branch)."""
    for u in range(kr.shape[0]):
        jc = min(base + u, last)
        for m in range(kr.shape[1]):
            d = min(lane + WARP * m, hd - 1) if m == kr.shape[1] - 1 else lane + WARP * m   # only the last can pass hd
            kr[u, m] = k_cache[ix(g), ix(jc), ix(d)]
            vr[u, m] = v_cache[ix(g), ix(jc), ix(d)]


@device
def _own_kv(ks, vs, base, p, lane, hd, kr, vr):
    """Positions base + u >= p take the new token's k and v (shared memory) instead of what was loaded:
    p's own values from before its cache write, and finite values past p (weighted 0 afterwards)."""
    for u in range(kr.shape[0]):
        if base + u >= p:
            for m in range(kr.shape[1]):
                d = min(lane + WARP * m, hd - 1)
                kr[u, m] = ks[ix(d)]
                vr[u, m] = vs[ix(d)]


@device
def _finish_head(qkv, bias, q_norm, k_norm, inv_freq, pos_scale, p, k_cache, v_cache, head, g, n_head, n_kv,
                 hd, half, has_bias, qk_norm, neox, eps, qs, ks, vs, red):
    """qkv_finish's work on q head `head` and kv head g: bias, per-head norm, rope at p, k and v into the
    cache at p (every q head of a group writes the same bits); qs, ks, vs hold the results, synced."""
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    _load_head(qkv, 0, head * hd, bias, has_bias, hd, qs)
    _load_head(qkv, 0, (n_head + g) * hd, bias, has_bias, hd, ks)
    _load_head(qkv, 0, (n_head + n_kv + g) * hd, bias, has_bias, hd, vs)
    cuda.syncthreads()
    if qk_norm:
        _head_norm(qs, hd, q_norm, eps, red)
        _head_norm(ks, hd, k_norm, eps, red)
    i = tid
    while i < half:
        c, s = _angle(p, pos_scale, inv_freq, i)
        _rope_pair(qs, i, half, neox, c, s)
        _rope_pair(ks, i, half, neox, c, s)
        i += nt
    cuda.syncthreads()
    d = tid
    while d < hd:
        k_cache[ix(g), ix(p), ix(d)] = ks[ix(d)]
        v_cache[ix(g), ix(p), ix(d)] = vs[ix(d)]
        d += nt
    cuda.syncthreads()                  # the block's own cache writes are visible to it after this


def _decode_attention(nd: int):
    """attend_decode for heads of nd * 32 values or fewer (nd a constant, so that a lane's values of q, of
    the round's keys and values and of its output stay in registers)."""
    unroll = positions_a_round(nd)

    @cuda.jit
    def attend_decode(qkv, bias, q_norm, k_norm, inv_freq, pos_scale, state, k_cache, v_cache, n_head, n_kv, hd,
                      half, has_bias, qk_norm, neox, eps, attn_scale, window, out):
        """Decode (one token at p = state[1]): for q head blockIdx.x, qkv_finish's work (_finish_head),
        then softmax(q . K[lo:p+1]) V. Shapes and flags are scalar arguments (no dependent load of them).

        Why this shape: each launch is a chain of memory round trips, so the first round's cached keys and
        values (positions below p) are loaded before anything else and arrive while the new token's q, k
        and v are finished. Each warp takes positions_a_round positions a round, lane l holding values l, l + 32,
        ... of the head; the round's scores are butterfly-summed together, then one max and one rescale
        per round (online softmax per warp); the warps' partial results are merged at the end."""
        qs = cuda.shared.array(MAX_HEAD_DIM, float32)
        ks = cuda.shared.array(MAX_HEAD_DIM, float32)
        vs = cuda.shared.array(MAX_HEAD_DIM, float32)
        red = cuda.shared.array(WARP, float64)
        scratch = cuda.shared.array(SCRATCH, float32)
        head, tid = cuda.blockIdx.x, cuda.threadIdx.x
        lane, warp, warps = tid % WARP, tid // WARP, cuda.blockDim.x // WARP
        g = head // (n_head // n_kv)
        p = state[1]
        lo = max(0, p - window + 1) if window > 0 else 0
        first = lo + warp * unroll
        kr = cuda.local.array((unroll, nd), float32)
        vr = cuda.local.array((unroll, nd), float32)
        _load_kv(k_cache, v_cache, g, first, p, lane, hd, kr, vr)       # position p itself: replaced below
        _finish_head(qkv, bias, q_norm, k_norm, inv_freq, pos_scale, p, k_cache, v_cache, head, g, n_head, n_kv,
                     hd, half, has_bias, qk_norm, neox, eps, qs, ks, vs, red)
        q = cuda.local.array(nd, float32)
        acc = cuda.local.array(nd, float32)
        for m in range(nd):
            d = lane + WARP * m
            q[m] = qs[ix(min(d, hd - 1))] * attn_scale if d < hd else float32(0.0)    # q is 0 past hd
            acc[m] = 0.0
        best, total = float32(-np.inf), float32(0.0)
        sc = cuda.local.array(unroll, float32)
        base = first
        while base <= p:                                     # warp-uniform trip count
            if base != first:
                _load_kv(k_cache, v_cache, g, base, p, lane, hd, kr, vr)
            _own_kv(ks, vs, base, p, lane, hd, kr, vr)
            best, total = _attend_round(q, kr, vr, base, p, best, total, acc, sc, scratch)
            base += warps * unroll
        _merge_warps(best, total, acc, head, hd, lane, warp, warps, out)
    return attend_decode


@device
def _attend_round(q, kr, vr, base, p, best, total, acc, sc, scratch):
    """One round of a warp's online softmax over positions base .. base + kr.shape[0] - 1 (those past p
    weigh 0): the scores first (independent butterflies), then one rescale of the running sums."""
    top = best
    for u in range(kr.shape[0]):
        s = float32(0.0)
        for m in range(kr.shape[1]):
            s += q[m] * kr[u, m]
        s = _warp_allsum(s, scratch)
        sc[u] = s if base + u <= p else float32(-np.inf)
        top = max(top, sc[u])
    fade = math.exp(best - top)          # best = -inf in the first round: 0, and acc, total are 0 anyway
    total = total * fade
    for m in range(kr.shape[1]):
        acc[m] = acc[m] * fade
    for u in range(kr.shape[0]):
        e = math.exp(sc[u] - top)        # past p: exp(-inf) = 0
        total += e
        for m in range(kr.shape[1]):
            acc[m] += e * vr[u, m]
    return top, total


@device
def _merge_warps(best, total, acc, head, hd, lane, warp, warps, out):
    """out[0, head] = the warps' partial softmax sums merged (each rescaled to the largest max)."""
    w_max = cuda.shared.array(WARP, float32)
    w_sum = cuda.shared.array(WARP, float32)
    w_acc = cuda.shared.array((MAX_WARPS, MAX_HEAD_DIM), float32)
    if lane == 0:
        w_max[ix(warp)], w_sum[ix(warp)] = best, total
    for m in range(acc.shape[0]):
        if lane + WARP * m < hd:
            w_acc[ix(warp), ix(lane + WARP * m)] = acc[m]
    cuda.syncthreads()
    top = w_max[0]
    for w in range(1, warps):
        top = max(top, w_max[ix(w)])
    d = cuda.threadIdx.x
    while d < hd:                       # one round where the block has hd threads or more
        num = float32(0.0)
        den = float32(0.0)
        for w in range(warps):
            f = math.exp(w_max[ix(w)] - top)
            den += w_sum[ix(w)] * f     # a warp that saw no position: 0 * exp(-inf)
            num += w_acc[ix(w), ix(d)] * f
        out[0, ix(head * hd + d)] = num / den
        d += cuda.blockDim.x


_DECODE_KERNELS = {}


def attend_decode(head_dim: int):
    """The decode attention kernel for heads of head_dim values (compiled once per size class)."""
    nd = -(-head_dim // WARP)
    if nd not in _DECODE_KERNELS:
        _DECODE_KERNELS[nd] = _decode_attention(nd)
    return _DECODE_KERNELS[nd]


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
