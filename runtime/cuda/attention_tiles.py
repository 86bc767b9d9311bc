"""Prompt attention in tiles: a block takes QT queries of one head and walks the keys they need in tiles
of KT positions held in shared memory, with an online softmax (a running max and sum per query).

Why: attention.attend runs a block per (token, head) and reads every cached key and value of that head
from global memory once per query (512 times over at pp512), with a barrier per 32 positions. Here a key
tile is read once per QT queries. q must be finished (attention.qkv_finish: rope, scale, cache writes).

Threads: 4 per query (QT = threads / 4). Scores: thread `part` of query qi takes keys part + 4 m of the
tile; the 4 share the tile's max through shared memory, each keeps its own partial sum of the exponentials
(added up at the end) and writes its probabilities for the value pass, where each thread accumulates its
head dimensions part + 4 c over all the tile's values.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from ggq.runtime.cuda.kernels import SIMULATED

THREADS = 32 if SIMULATED else 128
QT = THREADS // 4                       # queries a block
KT = 32                                 # keys a tile
KEYS_PER = KT // 4
KT_PAD = KT + 1
MAX_HEAD_DIM = 96                       # q, k and v tiles in 48 KB of static shared memory


device = cuda.jit(device=True, inline=True)


@device
def _load_kv(k_cache, v_cache, kv, k0, last_pos, ks, vs):
    """Positions k0 .. k0 + KT - 1 of kv head kv into ks / vs (clamped to last_pos: never past the cache
    written so far; the scores mask them)."""
    hd = ks.shape[1] - 1
    for e in range(cuda.threadIdx.x, KT * hd, THREADS):
        r, d = e // hd, e % hd
        j = min(k0 + r, last_pos)
        ks[r, d] = k_cache[kv, j, d]
        vs[r, d] = v_cache[kv, j, d]


@device
def _scores(qs, ks, qi, part, k0, lo, p, sc):
    """sc[m] = q . k of key part + 4 m of the tile (-inf outside lo..p); returns their max."""
    for m in range(KEYS_PER):
        sc[m] = float32(0.0)
    for d in range(ks.shape[1] - 1):
        q = qs[qi, d]
        for m in range(KEYS_PER):
            sc[m] += q * ks[part + 4 * m, d]
    best = float32(-np.inf)
    for m in range(KEYS_PER):
        j = k0 + part + 4 * m
        if j < lo or j > p:
            sc[m] = float32(-np.inf)
        best = max(best, sc[m])
    return best


@device
def _add_values(ps, vs, qi, part, c, acc):
    """acc[i] = acc[i] * c + sum over the tile's keys of p * v[:, part + 4 i]."""
    hd = vs.shape[1] - 1
    for i in range(acc.shape[0]):
        d = min(part + 4 * i, hd - 1)
        a = acc[i] * c
        for key in range(KT):
            a += ps[qi, key] * vs[key, d]
        acc[i] = a


def _make(hd: int):
    HD, PAD = hd, hd + 1
    DIMS_PER = -(-hd // 4)

    @cuda.jit
    def attend_tiles(qkv, k_cache, v_cache, state, window, n_tokens, out):
        """out[t, head] = softmax(q . K) V for the queries t0..t0 + QT - 1 < n_tokens (t0 = blockIdx.x *
        QT) of head blockIdx.y at positions state[1] + t, over the cached positions up to each query's own
        (the last `window` if window > 0)."""
        qs = cuda.shared.array((QT, PAD), float32)
        ks = cuda.shared.array((KT, PAD), float32)
        vs = cuda.shared.array((KT, PAD), float32)
        ps = cuda.shared.array((QT, KT_PAD), float32)
        part_max = cuda.shared.array((QT, 4), float32)
        tid, head = cuda.threadIdx.x, cuda.blockIdx.y
        qi, part = tid // 4, tid % 4
        kv = head // (out.shape[1] // HD // k_cache.shape[0])
        pos0, t0 = state[1], cuda.blockIdx.x * QT
        last_t = min(t0 + QT, n_tokens) - 1
        for e in range(tid, QT * HD, THREADS):
            r, d = e // HD, e % HD
            qs[r, d] = qkv[min(t0 + r, n_tokens - 1), head * HD + d]
        acc = cuda.local.array(DIMS_PER, float32)
        sc = cuda.local.array(KEYS_PER, float32)
        for c in range(DIMS_PER):
            acc[c] = float32(0.0)
        run_max, run_sum = float32(-np.inf), float32(0.0)   # the same max in the 4 threads; own partial sums
        p = pos0 + min(t0 + qi, last_t)
        lo = max(0, p - window + 1) if window > 0 else 0
        first = max(0, pos0 + t0 - window + 1) if window > 0 else 0
        for k0 in range(first - first % KT, pos0 + last_t + 1, KT):
            cuda.syncthreads()                  # the previous tile's ks, vs and ps are consumed
            _load_kv(k_cache, v_cache, kv, k0, pos0 + last_t, ks, vs)
            cuda.syncthreads()
            part_max[qi, part] = _scores(qs, ks, qi, part, k0, lo, p, sc)
            cuda.syncthreads()
            best = max(max(run_max, max(part_max[qi, 0], part_max[qi, 1])), max(part_max[qi, 2], part_max[qi, 3]))
            c = float32(math.exp(run_max - best)) if best > float32(-np.inf) else float32(1.0)
            total = run_sum * c
            for m in range(KEYS_PER):
                e = float32(math.exp(sc[m] - best)) if sc[m] > float32(-np.inf) else float32(0.0)
                ps[qi, part + 4 * m] = e
                total += e
            run_max, run_sum = best, total
            cuda.syncthreads()
            _add_values(ps, vs, qi, part, c, acc)
        part_max[qi, part] = run_sum               # (after the last barrier: part_max is free)
        cuda.syncthreads()
        t = t0 + qi
        if t < n_tokens:
            inv = float32(1.0) / (part_max[qi, 0] + part_max[qi, 1] + part_max[qi, 2] + part_max[qi, 3])
            for i in range(DIMS_PER):
                d = part + 4 * i
                if d < HD:
                    out[t, head * HD + d] = acc[i] * inv

    return attend_tiles


_KERNELS: dict = {}


def attend_tiles(head_dim: int):
    """The tiled prompt attention kernel for heads of head_dim values (compiled once per size)."""
    if head_dim not in _KERNELS:
        _KERNELS[head_dim] = _make(head_dim)
    return _KERNELS[head_dim]
