"""Integer dot-product kernels for the k-quant weights (Q2_K..Q6_K) against Q8_K activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   prefill

Each super-block is one vecir intrinsic: the integer part (ggml's aux32[8] lanes, or Q2_K's isum) in
vector IR, and the float part following ggml-cpu/quants.c's ggml_vec_dot_<t>_q8_K_generic literally: 8 float lane sums
`sums[l] += d * aux32[l]`, the mins term subtracted per block, lanes added to sumf at the end. So each
output equals that scalar C code compiled without FP contraction. matmat (prompts) unpacks groups of
vecir_tile.GROUP rows (16 or 8) once and runs them against 4 tokens at a time, one row per vector lane
(vecir_tile): exact integer sums per super-block, its own float order (within float32 rounding of
matvec's).
matvec(..., lanes=True) takes xq with each 32-quant chunk in lane order (vecir.q8_k_lane_order, done
once per matvec by the decode step where vecir.X_LANES: the x86 forms), else as quantized.
Rows are processed in chunks (matvec's `chunk`: rows per parallel work item, chosen per matrix by the
tuner, shapes.py; any value gives the same bits); the 8 float lane sums live on each chunk's stack
(vecir.lane_sums), so the kernels allocate nothing.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels import vecir_tile as vt
from ggq.runtime.kernels.shapes import UNTUNED
from ggq.runtime.kernels.vecir_tile import GROUP
from ggq.runtime.kernels.vecir import (block_q2_k, block_q2_k_lx, block_q3_k, block_q3_k_lx, block_q4_k, block_q4_k_lx,
                                      block_q5_k, block_q5_k_lx, block_q6_k, block_q6_k_lx, lane_sums, q8_k_lane_order)

F32 = np.float32
CHUNK = UNTUNED["kquant"]  # rows per parallel work item, unless the tuner chose another (shapes.py)
GROUPS_PER_ITEM = 2  # prompts: row groups per parallel work item (one scratch allocation each)


@njit(cache=True)
def lane_order_q8_k(xq, out, nsb):
    """out = the first nsb Q8_K blocks of xq with their quants in lane order (what matvec(..., lanes=True)
    takes; vecir.q8_k_lane_order), for callers outside compiled code."""
    q8_k_lane_order(xq, out, nsb)


@njit(inline="always", cache=True)
def _finish(sumf, sums):
    for l in range(8):
        sumf += sums[l]
    return sumf


@njit(inline="always", cache=True)
def _row_q2_k(wr, xr, sums, pf, lanes=None):
    for l in range(8):
        sums[l] = 0.0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 84):
        if lanes is None:
            sumf = block_q2_k(wr, i * 84, xr, i * 292, sums, sumf, pf)
        else:  # xr's quants in lane order (vecir.q8_k_lane_order); Numba compiles one branch per call form
            sumf = block_q2_k_lx(wr, i * 84, xr, i * 292, sums, sumf, pf)
    return sumf


@njit(inline="always", cache=True)
def _row_q3_k(wr, xr, sums, pf, lanes=None):
    for l in range(8):
        sums[l] = 0.0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 110):
        if lanes is None:
            sumf = block_q3_k(wr, i * 110, xr, i * 292, sums, sumf, pf)
        else:  # xr's quants in lane order (vecir.q8_k_lane_order); Numba compiles one branch per call form
            sumf = block_q3_k_lx(wr, i * 110, xr, i * 292, sums, sumf, pf)
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _row_q4_k(wr, xr, sums, pf, lanes=None):
    for l in range(8):
        sums[l] = 0.0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 144):
        if lanes is None:
            sumf = block_q4_k(wr, i * 144, xr, i * 292, sums, sumf, pf)
        else:  # xr's quants in lane order (vecir.q8_k_lane_order); Numba compiles one branch per call form
            sumf = block_q4_k_lx(wr, i * 144, xr, i * 292, sums, sumf, pf)
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _row_q5_k(wr, xr, sums, pf, lanes=None):
    for l in range(8):
        sums[l] = 0.0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 176):
        if lanes is None:
            sumf = block_q5_k(wr, i * 176, xr, i * 292, sums, sumf, pf)
        else:  # xr's quants in lane order (vecir.q8_k_lane_order); Numba compiles one branch per call form
            sumf = block_q5_k_lx(wr, i * 176, xr, i * 292, sums, sumf, pf)
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _row_q6_k(wr, xr, sums, pf, lanes=None):
    for l in range(8):
        sums[l] = 0.0
    sumf = F32(0.0)
    for i in range(wr.shape[0] // 210):
        if lanes is None:
            sumf = block_q6_k(wr, i * 210, xr, i * 292, sums, sumf, pf)
        else:  # xr's quants in lane order (vecir.q8_k_lane_order); Numba compiles one branch per call form
            sumf = block_q6_k_lx(wr, i * 210, xr, i * 292, sums, sumf, pf)
    return _finish(sumf, sums)


@njit(inline="always", cache=True)
def _scratch(nsb, n_sub):
    """A work item's unpacked row group (vecir_tile.kquant_unpack): values, scales, mins, d, -dmin."""
    return (np.empty(nsb * vt.SB, np.uint8), np.empty(nsb * n_sub * GROUP, np.int32), np.empty(nsb * 8 * GROUP, np.int32),
            np.empty(nsb * GROUP, np.float32), np.empty(nsb * GROUP, np.float32))


# One matvec/matmat pair per type; written out because cached Numba closures over a row function
# would share one cache entry.
@njit(parallel=True, cache=True)
def matvec_q2_k(w, xq, out, chunk=CHUNK, pf=0, lanes=None):
    chunk = max(chunk, 1)
    for c in prange((w.shape[0] + chunk - 1) // chunk):
        sums = lane_sums()
        for r in range(c * chunk, min(w.shape[0], (c + 1) * chunk)):
            out[r] = _row_q2_k(w[r], xq, sums, pf, lanes)


@njit(parallel=True, cache=True)
def matmat_q2_k(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nsb, xflat, oflat = rb // 84, xq.reshape(-1), out.reshape(-1)
    groups = n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, sc, mn, d, dm = _scratch(nsb, 16)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q2_k(flat, r0, rb, nsb, u, sc, mn, d, dm)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q2_k(u, sc, mn, d, dm, nsb, xflat, t, n_tok, xrb, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        sums = lane_sums()
        for t in range(n_tok):
            out[t, r] = _row_q2_k(w[r], xq[t], sums, 0)


@njit(parallel=True, cache=True)
def matvec_q3_k(w, xq, out, chunk=CHUNK, pf=0, lanes=None):
    chunk = max(chunk, 1)
    for c in prange((w.shape[0] + chunk - 1) // chunk):
        sums = lane_sums()
        for r in range(c * chunk, min(w.shape[0], (c + 1) * chunk)):
            out[r] = _row_q3_k(w[r], xq, sums, pf, lanes)


@njit(parallel=True, cache=True)
def matmat_q3_k(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nsb, xflat, oflat = rb // 110, xq.reshape(-1), out.reshape(-1)
    groups = n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, sc, mn, d, dm = _scratch(nsb, 16)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q3_k(flat, r0, rb, nsb, u, sc, mn, d, dm)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q3_k(u, sc, mn, d, dm, nsb, xflat, t, n_tok, xrb, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        sums = lane_sums()
        for t in range(n_tok):
            out[t, r] = _row_q3_k(w[r], xq[t], sums, 0)


@njit(parallel=True, cache=True)
def matvec_q4_k(w, xq, out, chunk=CHUNK, pf=0, lanes=None):
    chunk = max(chunk, 1)
    for c in prange((w.shape[0] + chunk - 1) // chunk):
        sums = lane_sums()
        for r in range(c * chunk, min(w.shape[0], (c + 1) * chunk)):
            out[r] = _row_q4_k(w[r], xq, sums, pf, lanes)


@njit(parallel=True, cache=True)
def matmat_q4_k(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nsb, xflat, oflat = rb // 144, xq.reshape(-1), out.reshape(-1)
    groups = n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, sc, mn, d, dm = _scratch(nsb, 8)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q4_k(flat, r0, rb, nsb, u, sc, mn, d, dm)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q4_k(u, sc, mn, d, dm, nsb, xflat, t, n_tok, xrb, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        sums = lane_sums()
        for t in range(n_tok):
            out[t, r] = _row_q4_k(w[r], xq[t], sums, 0)


@njit(parallel=True, cache=True)
def matvec_q5_k(w, xq, out, chunk=CHUNK, pf=0, lanes=None):
    chunk = max(chunk, 1)
    for c in prange((w.shape[0] + chunk - 1) // chunk):
        sums = lane_sums()
        for r in range(c * chunk, min(w.shape[0], (c + 1) * chunk)):
            out[r] = _row_q5_k(w[r], xq, sums, pf, lanes)


@njit(parallel=True, cache=True)
def matmat_q5_k(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nsb, xflat, oflat = rb // 176, xq.reshape(-1), out.reshape(-1)
    groups = n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, sc, mn, d, dm = _scratch(nsb, 8)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q5_k(flat, r0, rb, nsb, u, sc, mn, d, dm)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q5_k(u, sc, mn, d, dm, nsb, xflat, t, n_tok, xrb, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        sums = lane_sums()
        for t in range(n_tok):
            out[t, r] = _row_q5_k(w[r], xq[t], sums, 0)


@njit(parallel=True, cache=True)
def matvec_q6_k(w, xq, out, chunk=CHUNK, pf=0, lanes=None):
    chunk = max(chunk, 1)
    for c in prange((w.shape[0] + chunk - 1) // chunk):
        sums = lane_sums()
        for r in range(c * chunk, min(w.shape[0], (c + 1) * chunk)):
            out[r] = _row_q6_k(w[r], xq, sums, pf, lanes)


@njit(parallel=True, cache=True)
def matmat_q6_k(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nsb, xflat, oflat = rb // 210, xq.reshape(-1), out.reshape(-1)
    groups = n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, sc, mn, d, dm = _scratch(nsb, 16)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q6_k(flat, r0, rb, nsb, u, sc, mn, d, dm)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q6_k(u, sc, mn, d, dm, nsb, xflat, t, n_tok, xrb, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        sums = lane_sums()
        for t in range(n_tok):
            out[t, r] = _row_q6_k(w[r], xq[t], sums, 0)