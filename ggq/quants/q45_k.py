"""Q4_K and Q5_K: 256 values as 8 groups of 32, unsigned 4-/5-bit levels with a 6-bit scale and a
6-bit min per group (value = d * scale * level - dmin * min).

Q4_K block (144 bytes): d fp16, dmin fp16, scales[12] (packed 6-bit scales and mins), qs[128].
Q5_K block (176 bytes): d, dmin, scales[12], qh[32] (bit 4 of each level), qs[128] (bits 0-3).
Mirrors ggml's quantize_row_q{4,5}_K_ref (no importance) and quantize_row_q{4,5}_K_impl (importance);
the two formats differ only in nmax, the ref search parameters, and the bit layout.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.ksearch import (clamp, f32, get_fp16, get_scale_min_k4, make_qkx_quants, make_qp_quants,
                                nearest_int, put_fp16, set_scale_min_k4)

QK_K = 256
Q4_K_BYTES = 144
Q5_K_BYTES = 176
_D, _DMIN, _SCALES, _Q4_QS, _Q5_QH, _Q5_QS = 0, 2, 4, 16, 16, 48


@njit(inline="always", cache=True, error_model="numpy")
def _requantize(x, blk, L, nmax):
    """Levels against the stored scales/mins (groups whose scale rounds to 0 keep the search's)."""
    scales = blk[_SCALES:_SCALES + 12]
    d_all = get_fp16(blk, _D)
    dmin_all = get_fp16(blk, _DMIN)
    for j in range(QK_K // 32):
        sc, m = get_scale_min_k4(j, scales)
        d = f32(d_all * f32(sc))
        if d == f32(0.0):
            continue
        dm = f32(dmin_all * f32(m))
        for ii in range(32):
            L[32 * j + ii] = clamp(nearest_int(f32(f32(x[32 * j + ii] + dm) / d)), 0, nmax)


@njit(cache=True, error_model="numpy")
def _block_ref(x, blk, L, Laux, weights, scales, mins, nmax, rmin, nstep):
    """Scale/min search without importance: weights av_x + |x| per group, 6-bit scales relative to
    the block's largest scale and min."""
    max_scale = f32(0.0)
    max_min = f32(0.0)
    for j in range(QK_K // 32):
        sum_x2 = f32(0.0)
        for l in range(32):
            sum_x2 += f32(x[32 * j + l] * x[32 * j + l])
        av_x = f32(np.sqrt(f32(sum_x2 / f32(32.0))))
        for l in range(32):
            weights[l] = f32(av_x + f32(abs(x[32 * j + l])))
        scales[j], mins[j] = make_qkx_quants(32, nmax, x[32 * j:32 * j + 32], weights, L[32 * j:32 * j + 32],
                                             Laux, rmin, f32(0.1), nstep, False, False)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = f32(f32(63.0) / max_scale) if max_scale > f32(0.0) else f32(0.0)
    inv_min = f32(f32(63.0) / max_min) if max_min > f32(0.0) else f32(0.0)
    for j in range(12):
        blk[_SCALES + j] = 0
    for j in range(QK_K // 32):
        ls = min(63, nearest_int(f32(inv_scale * scales[j])) & 0xFF)  # C stores into uint8_t first
        lm = min(63, nearest_int(f32(inv_min * mins[j])) & 0xFF)
        set_scale_min_k4(blk[_SCALES:_SCALES + 12], j, ls, lm)
    put_fp16(blk, _D, f32(max_scale / f32(63.0)))
    put_fp16(blk, _DMIN, f32(max_min / f32(63.0)))
    _requantize(x, blk, L, nmax)


@njit(cache=True, error_model="numpy")
def _block_impl(x, qw, blk, L, Laux, weights, scales, mins, sw, Ls, Lm, nmax, clamp_levels):
    """Scale/min search weighted by importance * sqrt(sigma2 + x^2); scales and mins quantized by
    make_qp_quants. Q5_K clamps the 6-bit levels to 63 before packing, Q4_K does not."""
    sum_x2 = f32(0.0)
    for l in range(QK_K):
        sum_x2 += f32(x[l] * x[l])
    sigma2 = f32(f32(f32(2.0) * sum_x2) / f32(QK_K))
    for j in range(QK_K // 32):
        for l in range(32):
            xv = x[32 * j + l]
            weights[l] = f32(qw[32 * j + l] * f32(np.sqrt(f32(sigma2 + f32(xv * xv)))))
        sumw = f32(0.0)
        for l in range(32):
            sumw += weights[l]
        sw[j] = sumw
        scales[j], mins[j] = make_qkx_quants(32, nmax, x[32 * j:32 * j + 32], weights, L[32 * j:32 * j + 32],
                                             Laux, f32(-0.9), f32(0.05), 36, False, True)
    d_block = make_qp_quants(QK_K // 32, 63, scales, Ls, sw)
    m_block = make_qp_quants(QK_K // 32, 63, mins, Lm, sw)
    for j in range(12):
        blk[_SCALES + j] = 0
    for j in range(QK_K // 32):
        ls = np.int64(Ls[j])
        lm = np.int64(Lm[j])
        if clamp_levels:
            ls = min(63, ls)
            lm = min(63, lm)
        set_scale_min_k4(blk[_SCALES:_SCALES + 12], j, ls, lm)
    put_fp16(blk, _D, d_block)
    put_fp16(blk, _DMIN, m_block)
    _requantize(x, blk, L, nmax)


@njit(inline="always", cache=True)
def _pack_q4(L, qs):
    for j in range(0, QK_K, 64):
        for l in range(32):
            qs[j // 2 + l] = (L[j + l] | (L[j + l + 32] << 4)) & 0xFF


@njit(inline="always", cache=True)
def _pack_q5(L, qh, qs):
    for j in range(32):
        qh[j] = 0
    for n in range(0, QK_K, 64):
        bit = n // 32
        for j in range(32):
            l1 = np.int64(L[n + j])
            if l1 > 15:
                l1 -= 16
                qh[j] |= 1 << bit
            l2 = np.int64(L[n + j + 32])
            if l2 > 15:
                l2 -= 16
                qh[j] |= 2 << bit
            qs[n // 2 + j] = (l1 | (l2 << 4)) & 0xFF


@njit(cache=True, error_model="numpy")
def _quantize_row(x, importance, out, nmax, block_bytes):
    """One row of Q4_K (nmax 15) or Q5_K (nmax 31) blocks."""
    nb = x.shape[0] // QK_K
    # scratch buffers reused by the row's blocks, as ggml's stack arrays
    L = np.zeros(QK_K, dtype=np.uint8)
    Laux = np.zeros(32, dtype=np.uint8)
    weights = np.zeros(32, dtype=np.float32)
    scales = np.zeros(8, dtype=np.float32)
    mins = np.zeros(8, dtype=np.float32)
    sw = np.zeros(8, dtype=np.float32)
    Ls = np.zeros(8, dtype=np.uint8)
    Lm = np.zeros(8, dtype=np.uint8)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        blk = out[i * block_bytes:(i + 1) * block_bytes]
        if importance.shape[0] == 0:
            rmin = f32(-1.0) if nmax == 15 else f32(-0.5)
            _block_ref(xb, blk, L, Laux, weights, scales, mins, nmax, rmin, 20 if nmax == 15 else 15)
        else:
            _block_impl(xb, importance[i * QK_K:(i + 1) * QK_K], blk, L, Laux, weights, scales, mins, sw,
                        Ls, Lm, nmax, nmax == 31)
        if nmax == 15:
            _pack_q4(L, blk[_Q4_QS:_Q4_QS + 128])
        else:
            _pack_q5(L, blk[_Q5_QH:_Q5_QH + 32], blk[_Q5_QS:_Q5_QS + 128])


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q4_k(x, importance, out):
    for r in prange(x.shape[0]):
        _quantize_row(x[r], importance, out[r], 15, Q4_K_BYTES)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q5_k(x, importance, out):
    for r in prange(x.shape[0]):
        _quantize_row(x[r], importance, out[r], 31, Q5_K_BYTES)


@njit(cache=True, error_model="numpy")
def _dequantize_block(blk, y, has_high):
    d = get_fp16(blk, _D)
    dmin = get_fp16(blk, _DMIN)
    scales = blk[_SCALES:_SCALES + 12]
    qs_at = _Q5_QS if has_high else _Q4_QS
    for e in range(QK_K):
        sc, m = get_scale_min_k4(e // 32, scales)
        dl = f32(d * f32(sc))
        ml = f32(dmin * f32(m))
        k = e % 32
        q = (blk[qs_at + (e // 64) * 32 + k] >> (4 * ((e // 32) % 2))) & 0xF
        if has_high and (blk[_Q5_QH + k] >> (e // 32)) & 1:
            q += 16
        y[e] = f32(f32(dl * f32(q)) - ml)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q4_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            _dequantize_block(blocks[r, i * Q4_K_BYTES:(i + 1) * Q4_K_BYTES], out[r, i * QK_K:(i + 1) * QK_K], False)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q5_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            _dequantize_block(blocks[r, i * Q5_K_BYTES:(i + 1) * Q5_K_BYTES], out[r, i * QK_K:(i + 1) * QK_K], True)
