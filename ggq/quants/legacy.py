"""Legacy 32-value block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, bit-exact with ggml-quants.c.

Without importance the kernels follow quantize_row_<t>_ref (what llama-quantize writes without an
imatrix); with importance they follow quantize_row_<t>_impl: per-value weights
importance[j] * sqrt(sigma2 + x[j]^2), sigma2 = mean of x^2 over the row, then make_qx_quants
(Q4_0, Q5_0) or make_qkx3_quants (Q4_1, Q5_1). Q8_0 has no search and ignores importance.

C conversions are emulated: (int8_t)/(uint8_t) of a float is x86's cvttss2si (truncate; NaN or out of
range -> INT_MIN) keeping the low byte, so NaN/inf inputs give the same bytes as llama.cpp.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.floats import fp16_bits_to_fp32, fp32_to_fp16_bits, get_u16, put_u16
from ggq.quants.ksearch import make_qkx_quants, make_qx_quants

F32 = np.float32
QK = 32
FLT_MAX = np.float32(3.4028234663852886e38)


@njit(inline="always", cache=True, error_model="numpy")
def c_float_to_int(v):
    """(int)v as x86 cvttss2si: truncation, NaN and out-of-range give INT_MIN."""
    if not (abs(v) < F32(2147483648.0)):
        return np.int64(-2147483648)
    return np.int64(v)


@njit(inline="always", cache=True, error_model="numpy")
def c_float_to_int8(v):
    low = c_float_to_int(v) & 0xFF
    return low - 256 if low >= 128 else low


@njit(inline="always", cache=True, error_model="numpy")
def c_roundf(v):
    """C roundf: half away from zero (exact: |v| + 0.5 is exact in float64 for any float32 v)."""
    r = np.floor(np.float64(abs(v)) + 0.5)
    return F32(-r if v < 0 else r)


@njit(inline="always", cache=True, error_model="numpy")
def row_sigma2(x, r):
    """sum(x^2)/n over the row, accumulated in float32 in order as ggml does."""
    sum_x2 = F32(0.0)
    for j in range(x.shape[1]):
        sum_x2 += x[r, j] * x[r, j]
    return sum_x2 / F32(x.shape[1])


@njit(inline="always", cache=True, error_model="numpy")
def block_weights(x, r, j0, importance, sigma2, weight):
    for j in range(QK):
        v = x[r, j0 + j]
        weight[j] = importance[j0 + j] * np.sqrt(sigma2 + v * v)


@njit(inline="always", cache=True, error_model="numpy")
def put_nibbles(out, r, at, L):
    """qs[j] = L[j] | L[j+16] << 4, low nibble first, as every 4/5-bit legacy block stores them."""
    for j in range(QK // 2):
        out[r, at + j] = np.uint8((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4))


@njit(inline="always", cache=True, error_model="numpy")
def put_qh(out, r, at, L):
    """Fifth bits of the 32 levels as one little-endian uint32, bit j for value j."""
    qh = 0
    for j in range(QK):
        qh |= ((L[j] >> 4) & 1) << j
    for k in range(4):
        out[r, at + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(inline="always", cache=True, error_model="numpy")
def get_level(blocks, r, at_qs, at_qh, j):
    """Level j of a block: its nibble, plus the fifth bit from qh when at_qh >= 0."""
    q = (blocks[r, at_qs + (j & 15)] >> (4 * (j >> 4))) & 0xF
    if at_qh >= 0:
        q |= ((blocks[r, at_qh + (j >> 3)] >> (j & 7)) & 1) << 4
    return np.int32(q)


@njit(inline="always", cache=True, error_model="numpy")
def symmetric_levels_ref(x, r, j0, nlevels, L):
    """quantize_row_q{4,5}_0_ref for one block: levels of x * (-nlevels/2 / max) + nlevels/2;
    returns the float d (id comes from the float d, not the fp16-rounded one)."""
    amax = F32(0.0)
    vmax = F32(0.0)
    for j in range(QK):
        v = x[r, j0 + j]
        if amax < abs(v):
            amax = abs(v)
            vmax = v
    half = nlevels // 2
    d = vmax / F32(-half)
    id = F32(1.0) / d if d != 0 else F32(0.0)
    for j in range(QK):
        L[j] = min(nlevels - 1, c_float_to_int8(x[r, j0 + j] * id + (F32(half) + F32(0.5)))) & 0xFF
    return d


@njit(inline="always", cache=True, error_model="numpy")
def affine_levels_ref(x, r, j0, nlevels, clamp, L):
    """quantize_row_q{4,5}_1_ref for one block; returns (d, min). Q5_1's ref does not clamp."""
    vmin = FLT_MAX
    vmax = -FLT_MAX
    for j in range(QK):
        v = x[r, j0 + j]
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
    d = (vmax - vmin) / F32(nlevels - 1)
    id = F32(1.0) / d if d != 0 else F32(0.0)
    for j in range(QK):
        q = c_float_to_int8((x[r, j0 + j] - vmin) * id + F32(0.5))
        L[j] = (min(nlevels - 1, q) if clamp else q) & 0xFF
    return d, vmin


@njit(inline="always", cache=True, error_model="numpy")
def quantize_symmetric(x, importance, out, nlevels, type_size, at_qh, at_qs):
    """Q4_0 (nlevels 16) and Q5_0 (32): d, [qh], qs."""
    for r in prange(x.shape[0]):
        L = np.empty(QK, dtype=np.int8)
        weight = np.empty(QK, dtype=np.float32)
        sigma2 = row_sigma2(x, r) if importance.size > 0 else F32(0.0)
        for ib in range(x.shape[1] // QK):
            j0 = ib * QK
            at = ib * type_size
            if importance.size > 0:
                block_weights(x, r, j0, importance, sigma2, weight)
                d = make_qx_quants(QK, nlevels // 2, x[r, j0:j0 + QK], L, 1, weight)
            else:
                d = symmetric_levels_ref(x, r, j0, nlevels, L)
            put_u16(out, r, at, fp32_to_fp16_bits(d))
            if at_qh >= 0:
                put_qh(out, r, at + at_qh, L)
            put_nibbles(out, r, at + at_qs, L)


@njit(inline="always", cache=True, error_model="numpy")
def quantize_affine(x, importance, out, nlevels, type_size, at_qh, at_qs):
    """Q4_1 (nlevels 16) and Q5_1 (32): d, m, [qh], qs."""
    for r in prange(x.shape[0]):
        L = np.empty(QK, dtype=np.uint8)
        Laux = np.empty(QK, dtype=np.uint8)
        weight = np.empty(QK, dtype=np.float32)
        sigma2 = row_sigma2(x, r) if importance.size > 0 else F32(0.0)
        for ib in range(x.shape[1] // QK):
            j0 = ib * QK
            at = ib * type_size
            if importance.size > 0:
                block_weights(x, r, j0, importance, sigma2, weight)
                d, the_min = make_qkx_quants(QK, nlevels - 1, x[r, j0:j0 + QK], weight, L, Laux,
                                             F32(-0.9), F32(0.05), 36, False, True)  # make_qkx3_quants
                m = -the_min
            else:
                d, m = affine_levels_ref(x, r, j0, nlevels, nlevels == 16, L)
            put_u16(out, r, at, fp32_to_fp16_bits(d))
            put_u16(out, r, at + 2, fp32_to_fp16_bits(m))
            if at_qh >= 0:
                put_qh(out, r, at + at_qh, L)
            put_nibbles(out, r, at + at_qs, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q4_0(x, importance, out):
    quantize_symmetric(x, importance, out, 16, 18, -1, 2)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q5_0(x, importance, out):
    quantize_symmetric(x, importance, out, 32, 22, 2, 6)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q4_1(x, importance, out):
    quantize_affine(x, importance, out, 16, 20, -1, 4)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q5_1(x, importance, out):
    quantize_affine(x, importance, out, 32, 24, 4, 8)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q8_0(x, importance, out):
    """quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d); importance is ignored, as in ggml."""
    for r in prange(x.shape[0]):
        for ib in range(x.shape[1] // QK):
            j0 = ib * QK
            at = ib * 34
            amax = F32(0.0)
            for j in range(QK):
                av = abs(x[r, j0 + j])
                amax = amax if amax > av else av
            d = amax / F32(127.0)
            id = F32(1.0) / d if d != 0 else F32(0.0)
            put_u16(out, r, at, fp32_to_fp16_bits(d))
            for j in range(QK):
                out[r, at + 2 + j] = np.uint8(c_float_to_int(c_roundf(x[r, j0 + j] * id)) & 0xFF)


@njit(inline="always", cache=True, error_model="numpy")
def dequantize_blocks(blocks, out, type_size, offset, has_min, at_qh, at_qs):
    """value = d * (level - offset) [+ m]: the float order of ggml's dequantize_row_*."""
    for r in prange(blocks.shape[0]):
        for ib in range(out.shape[1] // QK):
            at = ib * type_size
            d = fp16_bits_to_fp32(get_u16(blocks, r, at))
            m = fp16_bits_to_fp32(get_u16(blocks, r, at + 2)) if has_min else F32(0.0)
            for j in range(QK):
                q = F32(get_level(blocks, r, at + at_qs, at + at_qh if at_qh >= 0 else -1, j) - offset)
                out[r, ib * QK + j] = d * q + m if has_min else d * q


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q4_0(blocks, out):
    dequantize_blocks(blocks, out, 18, 8, False, -1, 2)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q4_1(blocks, out):
    dequantize_blocks(blocks, out, 20, 0, True, -1, 4)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q5_0(blocks, out):
    dequantize_blocks(blocks, out, 22, 16, False, 2, 6)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q5_1(blocks, out):
    dequantize_blocks(blocks, out, 24, 0, True, 4, 8)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q8_0(blocks, out):
    for r in prange(blocks.shape[0]):
        for ib in range(out.shape[1] // QK):
            at = ib * 34
            d = fp16_bits_to_fp32(get_u16(blocks, r, at))
            for j in range(QK):
                q = np.int32(blocks[r, at + 2 + j])
                out[r, ib * QK + j] = F32(q - 256 if q >= 128 else q) * d
