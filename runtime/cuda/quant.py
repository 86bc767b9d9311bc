"""Dequantization on the GPU, one 16-value unit at a time, for every block format the backend runs.

Every GGUF format used here stores a row as blocks, and every 16 consecutive values of a block share one
scale and one offset: value_j = a * q_j + b, with q_j a small integer unpacked from the block's bits (or the
stored float itself for F32/F16). So each format is described by two device functions

    ab(u8, i8, f16, f32, bb, k)       -> (a, b) of unit k of the block starting at byte bb
    q_at(u8, i8, f16, f32, bb, k, j)  -> q_j, j in 0..15

over four views of the same uploaded file (bytes, signed bytes, halves, floats), and a row of `cols`
values is cols / 16 units. A dot product of a unit with 16 activations is then a * sum(q x) + b * sum(x):
one multiply per weight. The layouts follow ggml's block structs (ggml-common.h).
"""
from __future__ import annotations

import numpy as np
from numba import cuda, uint64

from ggq.runtime.kernels.step import KINDS

UNIT = 16                       # values per unit
F32, F16 = KINDS.index("F32"), KINDS.index("F16")
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (KINDS.index(n) for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (KINDS.index(n) for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))

# kind -> (bytes per block, units per block); a format is usable on the GPU when it is listed here
BLOCKS = {F32: (64, 1), F16: (32, 1), Q4_0: (18, 2), Q4_1: (20, 2), Q5_0: (22, 2), Q5_1: (24, 2),
          Q8_0: (34, 2), Q2_K: (84, 16), Q3_K: (110, 16), Q4_K: (144, 16), Q5_K: (176, 16), Q6_K: (210, 16)}
SUPPORTED = tuple(KINDS[k] for k in BLOCKS)

device = cuda.jit(device=True, inline=True)


@device
def ix(i):
    """i (never negative) as an index numba does not wrap: a signed index costs a compare and a select
    per dimension and keeps the compiler from folding constant offsets into the loads (lane + 32 m,
    word + 1, ...); attend_decode compiled to half the instructions with its indices unwrapped."""
    return uint64(i)


@device
def _half(f16, byte):
    return np.float32(f16[byte // 2])


@device
def _u32(u8, byte):
    return (np.uint32(u8[byte]) | (np.uint32(u8[byte + 1]) << 8) | (np.uint32(u8[byte + 2]) << 16)
            | (np.uint32(u8[byte + 3]) << 24))


# ---- floats: one unit is 16 stored values ------------------------------------------------------------
@device
def ab_plain(u8, i8, f16, f32, bb, k):
    return np.float32(1.0), np.float32(0.0)


@device
def q_f32(u8, i8, f16, f32, bb, k, j):
    return f32[bb // 4 + j]


@device
def q_f16(u8, i8, f16, f32, bb, k, j):
    return np.float32(f16[bb // 2 + j])


# ---- legacy 32-value blocks: unit k = 0 is values 0..15, k = 1 values 16..31 ------------------------
@device
def ab_q8_0(u8, i8, f16, f32, bb, k):
    return _half(f16, bb), np.float32(0.0)


@device
def q_q8_0(u8, i8, f16, f32, bb, k, j):
    return np.float32(i8[bb + 2 + 16 * k + j])


@device
def ab_q4_0(u8, i8, f16, f32, bb, k):
    d = _half(f16, bb)
    return d, -8 * d


@device
def ab_with_min(u8, i8, f16, f32, bb, k):    # Q4_1, Q5_1: d and m, value = d * q + m
    return _half(f16, bb), _half(f16, bb + 2)


@device
def q_q4_0(u8, i8, f16, f32, bb, k, j):
    return np.float32((u8[bb + 2 + j] >> (4 * k)) & 15)


@device
def q_q4_1(u8, i8, f16, f32, bb, k, j):
    return np.float32((u8[bb + 4 + j] >> (4 * k)) & 15)


@device
def ab_q5_0(u8, i8, f16, f32, bb, k):
    d = _half(f16, bb)
    return d, -16 * d


@device
def q_q5_0(u8, i8, f16, f32, bb, k, j):
    high = (_u32(u8, bb + 2) >> (16 * k + j)) & 1
    return np.float32(((u8[bb + 6 + j] >> (4 * k)) & 15) | (high << 4))


@device
def q_q5_1(u8, i8, f16, f32, bb, k, j):
    high = (_u32(u8, bb + 4) >> (16 * k + j)) & 1
    return np.float32(((u8[bb + 8 + j] >> (4 * k)) & 15) | (high << 4))


# ---- k-quants: 256-value super-blocks, unit k = values 16k..16k+15 -----------------------------------
@device
def _scale_min_k4(u8, scales, s):
    """ggml's get_scale_min_k4: the 6-bit scale and min of sub-block s (of 32 values)."""
    if s < 4:
        return u8[ix(scales + s)] & 63, u8[ix(scales + s + 4)] & 63
    sc = (u8[ix(scales + s + 4)] & 15) | ((u8[ix(scales + s - 4)] >> 6) << 4)
    m = (u8[ix(scales + s + 4)] >> 4) | ((u8[ix(scales + s)] >> 6) << 4)
    return sc, m


@device
def ab_q4_k(u8, i8, f16, f32, bb, k):    # also Q5_K: d, dmin, 12 scale bytes at the same places
    sc, m = _scale_min_k4(u8, bb + 4, k // 2)
    return _half(f16, bb) * np.float32(sc), -_half(f16, bb + 2) * np.float32(m)


@device
def q_q4_k(u8, i8, f16, f32, bb, k, j):
    s = k // 2
    return np.float32((u8[bb + 16 + 32 * (s // 2) + 16 * (k % 2) + j] >> (4 * (s % 2))) & 15)


@device
def q_q5_k(u8, i8, f16, f32, bb, k, j):
    s, l = k // 2, 16 * (k % 2) + j
    low = (u8[bb + 48 + 32 * (s // 2) + l] >> (4 * (s % 2))) & 15
    return np.float32(low | (((u8[bb + 16 + l] >> s) & 1) << 4))


@device
def ab_q6_k(u8, i8, f16, f32, bb, k):
    group = k // 2                                   # 32-value group: half = group // 4, kk = group % 4
    a = _half(f16, bb + 208) * np.float32(i8[bb + 192 + 8 * (group // 4) + k % 2 + 2 * (group % 4)])
    return a, -32 * a


@device
def q_q6_k(u8, i8, f16, f32, bb, k, j):
    group = k // 2
    half, kk, l = group // 4, group % 4, 16 * (k % 2) + j
    low = (u8[bb + 64 * half + 32 * (kk & 1) + l] >> (4 * (kk >> 1))) & 15
    high = (u8[bb + 128 + 32 * half + l] >> (2 * kk)) & 3
    return np.float32(low | (high << 4))


@device
def ab_q3_k(u8, i8, f16, f32, bb, k):
    scales = bb + 96                                 # 16 six-bit scales packed in 12 bytes
    low = (u8[scales + k % 8] >> (4 * (k // 8))) & 15
    high = (u8[scales + 8 + k % 4] >> (2 * (k // 4))) & 3
    return _half(f16, bb + 108) * np.float32(np.int32(low | (high << 4)) - 32), np.float32(0.0)


@device
def q_q3_k(u8, i8, f16, f32, bb, k, j):
    half, jj, second = k // 8, (k % 8) // 2, k % 2
    q = (u8[bb + 32 + 32 * half + 16 * second + j] >> (2 * jj)) & 3
    hbit = (u8[bb + 16 * second + j] >> (4 * half + jj)) & 1
    return np.float32(np.int32(q) - (0 if hbit else 4))


@device
def ab_q2_k(u8, i8, f16, f32, bb, k):
    sc = u8[bb + k]
    return _half(f16, bb + 80) * np.float32(sc & 15), -_half(f16, bb + 82) * np.float32(sc >> 4)


@device
def q_q2_k(u8, i8, f16, f32, bb, k, j):
    half, jj, second = k // 8, (k % 8) // 2, k % 2
    return np.float32((u8[bb + 16 + 32 * half + 16 * second + j] >> (2 * jj)) & 3)


def _unit_functions(kind: int, ab, q_at):
    """The dot and dequantize functions of one format's unit u of a row starting at byte rb."""
    block_bytes, units = BLOCKS[kind]

    @device
    def dot(u8, i8, f16, f32, rb, u, xs, xo):
        bb, k = rb + (u // units) * block_bytes, u % units
        a, b = ab(u8, i8, f16, f32, bb, k)
        sq = np.float32(0.0)
        sx = np.float32(0.0)
        for j in range(UNIT):
            xj = xs[xo + j]
            sq += q_at(u8, i8, f16, f32, bb, k, j) * xj
            sx += xj
        return a * sq + b * sx

    @device
    def dequant(u8, i8, f16, f32, rb, u, out, row, col, scale):
        bb, k = rb + (u // units) * block_bytes, u % units
        a, b = ab(u8, i8, f16, f32, bb, k)
        for j in range(UNIT):
            out[row, col + j] = (a * q_at(u8, i8, f16, f32, bb, k, j) + b) * scale

    return dot, dequant


(dot_f32, deq_f32), (dot_f16, deq_f16) = _unit_functions(F32, ab_plain, q_f32), _unit_functions(F16, ab_plain, q_f16)
dot_q4_0, deq_q4_0 = _unit_functions(Q4_0, ab_q4_0, q_q4_0)
dot_q4_1, deq_q4_1 = _unit_functions(Q4_1, ab_with_min, q_q4_1)
dot_q5_0, deq_q5_0 = _unit_functions(Q5_0, ab_q5_0, q_q5_0)
dot_q5_1, deq_q5_1 = _unit_functions(Q5_1, ab_with_min, q_q5_1)
dot_q8_0, deq_q8_0 = _unit_functions(Q8_0, ab_q8_0, q_q8_0)
dot_q2_k, deq_q2_k = _unit_functions(Q2_K, ab_q2_k, q_q2_k)
dot_q3_k, deq_q3_k = _unit_functions(Q3_K, ab_q3_k, q_q3_k)
dot_q4_k, deq_q4_k = _unit_functions(Q4_K, ab_q4_k, q_q4_k)
dot_q5_k, deq_q5_k = _unit_functions(Q5_K, ab_q4_k, q_q5_k)
dot_q6_k, deq_q6_k = _unit_functions(Q6_K, ab_q6_k, q_q6_k)


@device
def unit_dot(kind, u8, i8, f16, f32, rb, u, xs, xo):
    """sum_j w[16u + j] * xs[xo + j] for the row of format `kind` starting at byte rb (kind is the same for
    every lane of a warp, so the branch does not diverge)."""
    if kind == Q8_0:
        return dot_q8_0(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q4_K:
        return dot_q4_k(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q6_K:
        return dot_q6_k(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q5_0:
        return dot_q5_0(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q4_0:
        return dot_q4_0(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q4_1:
        return dot_q4_1(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q5_1:
        return dot_q5_1(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q5_K:
        return dot_q5_k(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q3_K:
        return dot_q3_k(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == Q2_K:
        return dot_q2_k(u8, i8, f16, f32, rb, u, xs, xo)
    if kind == F16:
        return dot_f16(u8, i8, f16, f32, rb, u, xs, xo)
    return dot_f32(u8, i8, f16, f32, rb, u, xs, xo)


@device
def unit_dequant(kind, u8, i8, f16, f32, rb, u, out, row, col, scale):
    """out[row, col + j] = w[16u + j] * scale, j in 0..15."""
    if kind == Q8_0:
        deq_q8_0(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q4_K:
        deq_q4_k(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q6_K:
        deq_q6_k(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q5_0:
        deq_q5_0(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q4_0:
        deq_q4_0(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q4_1:
        deq_q4_1(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q5_1:
        deq_q5_1(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q5_K:
        deq_q5_k(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q3_K:
        deq_q3_k(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == Q2_K:
        deq_q2_k(u8, i8, f16, f32, rb, u, out, row, col, scale)
    elif kind == F16:
        deq_f16(u8, i8, f16, f32, rb, u, out, row, col, scale)
    else:
        deq_f32(u8, i8, f16, f32, rb, u, out, row, col, scale)
