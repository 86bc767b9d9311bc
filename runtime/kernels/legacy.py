"""Fused dequantize-and-dot kernels for the 32-value block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Weights stay in their ggml blocks (uint8 [rows, row_bytes], usually a view into the memory-mapped file).
For each format there is one block reader in two forms that share the same bit layout:
    _dot_<t>(w, r, o, x, xo)       -> float32: block at byte o of row r, dotted with x[xo:xo+32]
    _dec_<t>(w, r, o, out, ro, xo) writes the 32 values to out[ro, xo:xo+32]
and two parallel kernels built from them:
    matvec_<t>(w, x, out)          out[r] = dot(row r, x), float32 accumulation   (decode: one token)
    decode_rows_<t>(w, r0, out)    out[i] = rows r0+i as float32                    (prefill: a tile for BLAS)
Block layouts (ggml-common.h): d (f16) [m (f16)] [qh (u32)] qs. The 4-bit formats keep value j in the low
nibble of qs[j] and value j+16 in the high nibble; Q5 formats take bit 5 of value j from bit j of qh.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels import FASTMATH

from ggq.quants.floats import fp16_bits_to_fp32, get_u16

QK = 32
F0 = np.float32(0.0)


@njit(inline="always", cache=True)
def _half(w, r, o):
    return fp16_bits_to_fp32(get_u16(w, r, o))


@njit(inline="always", cache=True)
def _qh(w, r, o):
    return (np.uint32(w[r, o]) | (np.uint32(w[r, o + 1]) << 8) | (np.uint32(w[r, o + 2]) << 16)
            | (np.uint32(w[r, o + 3]) << 24))


# ---- Q4_0: d, qs[16]; value = (nibble - 8) * d --------------------------------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q4_0(w, r, o, x, xo):
    s = F0
    for j in range(16):
        q = w[r, o + 2 + j]
        s += np.float32(np.int32(q & 15) - 8) * x[xo + j] + np.float32(np.int32(q >> 4) - 8) * x[xo + j + 16]
    return _half(w, r, o) * s


@njit(inline="always", cache=True)
def _dec_q4_0(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    for j in range(16):
        q = w[r, o + 2 + j]
        out[ro, xo + j] = np.float32(np.int32(q & 15) - 8) * d
        out[ro, xo + j + 16] = np.float32(np.int32(q >> 4) - 8) * d


# ---- Q4_1: d, m, qs[16]; value = nibble * d + m -------------------------------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q4_1(w, r, o, x, xo):
    s = F0
    sx = F0
    for j in range(16):
        q = w[r, o + 4 + j]
        a = x[xo + j]
        b = x[xo + j + 16]
        s += np.float32(q & 15) * a + np.float32(q >> 4) * b
        sx += a + b
    return _half(w, r, o) * s + _half(w, r, o + 2) * sx


@njit(inline="always", cache=True)
def _dec_q4_1(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    m = _half(w, r, o + 2)
    for j in range(16):
        q = w[r, o + 4 + j]
        out[ro, xo + j] = np.float32(q & 15) * d + m
        out[ro, xo + j + 16] = np.float32(q >> 4) * d + m


# ---- Q5_0: d, qh, qs[16]; value = (nibble | bit5 << 4) - 16, times d -----------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q5_0(w, r, o, x, xo):
    qh = _qh(w, r, o + 2)
    s = F0
    for j in range(16):
        q = np.uint32(w[r, o + 6 + j])
        lo = (q & 15) | (((qh >> j) & 1) << 4)
        hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
        s += np.float32(np.int32(lo) - 16) * x[xo + j] + np.float32(np.int32(hi) - 16) * x[xo + j + 16]
    return _half(w, r, o) * s


@njit(inline="always", cache=True)
def _dec_q5_0(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    qh = _qh(w, r, o + 2)
    for j in range(16):
        q = np.uint32(w[r, o + 6 + j])
        lo = (q & 15) | (((qh >> j) & 1) << 4)
        hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
        out[ro, xo + j] = np.float32(np.int32(lo) - 16) * d
        out[ro, xo + j + 16] = np.float32(np.int32(hi) - 16) * d


# ---- Q5_1: d, m, qh, qs[16]; value = (nibble | bit5 << 4) * d + m --------------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q5_1(w, r, o, x, xo):
    qh = _qh(w, r, o + 4)
    s = F0
    sx = F0
    for j in range(16):
        q = np.uint32(w[r, o + 8 + j])
        lo = (q & 15) | (((qh >> j) & 1) << 4)
        hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
        a = x[xo + j]
        b = x[xo + j + 16]
        s += np.float32(lo) * a + np.float32(hi) * b
        sx += a + b
    return _half(w, r, o) * s + _half(w, r, o + 2) * sx


@njit(inline="always", cache=True)
def _dec_q5_1(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    m = _half(w, r, o + 2)
    qh = _qh(w, r, o + 4)
    for j in range(16):
        q = np.uint32(w[r, o + 8 + j])
        lo = (q & 15) | (((qh >> j) & 1) << 4)
        hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
        out[ro, xo + j] = np.float32(lo) * d + m
        out[ro, xo + j + 16] = np.float32(hi) * d + m


# ---- Q8_0: d, qs int8[32]; value = q * d --------------------------------------------------------
@njit(inline="always", cache=True, fastmath=FASTMATH)
def _dot_q8_0(w, r, o, x, xo):
    s = F0
    for j in range(32):
        s += np.float32(np.int8(w[r, o + 2 + j])) * x[xo + j]
    return _half(w, r, o) * s


@njit(inline="always", cache=True)
def _dec_q8_0(w, r, o, out, ro, xo):
    d = _half(w, r, o)
    for j in range(32):
        out[ro, xo + j] = np.float32(np.int8(w[r, o + 2 + j])) * d


# ---- the kernels: parallel over output rows ------------------------------------------------------
# One pair per format (Numba cannot cache kernels that take the block reader as an argument).

@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q4_0(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 18):
            acc += _dot_q4_0(w, r, b * 18, x, b * QK)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q4_0(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 18):
            _dec_q4_0(w, r0 + i, b * 18, out, i, b * QK)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q4_1(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 20):
            acc += _dot_q4_1(w, r, b * 20, x, b * QK)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q4_1(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 20):
            _dec_q4_1(w, r0 + i, b * 20, out, i, b * QK)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q5_0(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 22):
            acc += _dot_q5_0(w, r, b * 22, x, b * QK)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q5_0(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 22):
            _dec_q5_0(w, r0 + i, b * 22, out, i, b * QK)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q5_1(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 24):
            acc += _dot_q5_1(w, r, b * 24, x, b * QK)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q5_1(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 24):
            _dec_q5_1(w, r0 + i, b * 24, out, i, b * QK)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_q8_0(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for b in range(w.shape[1] // 34):
            acc += _dot_q8_0(w, r, b * 34, x, b * QK)
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_q8_0(w, r0, out):
    for i in prange(out.shape[0]):
        for b in range(w.shape[1] // 34):
            _dec_q8_0(w, r0 + i, b * 34, out, i, b * QK)
