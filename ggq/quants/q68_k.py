"""Q6_K and Q8_K.

Q6_K: 256 values as 16 groups of 16, signed 6-bit levels (-32..31) with a signed 8-bit scale per group.
Block (210 bytes): ql[128] (bits 0-3), qh[64] (bits 4-5), scales[16] int8, d fp16.
Mirrors ggml's quantize_row_q6_K_ref (no importance) and quantize_row_q6_K_impl (importance).

Q8_K: the runtime's activation format. Block (292 bytes): d float32, qs[256] int8, bsums[16] int16
(sums of each group of 16 levels). Mirrors quantize_row_q8_K_ref; it has no importance search.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.floats import f32_as_u32, u32_as_f32
from ggq.quants.ksearch import GROUP_MAX_EPS, clamp, f32, get_fp16, make_qx_quants, nearest_int, put_fp16

QK_K = 256
Q6_K_BYTES = 210
Q8_K_BYTES = 292
_QL, _QH, _SCALES, _D = 0, 128, 192, 208


@njit(inline="always", cache=True)
def _pack_q6(L, blk):
    for j in range(0, QK_K, 128):
        ql = _QL + j // 2
        qh = _QH + j // 4
        for l in range(32):
            q1 = np.int64(L[j + l]) & 0xF
            q2 = np.int64(L[j + l + 32]) & 0xF
            q3 = np.int64(L[j + l + 64]) & 0xF
            q4 = np.int64(L[j + l + 96]) & 0xF
            blk[ql + l] = q1 | (q3 << 4)
            blk[ql + l + 32] = q2 | (q4 << 4)
            blk[qh + l] = ((np.int64(L[j + l]) >> 4) | ((np.int64(L[j + l + 32]) >> 4) << 2)
                           | ((np.int64(L[j + l + 64]) >> 4) << 4) | ((np.int64(L[j + l + 96]) >> 4) << 6)) & 0xFF


@njit(cache=True, error_model="numpy")
def _q6_k_block(x, qw, blk, L, scales):
    """One block; qw empty = ggml's ref path (x^2 weights), else the importance weights directly."""
    max_scale = f32(0.0)
    max_abs_scale = f32(0.0)
    for ib in range(QK_K // 16):
        scale = make_qx_quants(16, 32, x[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], 1,
                               qw[16 * ib:16 * ib + 16])
        scales[ib] = scale
        abs_scale = f32(abs(scale))
        if abs_scale > max_abs_scale:
            max_abs_scale = abs_scale
            max_scale = scale
    if max_abs_scale < GROUP_MAX_EPS:
        blk[:] = 0
        return
    iscale = f32(f32(-128.0) / max_scale)
    put_fp16(blk, _D, f32(f32(1.0) / iscale))
    for ib in range(QK_K // 16):
        blk[_SCALES + ib] = min(127, nearest_int(f32(iscale * scales[ib]))) & 0xFF
    d_all = get_fp16(blk, _D)
    for j in range(QK_K // 16):
        d = f32(d_all * f32(np.int8(blk[_SCALES + j])))
        if d == f32(0.0):
            continue
        for ii in range(16):
            L[16 * j + ii] = clamp(nearest_int(f32(x[16 * j + ii] / d)), -32, 31) + 32
    _pack_q6(L, blk)


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q6_k(x, importance, out):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        L = np.zeros(QK_K, dtype=np.int8)
        scales = np.zeros(16, dtype=np.float32)
        for i in range(nb):
            qw = importance if importance.shape[0] == 0 else importance[i * QK_K:(i + 1) * QK_K]
            _q6_k_block(x[r, i * QK_K:(i + 1) * QK_K], qw, out[r, i * Q6_K_BYTES:(i + 1) * Q6_K_BYTES], L, scales)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q6_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            blk = blocks[r, i * Q6_K_BYTES:(i + 1) * Q6_K_BYTES]
            y = out[r, i * QK_K:(i + 1) * QK_K]
            d = get_fp16(blk, _D)
            for e in range(QK_K):
                half, k = e // 128, e % 128  # k: position within the 128-value half
                low = (np.int64(blk[_QL + half * 64 + k % 64]) >> (4 * (k // 64))) & 0xF
                high = (np.int64(blk[_QH + half * 32 + k % 32]) >> (2 * (k // 32))) & 3
                q = (low | (high << 4)) - 32
                y[e] = f32(f32(d * f32(np.int8(blk[_SCALES + e // 16]))) * f32(q))


@njit(parallel=True, cache=True, error_model="numpy")
def quantize_q8_k(x, importance, out):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        for i in range(nb):
            xb = x[r, i * QK_K:(i + 1) * QK_K]
            blk = out[r, i * Q8_K_BYTES:(i + 1) * Q8_K_BYTES]
            qs = blk[4:4 + QK_K].view(np.int8)
            fmax = f32(0.0)
            amax = f32(0.0)
            for j in range(QK_K):
                ax = f32(abs(xb[j]))
                if ax > amax:
                    amax = ax
                    fmax = xb[j]
            # ggml leaves bsums untouched for an all-zero block; zeroing them keeps the bytes defined
            blk[:] = 0
            if amax == f32(0.0):
                continue
            iscale = f32(f32(-127.0) / fmax)
            for j in range(QK_K):
                qs[j] = min(127, nearest_int(f32(iscale * xb[j])))
            for j in range(QK_K // 16):
                total = 0
                for ii in range(16):
                    total += np.int64(qs[16 * j + ii])
                blk[4 + QK_K + 2 * j] = total & 0xFF
                blk[4 + QK_K + 2 * j + 1] = (total >> 8) & 0xFF
            bits = f32_as_u32(f32(f32(1.0) / iscale))
            for b in range(4):
                blk[b] = (bits >> np.uint32(8 * b)) & np.uint32(0xFF)


@njit(parallel=True, cache=True, error_model="numpy")
def dequantize_q8_k(blocks, out):
    nb = out.shape[1] // QK_K
    for r in prange(blocks.shape[0]):
        for i in range(nb):
            blk = blocks[r, i * Q8_K_BYTES:(i + 1) * Q8_K_BYTES]
            bits = (np.uint32(blk[0]) | (np.uint32(blk[1]) << np.uint32(8)) | (np.uint32(blk[2]) << np.uint32(16))
                    | (np.uint32(blk[3]) << np.uint32(24)))
            d = u32_as_f32(bits)
            for j in range(QK_K):
                out[r, i * QK_K + j] = f32(d * f32(np.int8(blk[4 + j])))
