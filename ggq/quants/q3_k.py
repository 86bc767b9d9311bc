"""Q3_K: 256 values as 16 groups of 16, signed 3-bit levels (-4..3) with a signed 6-bit scale per group.

Block (110 bytes): hmask[32] (bit 2 of each level), qs[64] (bits 0-1), scales[12] (16 6-bit scales
biased by 32: low nibbles in bytes 0-7, high 2 bits in bytes 8-11), d fp16.
Mirrors ggml's quantize_row_q3_K_ref (no importance) and quantize_row_q3_K_impl (importance).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.ksearch import clamp, f32, get_fp16, make_q3_quants, make_qx_quants, nearest_int, put_fp16
from ggq.quants.q2_k import pack_2bit

QK_K = 256
BLOCK_BYTES = 110
_HMASK, _QS, _SCALES, _D = 0, 32, 96, 108


@njit(inline="always", cache=True)
def _set_scale(scales, j, l):
    """Store biased 6-bit scale l (0..63) of group j; the 12 bytes must start zeroed."""
    if j < 8:
        scales[j] = l & 0xF
    else:
        scales[j - 8] |= (l & 0xF) << 4
    scales[j % 4 + 8] |= ((l >> 4) << (2 * (j // 4))) & 0xFF


@njit(inline="always", cache=True)
def get_scale(scales, j):
    """Signed scale of group j (-32..31)."""
    low = np.int64(scales[j]) & 0xF if j < 8 else np.int64(scales[j - 8]) >> 4
    high = (np.int64(scales[8 + j % 4]) >> (2 * (j // 4))) & 3
    return (low | (high << 4)) - 32


@njit(inline="always", cache=True, error_model="numpy")
def _finish_block(x, blk, L):
    """Requantize against the stored scales, then split levels into hmask bits and 2-bit qs."""
    d_all = get_fp16(blk, _D)
    scales = blk[_SCALES:_SCALES + 12]
    for j in range(QK_K // 16):
        d = f32(d_all * f32(get_scale(scales, j)))
        if d == f32(0.0):
            continue
        for ii in range(16):
            L[16 * j + ii] = clamp(nearest_int(f32(x[16 * j + ii] / d)), -4, 3) + 4
    for j in range(QK_K // 8):
        blk[_HMASK + j] = 0
    for j in range(QK_K):
        if L[j] > 3:
            blk[_HMASK + j % 32] |= 1 << (j // 32)
            L[j] -= 4
    pack_2bit(L, blk[_QS:_QS + 64])


@njit(cache=True, error_model="numpy")
def _q3_k_block_ref(x, blk, L, scales):
    max_scale = f32(0.0)
    amax = f32(0.0)
    for j in range(QK_K // 16):
        scales[j] = make_q3_quants(16, 4, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16], True)
        scale = f32(abs(scales[j]))
        if scale > amax:
            amax = scale
            max_scale = scales[j]
    for j in range(12):
        blk[_SCALES + j] = 0
    if max_scale != f32(0.0):
        iscale = f32(f32(-32.0) / max_scale)
        for j in range(QK_K // 16):
            l = np.int8(nearest_int(f32(iscale * scales[j])) & 0xFF)  # C stores into an int8_t first
            _set_scale(blk[_SCALES:_SCALES + 12], j, clamp(np.int64(l), -32, 31) + 32)
        put_fp16(blk, _D, f32(f32(1.0) / iscale))
    else:
        put_fp16(blk, _D, f32(0.0))
    _finish_block(x, blk, L)


@njit(cache=True, error_model="numpy")
def _q3_k_block_impl(x, qw, blk, L, scales, weight, sw, Ls):
    sumx2 = f32(0.0)
    for j in range(QK_K):
        sumx2 += f32(x[j] * x[j])
    sigma2 = f32(f32(f32(2.0) * sumx2) / f32(QK_K))
    for j in range(QK_K // 16):
        for l in range(16):
            xv = x[16 * j + l]
            weight[l] = f32(qw[16 * j + l] * f32(np.sqrt(f32(sigma2 + f32(xv * xv)))))
        sumw = f32(0.0)
        for l in range(16):
            sumw += weight[l]
        sw[j] = sumw
        scales[j] = make_qx_quants(16, 4, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16], 1, weight)
    for j in range(12):
        blk[_SCALES + j] = 0
    d_block = make_qx_quants(QK_K // 16, 32, scales, Ls, 1, sw)
    for j in range(QK_K // 16):
        _set_scale(blk[_SCALES:_SCALES + 12], j, np.int64(Ls[j]))
    put_fp16(blk, _D, d_block)
    _finish_block(x, blk, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q3_k(x, importance, out):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        L = np.zeros(QK_K, dtype=np.int8)
        scales = np.zeros(16, dtype=np.float32)
        weight = np.zeros(16, dtype=np.float32)
        sw = np.zeros(16, dtype=np.float32)
        Ls = np.zeros(16, dtype=np.int8)
        for i in range(nb):
            xb = x[r, i * QK_K:(i + 1) * QK_K]
            blk = out[r, i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
            if importance.shape[0] == 0:
                _q3_k_block_ref(xb, blk, L, scales)
            else:
                _q3_k_block_impl(xb, importance[i * QK_K:(i + 1) * QK_K], blk, L, scales, weight, sw, Ls)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q3_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            blk = blocks[r, i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
            y = out[r, i * QK_K:(i + 1) * QK_K]
            d_all = get_fp16(blk, _D)
            for e in range(QK_K):
                dl = f32(d_all * f32(get_scale(blk[_SCALES:_SCALES + 12], e // 16)))
                k = e % 32
                q = (blk[_QS + (e // 128) * 32 + k] >> (2 * ((e % 128) // 32))) & 3
                high = (blk[_HMASK + k] >> (e // 32)) & 1
                y[e] = f32(dl * f32(np.int64(q) - (0 if high else 4)))
