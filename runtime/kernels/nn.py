"""The non-matmul kernels of a transformer block: RMSNorm, rotary embedding, attention over the KV cache,
gated activations. float32 data; sums that feed a normalisation are accumulated in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ggq.quants.floats import u32_as_f32
from ggq.runtime.kernels import FASTMATH

GELU_C = math.sqrt(2.0 / math.pi)
F32 = np.float32
LOG2E, LN2_HI, LN2_LO = F32(1.44269504088896341), F32(0.693359375), F32(-2.12194440e-4)
EXP_P = (F32(1.9875691500e-4), F32(1.3981999507e-3), F32(8.3334519073e-3), F32(4.1665795894e-2),
         F32(1.6666665459e-1), F32(5.0000001201e-1))


@njit(inline="always", cache=True)
def exp_f32(x):
    """e^x in float32 from operations LLVM vectorizes (Numba has no vector exp without SVML): Cephes'
    expf, 2^k times a degree-6 polynomial on [-ln2/2, ln2/2], within 2 ulp of libm; x is clamped to
    [-87, 88] (0 and +inf are then 6e-39 and 1.7e38: a softmax or a sigmoid does not see the change)."""
    x = x if x > F32(-87.0) else F32(-87.0)
    x = x if x < F32(88.0) else F32(88.0)
    k = np.floor(x * LOG2E + F32(0.5))
    r = x - k * LN2_HI - k * LN2_LO
    p = ((((EXP_P[0] * r + EXP_P[1]) * r + EXP_P[2]) * r + EXP_P[3]) * r + EXP_P[4]) * r + EXP_P[5]
    p = p * r * r + r + F32(1.0)
    return p * u32_as_f32((np.int32(k) + 127) << 23)


# Element-wise kernels run on one thread: their work is tiny next to the matmuls, and a parallel region
# costs a barrier that is expensive on a busy machine.
@njit(cache=True)
def rmsnorm(x, weight, eps, out):
    """out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for every row r of a 2-D x (in place is fine)."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        ss = 0.0
        for i in range(n):
            ss += np.float64(x[r, i]) * np.float64(x[r, i])
        inv = np.float32(1.0 / math.sqrt(ss / n + eps))
        for i in range(n):
            out[r, i] = x[r, i] * inv * weight[i]


@njit(cache=True)
def rope(q, k, positions, inv_freq, pos_scale, neox):
    """Rotate the first 2*len(inv_freq) values of every head of q and k [T, heads, head_dim] in place
    (any head counts; each angle's cos and sin computed once for both).

    Pair i turns by angle position * pos_scale * inv_freq[i]; the pair is (2i, 2i+1) in the GPT-J layout
    that llama GGUFs use (their q/k rows are permuted by the converter), (i, i + n_rot/2) in NeoX.
    """
    half = inv_freq.shape[0]
    for t in range(q.shape[0]):
        p = positions[t] * pos_scale
        for i in range(half):
            angle = p * inv_freq[i]
            c = np.float32(math.cos(angle))
            s = np.float32(math.sin(angle))
            a_idx, b_idx = (i, i + half) if neox else (2 * i, 2 * i + 1)
            for x in (q, k):
                for h in range(x.shape[1]):
                    a = x[t, h, a_idx]
                    b = x[t, h, b_idx]
                    x[t, h, a_idx] = a * c - b * s
                    x[t, h, b_idx] = a * s + b * c


@njit(parallel=True, cache=True, fastmath=FASTMATH)  # q.k and the v sums vectorize
def attention(q, k_cache, v_cache, pos0, window, scores, out):
    """Causal attention of T new queries (at positions pos0..pos0+T-1) over the cache.

    q [T, H, D] (already scaled), k_cache/v_cache [H_kv, ctx, D], scores [H, ctx] scratch, out [T, H, D].
    Query head h reads kv head h // (H / H_kv) (grouped-query attention). window > 0 limits each query
    to the last `window` positions (sliding-window layers).
    """
    n_t, n_head, dim = q.shape
    group = n_head // k_cache.shape[0]
    for h in prange(n_head):
        kv = h // group
        for t in range(n_t):
            p = pos0 + t
            lo = max(0, p - window + 1) if window > 0 else 0
            best = np.float32(-np.inf)
            for j in range(lo, p + 1):
                s = np.float32(0.0)
                for d in range(dim):
                    s += q[t, h, d] * k_cache[kv, j, d]
                scores[h, j] = s
                best = max(best, s)
            total = np.float32(0.0)
            for j in range(lo, p + 1):
                e = math.exp(scores[h, j] - best)
                scores[h, j] = e
                total += e
            inv_total = np.float32(1.0) / total
            for d in range(dim):
                out[t, h, d] = 0.0
            for j in range(lo, p + 1):
                wgt = scores[h, j] * inv_total
                for d in range(dim):
                    out[t, h, d] += wgt * v_cache[kv, j, d]


@njit(parallel=True, cache=True)  # a prompt's [512, n_ff]: exp_f32 vectorizes, math.exp (libm) did not
def silu_mul(gate, up):
    """gate <- silu(gate) * up, element-wise over [T, n_ff]."""
    for r in prange(gate.shape[0]):
        for i in range(gate.shape[1]):
            g = gate[r, i]
            gate[r, i] = g / (np.float32(1.0) + exp_f32(-g)) * up[r, i]


@njit(parallel=True, cache=True)
def gelu_tanh_mul(gate, up):
    """gate <- gelu_tanh(gate) * up (the tanh approximation gemma uses)."""
    for r in prange(gate.shape[0]):
        for i in range(gate.shape[1]):
            g = np.float64(gate[r, i])
            gelu = 0.5 * g * (1.0 + math.tanh(GELU_C * (g + 0.044715 * g * g * g)))
            gate[r, i] = np.float32(gelu) * up[r, i]


@njit(cache=True)
def softcap(x, cap):
    """x <- cap * tanh(x / cap) (final logit soft-capping)."""
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            x[r, i] = np.float32(cap * math.tanh(x[r, i] / cap))
