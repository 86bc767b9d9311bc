"""Fused dequantize-and-dot kernels for the k-quant super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256 values).

Same shape as kernels/legacy.py: per format a block reader as `_dot_<t>` (dot with x) and `_dec_<t>`
(write floats), and the parallel kernels `matvec_<t>(w, x, out)` and `decode_rows_<t>(w, r0, out)`.
Sub-block scales multiply partial sums, so the inner loops are plain integer-to-float multiply-adds.
Layouts and value formulas follow ggml's dequantize_row_q*_K (ggml-quants.c).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels import FASTMATH

from ggq.quants.floats import fp16_bits_to_fp32, get_u16

QK_K = 256
F0 = np.float32(0.0)


@njit(inline="always", cache=True)
def _half(w, r, o):
    return fp16_bits_to_fp32(get_u16(w, r, o))


@njit(inline="always", cache=True)
def _scale_min_k4(w, r, o, j):
    """The j-th 6-bit (scale, min) pair of the 12 packed bytes at o (Q4_K, Q5_K)."""
    if j < 4:
        return np.float32(w[r, o + j] & 63), np.float32(w[r, o + j + 4] & 63)
    a = np.int32(w[r, o + j + 4])
    sc = (a & 15) | ((np.int32(w[r, o + j - 4]) >> 6) << 4)
    mn = (a >> 4) | ((np.int32(w[r, o + j]) >> 6) << 4)
    return np.float32(sc), np.float32(mn)


@njit(inline="always", cache=True)
def _scale_q3_k(w, r, o, j):
    """The j-th signed 6-bit scale of Q3_K: low nibbles in bytes 0..7, top 2 bits packed in bytes 8..11."""
    lo = (np.int32(w[r, o + j]) & 15) if j < 8 else (np.int32(w[r, o + j - 8]) >> 4)
    hi = (np.int32(w[r, o + 8 + (j & 3)]) >> (2 * (j >> 2))) & 3
    return np.float32(np.int32(lo | (hi << 4)) - 32)


# ---- Q2_K: scales[16] (4-bit scale | 4-bit min), qs[64] (2 bits), d, dmin ------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q2_k(w, r, o, x, xo):
    d = _half(w, r, o + 80)
    dmin = _half(w, r, o + 82)
    acc = F0
    for i in range(16):  # 16 groups of 16 values; group i uses byte column (i % 2) * 16 of chunk i // 8
        sc = w[r, o + i]
        qo = o + 16 + 32 * (i // 8) + 16 * (i % 2)
        shift = 2 * ((i % 8) // 2)
        s = F0
        sx = F0
        for l in range(16):
            v = x[xo + 16 * i + l]
            s += np.float32((w[r, qo + l] >> shift) & 3) * v
            sx += v
        acc += d * np.float32(sc & 15) * s - dmin * np.float32(sc >> 4) * sx
    return acc


@njit(inline="always", cache=True)
def _dec_q2_k(w, r, o, out, ro, xo):
    d = _half(w, r, o + 80)
    dmin = _half(w, r, o + 82)
    for i in range(16):
        sc = w[r, o + i]
        qo = o + 16 + 32 * (i // 8) + 16 * (i % 2)
        shift = 2 * ((i % 8) // 2)
        dl = d * np.float32(sc & 15)
        ml = dmin * np.float32(sc >> 4)
        for l in range(16):
            out[ro, xo + 16 * i + l] = dl * np.float32((w[r, qo + l] >> shift) & 3) - ml


# ---- Q3_K: hmask[32], qs[64] (low 2 bits), scales[12] (6-bit signed), d -------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q3_k(w, r, o, x, xo):
    d = _half(w, r, o + 108)
    acc = F0
    for i in range(16):  # same walk as Q2_K; the high bit of group i is bit i // 2 of hmask
        qo = o + 32 + 32 * (i // 8) + 16 * (i % 2)
        ho = o + 16 * (i % 2)
        shift = 2 * ((i % 8) // 2)
        m = 1 << (i // 2)
        s = F0
        for l in range(16):
            q = np.int32((w[r, qo + l] >> shift) & 3) - (0 if w[r, ho + l] & m else 4)
            s += np.float32(q) * x[xo + 16 * i + l]
        acc += d * _scale_q3_k(w, r, o + 96, i) * s
    return acc


@njit(inline="always", cache=True)
def _dec_q3_k(w, r, o, out, ro, xo):
    d = _half(w, r, o + 108)
    for i in range(16):
        qo = o + 32 + 32 * (i // 8) + 16 * (i % 2)
        ho = o + 16 * (i % 2)
        shift = 2 * ((i % 8) // 2)
        m = 1 << (i // 2)
        dl = d * _scale_q3_k(w, r, o + 96, i)
        for l in range(16):
            q = np.int32((w[r, qo + l] >> shift) & 3) - (0 if w[r, ho + l] & m else 4)
            out[ro, xo + 16 * i + l] = dl * np.float32(q)


# ---- Q4_K: d, dmin, scales[12] (6-bit scale/min pairs), qs[128] ---------------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q4_k(w, r, o, x, xo):
    d = _half(w, r, o)
    dmin = _half(w, r, o + 2)
    acc = F0
    for j in range(4):  # 4 chunks of 64: low nibbles are values 0..31, high nibbles 32..63
        sc1, m1 = _scale_min_k4(w, r, o + 4, 2 * j)
        sc2, m2 = _scale_min_k4(w, r, o + 4, 2 * j + 1)
        qo = o + 16 + 32 * j
        xj = xo + 64 * j
        s1 = F0
        s2 = F0
        sx1 = F0
        sx2 = F0
        for l in range(32):
            q = w[r, qo + l]
            a = x[xj + l]
            b = x[xj + 32 + l]
            s1 += np.float32(q & 15) * a
            s2 += np.float32(q >> 4) * b
            sx1 += a
            sx2 += b
        acc += d * (sc1 * s1 + sc2 * s2) - dmin * (m1 * sx1 + m2 * sx2)
    return acc


@njit(inline="always", cache=True)
def _dec_q4_k(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    dmin = _half(w, r, o + 2)
    for j in range(4):
        sc1, m1 = _scale_min_k4(w, r, o + 4, 2 * j)
        sc2, m2 = _scale_min_k4(w, r, o + 4, 2 * j + 1)
        qo = o + 16 + 32 * j
        xj = xo + 64 * j
        for l in range(32):
            q = w[r, qo + l]
            out[ro, xj + l] = d * sc1 * np.float32(q & 15) - dmin * m1
            out[ro, xj + 32 + l] = d * sc2 * np.float32(q >> 4) - dmin * m2


# ---- Q5_K: d, dmin, scales[12], qh[32] (bit 2j / 2j+1 is the 5th bit of chunk j), qs[128] -------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q5_k(w, r, o, x, xo):
    d = _half(w, r, o)
    dmin = _half(w, r, o + 2)
    acc = F0
    for j in range(4):
        sc1, m1 = _scale_min_k4(w, r, o + 4, 2 * j)
        sc2, m2 = _scale_min_k4(w, r, o + 4, 2 * j + 1)
        qo = o + 48 + 32 * j
        xj = xo + 64 * j
        s1 = F0
        s2 = F0
        sx1 = F0
        sx2 = F0
        for l in range(32):
            q = w[r, qo + l]
            h = w[r, o + 16 + l] >> (2 * j)
            a = x[xj + l]
            b = x[xj + 32 + l]
            s1 += np.float32((q & 15) | ((h & 1) << 4)) * a
            s2 += np.float32((q >> 4) | ((h & 2) << 3)) * b
            sx1 += a
            sx2 += b
        acc += d * (sc1 * s1 + sc2 * s2) - dmin * (m1 * sx1 + m2 * sx2)
    return acc


@njit(inline="always", cache=True)
def _dec_q5_k(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    dmin = _half(w, r, o + 2)
    for j in range(4):
        sc1, m1 = _scale_min_k4(w, r, o + 4, 2 * j)
        sc2, m2 = _scale_min_k4(w, r, o + 4, 2 * j + 1)
        qo = o + 48 + 32 * j
        xj = xo + 64 * j
        for l in range(32):
            q = w[r, qo + l]
            h = w[r, o + 16 + l] >> (2 * j)
            out[ro, xj + l] = d * sc1 * np.float32((q & 15) | ((h & 1) << 4)) - dmin * m1
            out[ro, xj + 32 + l] = d * sc2 * np.float32((q >> 4) | ((h & 2) << 3)) - dmin * m2


# ---- Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales int8[16], d ----------------------
@njit(inline="always", cache=True)
def _q6(w, r, o, n, l, k):
    """Value k (0..3) of column l in half n: the quarter k*32+l of that 128-value half, minus 32."""
    ql = w[r, o + 64 * n + l + 32 * (k & 1)]
    low = (np.int32(ql) >> 4) if k >= 2 else (np.int32(ql) & 15)
    high = (np.int32(w[r, o + 128 + 32 * n + l]) >> (2 * k)) & 3
    return np.float32(np.int32(low | (high << 4)) - 32)


@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q6_k(w, r, o, x, xo):
    d = _half(w, r, o + 208)
    acc = F0
    for n in range(2):
        for k in range(4):
            for g in range(2):  # 16 values share one scale
                s = F0
                for l in range(16 * g, 16 * g + 16):
                    s += _q6(w, r, o, n, l, k) * x[xo + 128 * n + 32 * k + l]
                acc += d * np.float32(np.int8(w[r, o + 192 + 8 * n + 2 * k + g])) * s
    return acc


@njit(inline="always", cache=True)
def _dec_q6_k(w, r, o, out, ro, xo):
    d = _half(w, r, o + 208)
    for n in range(2):
        for k in range(4):
            for g in range(2):
                dl = d * np.float32(np.int8(w[r, o + 192 + 8 * n + 2 * k + g]))
                for l in range(16 * g, 16 * g + 16):
                    out[ro, xo + 128 * n + 32 * k + l] = dl * _q6(w, r, o, n, l, k)


# ---- the kernels: parallel over output rows ------------------------------------------------------
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q2_k(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 84):
            acc += _dot_q2_k(w, r, b * 84, x, b * QK_K)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q2_k(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 84):
            _dec_q2_k(w, r0 + i, b * 84, out, i, b * QK_K)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q3_k(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 110):
            acc += _dot_q3_k(w, r, b * 110, x, b * QK_K)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q3_k(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 110):
            _dec_q3_k(w, r0 + i, b * 110, out, i, b * QK_K)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q4_k(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 144):
            acc += _dot_q4_k(w, r, b * 144, x, b * QK_K)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q4_k(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 144):
            _dec_q4_k(w, r0 + i, b * 144, out, i, b * QK_K)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q5_k(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 176):
            acc += _dot_q5_k(w, r, b * 176, x, b * QK_K)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q5_k(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 176):
            _dec_q5_k(w, r0 + i, b * 176, out, i, b * QK_K)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q6_k(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 210):
            acc += _dot_q6_k(w, r, b * 210, x, b * QK_K)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q6_k(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 210):
            _dec_q6_k(w, r0 + i, b * 210, out, i, b * QK_K)
