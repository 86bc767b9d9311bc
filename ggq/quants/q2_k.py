"""Q2_K: 256 values as 16 groups of 16, 2-bit levels with a 4-bit scale and 4-bit min per group.

Block (84 bytes): scales[16] (low nibble scale, high nibble min), qs[64], d fp16, dmin fp16.
Mirrors ggml's quantize_row_q2_K_ref (no importance) and quantize_row_q2_K_impl (importance).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.ksearch import clamp, f32, get_fp16, make_qkx_quants, make_qp_quants, nearest_int, put_fp16

QK_K = 256
BLOCK_BYTES = 84
_SCALES, _QS, _D, _DMIN = 0, 16, 80, 82


@njit(inline="always", cache=True)
def pack_2bit(L, qs):
    """Four 2-bit levels per byte: byte l of each 32-byte half holds elements l, l+32, l+64, l+96."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            qs[j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                              | (L[j + l + 96] << 6)) & 0xFF


@njit(inline="always", cache=True, error_model="numpy")
def _requantize_q2(x, blk, L, dm, mm):
    """Recompute the levels against the stored (fp16-rounded) scales, skipping groups of scale 0."""
    for j in range(QK_K // 16):
        sc = blk[_SCALES + j]
        d = f32(dm * f32(sc & 0xF))
        if d == f32(0.0):
            continue
        m = f32(mm * f32(sc >> 4))
        for ii in range(16):
            L[16 * j + ii] = clamp(nearest_int(f32(f32(x[16 * j + ii] + m) / d)), 0, 3)


@njit(cache=True, error_model="numpy")
def _q2_k_block_ref(x, blk, L, Laux, weights, scales, mins):
    max_scale = f32(0.0)
    max_min = f32(0.0)
    for j in range(QK_K // 16):
        for l in range(16):
            weights[l] = abs(x[16 * j + l])
        scales[j], mins[j] = make_qkx_quants(16, 3, x[16 * j:16 * j + 16], weights, L[16 * j:16 * j + 16],
                                             Laux, f32(-0.5), f32(0.1), 15, True, False)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    q4scale = f32(15.0)
    if max_scale > f32(0.0):
        iscale = f32(q4scale / max_scale)
        for j in range(QK_K // 16):
            blk[_SCALES + j] = nearest_int(f32(iscale * scales[j])) & 0xFF
        put_fp16(blk, _D, f32(max_scale / q4scale))
    else:
        for j in range(QK_K // 16):
            blk[_SCALES + j] = 0
        put_fp16(blk, _D, f32(0.0))
    if max_min > f32(0.0):
        iscale = f32(q4scale / max_min)
        for j in range(QK_K // 16):
            blk[_SCALES + j] |= (nearest_int(f32(iscale * mins[j])) << 4) & 0xFF
        put_fp16(blk, _DMIN, f32(max_min / q4scale))
    else:
        put_fp16(blk, _DMIN, f32(0.0))
    _requantize_q2(x, blk, L, get_fp16(blk, _D), get_fp16(blk, _DMIN))
    pack_2bit(L, blk[_QS:_QS + 64])


@njit(cache=True, error_model="numpy")
def _q2_k_block_impl(x, qw, blk, L, Laux, weight, scales, mins, sw, Ls, Lm):
    sumx2 = f32(0.0)
    for j in range(QK_K):
        sumx2 += f32(x[j] * x[j])
    sigma2 = f32(sumx2 / f32(QK_K))
    for j in range(QK_K // 16):
        sw[j] = f32(0.0)
        for l in range(16):
            xv = x[16 * j + l]
            weight[l] = f32(qw[16 * j + l] * f32(np.sqrt(f32(sigma2 + f32(xv * xv)))))
        for l in range(16):
            sw[j] += weight[l]
        scales[j], mins[j] = make_qkx_quants(16, 3, x[16 * j:16 * j + 16], weight, L[16 * j:16 * j + 16],
                                             Laux, f32(-0.9), f32(0.05), 36, False, True)
    dm = make_qp_quants(QK_K // 16, 15, scales, Ls, sw)
    mm = make_qp_quants(QK_K // 16, 15, mins, Lm, sw)
    put_fp16(blk, _D, dm)
    put_fp16(blk, _DMIN, mm)
    for j in range(QK_K // 16):
        blk[_SCALES + j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
    _requantize_q2(x, blk, L, get_fp16(blk, _D), get_fp16(blk, _DMIN))
    pack_2bit(L, blk[_QS:_QS + 64])


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q2_k(x, importance, out):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        L = np.zeros(QK_K, dtype=np.uint8)
        Laux = np.zeros(16, dtype=np.uint8)
        weights = np.zeros(16, dtype=np.float32)
        scales = np.zeros(16, dtype=np.float32)
        mins = np.zeros(16, dtype=np.float32)
        sw = np.zeros(16, dtype=np.float32)
        Ls = np.zeros(16, dtype=np.uint8)
        Lm = np.zeros(16, dtype=np.uint8)
        for i in range(nb):
            xb = x[r, i * QK_K:(i + 1) * QK_K]
            blk = out[r, i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
            if importance.shape[0] == 0:
                _q2_k_block_ref(xb, blk, L, Laux, weights, scales, mins)
            else:
                _q2_k_block_impl(xb, importance[i * QK_K:(i + 1) * QK_K], blk, L, Laux, weights, scales,
                                 mins, sw, Ls, Lm)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q2_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            blk = blocks[r, i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
            y = out[r, i * QK_K:(i + 1) * QK_K]
            d = get_fp16(blk, _D)
            dmin = get_fp16(blk, _DMIN)
            for e in range(QK_K):
                sc = blk[_SCALES + e // 16]
                dl = f32(d * f32(sc & 0xF))
                ml = f32(dmin * f32(sc >> 4))
                q = (blk[_QS + (e // 128) * 32 + e % 32] >> (2 * ((e % 128) // 32))) & 3
                y[e] = f32(f32(dl * f32(q)) - ml)
