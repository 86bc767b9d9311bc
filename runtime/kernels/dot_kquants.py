"""Integer dot-product kernels for the k-quant weights (Q2_K..Q6_K) against Q8_K activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   prefill

Per super-block the integer part (ggml's aux32[8] lanes, or Q2_K's isum) comes from vecir's vector IR;
the float part follows ggml-cpu/quants.c's ggml_vec_dot_<t>_q8_K_generic literally: 8 float lane sums
`sums[l] += d * aux32[l]`, the mins term subtracted per block, lanes added to sumf at the end. So each
output equals that scalar C code compiled without FP contraction, and matmat equals matvec bit for bit.
Rows are processed in chunks so the small scratch arrays (scales, lanes, float sums) are allocated once
per chunk, not per row.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels.vecir import (f16_at, f32_at, i16_at, lanes_q2_k, lanes_q3_k, lanes_q4_k,
                                       lanes_q5_k, lanes_q6_k)

F32 = np.float32
CHUNK = 16  # rows per parallel work item


@njit(inline="always", cache=True)
def _scratch():
    return np.empty(16, np.int32), np.empty(8, np.int32), np.empty(8, np.int32), np.empty(8, F32)


@njit(inline="always", cache=True)
def _scales_k4(wr, o, sc, mn):
    """Q4_K/Q5_K 6-bit scales and mins of the 8 sub-blocks (bytes o+4 .. o+15), as get_scale_min_k4."""
    q = o + 4
    for j in range(4):
        sc[j] = wr[q + j] & 63
        mn[j] = wr[q + j + 4] & 63
    for j in range(4, 8):
        sc[j] = (wr[q + j + 4] & 0xF) | ((wr[q + j - 4] >> 6) << 4)
        mn[j] = (wr[q + j + 4] >> 4) | ((wr[q + j] >> 6) << 4)


@njit(inline="always", cache=True)
def _mins_dot(xr, xo, mn):
    """sum_j bsums[j] * mins[j / 2] over the Q8_K block at xo (int)."""
    s = 0
    for j in range(16):
        s += i16_at(xr, xo + 260 + 2 * j) * mn[j // 2]
    return s


@njit(inline="always", cache=True)
def _add_lanes(sums, d, lanes):
    for l in range(8):
        sums[l] += d * F32(lanes[l])


@njit(inline="always", cache=True)
def _finish(sumf, sums):
    for l in range(8):
        sumf += sums[l]
    return sumf


@njit(inline="always", cache=True)
def _row_q2_k(wr, xr, sc, mn, lanes, sums):
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 84):
        o, xo = i * 84, i * 292
        summs = 0
        for j in range(16):
            summs += i16_at(xr, xo + 260 + 2 * j) * (wr[o + j] >> 4)
        yd = f32_at(xr, xo)
        dall = yd * f16_at(wr, o + 80)
        dmin = yd * f16_at(wr, o + 82)
        isum = lanes_q2_k(wr, o, xr, xo, sc, lanes)
        sumf += dall * F32(isum) - dmin * F32(summs)
    return sumf


@njit(inline="always", cache=True)
def _row_q3_k(wr, xr, sc, mn, lanes, sums):
    sums[:] = 0
    for i in range(wr.shape[0] // 110):
        o, xo = i * 110, i * 292
        for j in range(16):
            low = np.int32(wr[o + 96 + j] & 0xF) if j < 8 else np.int32(wr[o + 96 + j - 8] >> 4)
            high = (np.int32(wr[o + 104 + j % 4]) >> (2 * (j // 4))) & 3
            sc[j] = (low | (high << 4)) - 32
        lanes_q3_k(wr, o, xr, xo, sc, lanes)
        _add_lanes(sums, f16_at(wr, o + 108) * f32_at(xr, xo), lanes)
    return _finish(F32(0.0), sums)


@njit(inline="always", cache=True)
def _row_q4_k(wr, xr, sc, mn, lanes, sums):
    sums[:] = 0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 144):
        o, xo = i * 144, i * 292
        _scales_k4(wr, o, sc, mn)
        lanes_q4_k(wr, o, xr, xo, sc, lanes)
        yd = f32_at(xr, xo)
        _add_lanes(sums, f16_at(wr, o) * yd, lanes)
        sumf -= (f16_at(wr, o + 2) * yd) * F32(_mins_dot(xr, xo, mn))
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _row_q5_k(wr, xr, sc, mn, lanes, sums):
    sums[:] = 0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 176):
        o, xo = i * 176, i * 292
        _scales_k4(wr, o, sc, mn)
        lanes_q5_k(wr, o, xr, xo, sc, lanes)
        yd = f32_at(xr, xo)
        _add_lanes(sums, f16_at(wr, o) * yd, lanes)
        sumf -= (f16_at(wr, o + 2) * yd) * F32(_mins_dot(xr, xo, mn))
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _row_q6_k(wr, xr, sc, mn, lanes, sums):
    sums[:] = 0
    for i in range(wr.shape[0] // 210):
        o, xo = i * 210, i * 292
        lanes_q6_k(wr, o, xr, xo, sc, lanes)
        _add_lanes(sums, f16_at(wr, o + 208) * f32_at(xr, xo), lanes)
    return _finish(F32(0.0), sums)


# One matvec/matmat pair per type; written out because cached Numba closures over a row function
# would share one cache entry.
@njit(parallel=True, cache=True)
def matvec_q2_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            out[r] = _row_q2_k(w[r], xq, sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matmat_q2_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            for t in range(xq.shape[0]):
                out[t, r] = _row_q2_k(w[r], xq[t], sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matvec_q3_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            out[r] = _row_q3_k(w[r], xq, sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matmat_q3_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            for t in range(xq.shape[0]):
                out[t, r] = _row_q3_k(w[r], xq[t], sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matvec_q4_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            out[r] = _row_q4_k(w[r], xq, sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matmat_q4_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            for t in range(xq.shape[0]):
                out[t, r] = _row_q4_k(w[r], xq[t], sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matvec_q5_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            out[r] = _row_q5_k(w[r], xq, sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matmat_q5_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            for t in range(xq.shape[0]):
                out[t, r] = _row_q5_k(w[r], xq[t], sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matvec_q6_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            out[r] = _row_q6_k(w[r], xq, sc, mn, lanes, sums)


@njit(parallel=True, cache=True)
def matmat_q6_k(w, xq, out):
    for c in prange((w.shape[0] + CHUNK - 1) // CHUNK):
        sc, mn, lanes, sums = _scratch()
        for r in range(c * CHUNK, min(w.shape[0], (c + 1) * CHUNK)):
            for t in range(xq.shape[0]):
                out[t, r] = _row_q6_k(w[r], xq[t], sc, mn, lanes, sums)
