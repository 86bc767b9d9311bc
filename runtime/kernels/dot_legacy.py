"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   prompts

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Each row is one vecir intrinsic that follows ggml-cpu's x86 ggml_vec_dot_<t>_q8_<k> (the
AVX2/AVX-512 build llama.cpp runs here): exact integer sums in 8 lanes per block, scaled and
fused-multiply-added into 8 float accumulators, one horizontal sum per row. On ARM the same kernels
run (NEON sdot where the CPU has dotprod, vecir_isa), with the same results. matvec takes a shape: `step` rows go together (shared activation loads,
independent chains; one of shapes.LEGACY_ROW_STEPS, chosen per matrix by the tuner), the rest one by
one; every row's arithmetic is the same either way, so every step gives the same bits. matmat
unpacks groups of vecir_tile.GROUP rows (16 or 8) once and runs them against 4 tokens at a time, one row per vector lane
(vecir_tile): exact integer dots, float order per row and token its own (not matvec's, within a few
ulps of it). Arrays must be C-contiguous.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels import vecir as v
from ggq.runtime.kernels import vecir_pairs as vp
from ggq.runtime.kernels import vecir_tile as vt
from ggq.runtime.kernels.vecir_tile import GROUP, UNSIGNED
from ggq.runtime.kernels.shapes import LEGACY_PAIRED_STEPS, LEGACY_ROW_STEPS, UNTUNED

STEP = UNTUNED["legacy"]
GROUPS_PER_ITEM = 4  # row groups per parallel work item (32 rows: one scratch allocation each)


# ---- prompts: groups of GROUP rows, unpacked once, against every token (vecir_tile) ---------------------
@njit(inline="always", cache=True)
def _activation_sums(xq, nb, block_bytes, qs_at):
    """i32 [tokens * nb]: the sum of each activation block's int8 values (the VNNI form's offset term;
    unused, and left empty, by the signed forms)."""
    n_tok = xq.shape[0] if UNSIGNED else 0
    sx = np.empty(n_tok * nb, np.int32)
    signed = xq.view(np.int8)
    for t in range(n_tok):
        for b in range(nb):
            total = 0
            for k in range(32):
                total += signed[t, b * block_bytes + qs_at + k]
            sx[t * nb + b] = total
    return sx


@njit(inline="always", cache=True)
def _scratch(nb):
    """A work item's unpacked row group: values, block scales, block mins."""
    return np.empty(nb * vt.BLOCK, np.uint8), np.empty(nb * GROUP, np.float32), np.empty(nb * GROUP, np.float32)


# Per type: _rows_<t> (one step of `step` rows from r0, through the compiled form of that width) and
# the matvec/matmat pair, written out: cached Numba closures over a row function would share one cache
# entry. The width branch is the same for every step of a call, so it predicts perfectly.


@njit(inline="always", cache=True)
def _rows_q4_0(step, flat, r0, rb, xq, nb, out, pf):
    if step == 32:
        v.rows32_q4_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 4:
        v.rows4_q4_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 8:
        vp.pairs8_q4_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 2:
        vp.pairs2_q4_0(flat, r0, rb, xq, nb, out, pf)
    else:
        v.row1_q4_0(flat, r0, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matvec_q4_0(w, xq, out, step=STEP, pf=0):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step in LEGACY_ROW_STEPS or step in LEGACY_PAIRED_STEPS else 1
    nb, groups = rb // 18, w.shape[0] // step
    for g in prange(groups):
        _rows_q4_0(step, flat, step * g, rb, xq, nb, out, pf)
    for r in range(step * groups, w.shape[0]):
        v.row1_q4_0(flat, r, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matmat_q4_0(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nb, xflat, oflat = rb // 18, xq.reshape(-1), out.reshape(-1)
    sx, groups = _activation_sums(xq, nb, 34, 2), n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, d, m = _scratch(nb)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q4_0(flat, r0, rb, nb, u, d, m)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q4_0(u, d, m, nb, xflat, t, n_tok, xrb, sx, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        for t in range(n_tok):
            v.row1_q4_0(flat, r, rb, xq[t], nb, out[t], 0)


@njit(inline="always", cache=True)
def _rows_q4_1(step, flat, r0, rb, xq, nb, out, pf):
    if step == 32:
        v.rows32_q4_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 4:
        v.rows4_q4_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 8:
        vp.pairs8_q4_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 2:
        vp.pairs2_q4_1(flat, r0, rb, xq, nb, out, pf)
    else:
        v.row1_q4_1(flat, r0, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matvec_q4_1(w, xq, out, step=STEP, pf=0):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step in LEGACY_ROW_STEPS or step in LEGACY_PAIRED_STEPS else 1
    nb, groups = rb // 20, w.shape[0] // step
    for g in prange(groups):
        _rows_q4_1(step, flat, step * g, rb, xq, nb, out, pf)
    for r in range(step * groups, w.shape[0]):
        v.row1_q4_1(flat, r, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matmat_q4_1(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nb, xflat, oflat = rb // 20, xq.reshape(-1), out.reshape(-1)
    sx, groups = _activation_sums(xq, nb, 36, 4), n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, d, m = _scratch(nb)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q4_1(flat, r0, rb, nb, u, d, m)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q4_1(u, d, m, nb, xflat, t, n_tok, xrb, sx, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        for t in range(n_tok):
            v.row1_q4_1(flat, r, rb, xq[t], nb, out[t], 0)


@njit(inline="always", cache=True)
def _rows_q5_0(step, flat, r0, rb, xq, nb, out, pf):
    if step == 32:
        v.rows32_q5_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 4:
        v.rows4_q5_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 8:
        vp.pairs8_q5_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 2:
        vp.pairs2_q5_0(flat, r0, rb, xq, nb, out, pf)
    else:
        v.row1_q5_0(flat, r0, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matvec_q5_0(w, xq, out, step=STEP, pf=0):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step in LEGACY_ROW_STEPS or step in LEGACY_PAIRED_STEPS else 1
    nb, groups = rb // 22, w.shape[0] // step
    for g in prange(groups):
        _rows_q5_0(step, flat, step * g, rb, xq, nb, out, pf)
    for r in range(step * groups, w.shape[0]):
        v.row1_q5_0(flat, r, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matmat_q5_0(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nb, xflat, oflat = rb // 22, xq.reshape(-1), out.reshape(-1)
    sx, groups = _activation_sums(xq, nb, 34, 2), n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, d, m = _scratch(nb)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q5_0(flat, r0, rb, nb, u, d, m)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q5_0(u, d, m, nb, xflat, t, n_tok, xrb, sx, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        for t in range(n_tok):
            v.row1_q5_0(flat, r, rb, xq[t], nb, out[t], 0)


@njit(inline="always", cache=True)
def _rows_q5_1(step, flat, r0, rb, xq, nb, out, pf):
    if step == 32:
        v.rows32_q5_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 4:
        v.rows4_q5_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 8:
        vp.pairs8_q5_1(flat, r0, rb, xq, nb, out, pf)
    elif step == 2:
        vp.pairs2_q5_1(flat, r0, rb, xq, nb, out, pf)
    else:
        v.row1_q5_1(flat, r0, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matvec_q5_1(w, xq, out, step=STEP, pf=0):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step in LEGACY_ROW_STEPS or step in LEGACY_PAIRED_STEPS else 1
    nb, groups = rb // 24, w.shape[0] // step
    for g in prange(groups):
        _rows_q5_1(step, flat, step * g, rb, xq, nb, out, pf)
    for r in range(step * groups, w.shape[0]):
        v.row1_q5_1(flat, r, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matmat_q5_1(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nb, xflat, oflat = rb // 24, xq.reshape(-1), out.reshape(-1)
    sx, groups = _activation_sums(xq, nb, 36, 4), n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, d, m = _scratch(nb)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q5_1(flat, r0, rb, nb, u, d, m)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q5_1(u, d, m, nb, xflat, t, n_tok, xrb, sx, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        for t in range(n_tok):
            v.row1_q5_1(flat, r, rb, xq[t], nb, out[t], 0)


@njit(inline="always", cache=True)
def _rows_q8_0(step, flat, r0, rb, xq, nb, out, pf):
    if step == 32:
        v.rows32_q8_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 4:
        v.rows4_q8_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 8:
        vp.pairs8_q8_0(flat, r0, rb, xq, nb, out, pf)
    elif step == 2:
        vp.pairs2_q8_0(flat, r0, rb, xq, nb, out, pf)
    else:
        v.row1_q8_0(flat, r0, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matvec_q8_0(w, xq, out, step=STEP, pf=0):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step in LEGACY_ROW_STEPS or step in LEGACY_PAIRED_STEPS else 1
    nb, groups = rb // 34, w.shape[0] // step
    for g in prange(groups):
        _rows_q8_0(step, flat, step * g, rb, xq, nb, out, pf)
    for r in range(step * groups, w.shape[0]):
        v.row1_q8_0(flat, r, rb, xq, nb, out, pf)


@njit(parallel=True, cache=True)
def matmat_q8_0(w, xq, out):
    flat, rb, n_rows, n_tok, xrb = w.reshape(-1), w.shape[1], w.shape[0], xq.shape[0], xq.shape[1]
    nb, xflat, oflat = rb // 34, xq.reshape(-1), out.reshape(-1)
    sx, groups = _activation_sums(xq, nb, 34, 2), n_rows // GROUP
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        u, d, m = _scratch(nb)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            r0 = GROUP * g
            vt.unpack8_q8_0(flat, r0, rb, nb, u, d, m)
            for t in range(0, n_tok, vt.TILE_TOKENS):
                vt.gemm8x4_q8_0(u, d, m, nb, xflat, t, n_tok, xrb, sx, oflat, n_rows, r0)
    for r in range(GROUP * groups, n_rows):
        for t in range(n_tok):
            v.row1_q8_0(flat, r, rb, xq[t], nb, out[t], 0)