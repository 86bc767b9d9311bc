"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   many tokens

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Each row is one vecir intrinsic that follows ggml-cpu's x86 ggml_vec_dot_<t>_q8_<k> (the
AVX2/AVX-512 build llama.cpp runs here): exact integer sums in 8 lanes per block, scaled and
fused-multiply-added into 8 float accumulators, one horizontal sum per row. On ARM the same kernels
run (NEON sdot where the CPU has dotprod, vecir_isa), with the same results. matvec takes a shape: `step` rows go together (shared activation loads,
independent chains; one of shapes.LEGACY_ROW_STEPS, chosen per matrix by the tuner), the rest one by
one; every row's arithmetic is the same either way, so every step, and matmat (one row at a time per
token), give the same bits.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

from numba import njit, prange

from ggq.runtime.kernels import vecir as v
from ggq.runtime.kernels.shapes import UNTUNED

STEP = UNTUNED["legacy"]

# Per type: _rows_<t> (one step of `step` rows from r0, through the compiled form of that width) and
# the matvec/matmat pair, written out: cached Numba closures over a row function would share one cache
# entry. The width branch is the same for every step of a call, so it predicts perfectly.


@njit(inline="always", cache=True)
def _rows_q4_0(step, flat, r0, rb, xq, nb, out):
    if step == 32:
        v.rows32_q4_0(flat, r0, rb, xq, nb, out)
    elif step == 4:
        v.rows4_q4_0(flat, r0, rb, xq, nb, out)
    else:
        v.row1_q4_0(flat, r0, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matvec_q4_0(w, xq, out, step=STEP):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step == 4 or step == 32 else 1
    nb, groups = rb // 18, w.shape[0] // step
    for g in prange(groups):
        _rows_q4_0(step, flat, step * g, rb, xq, nb, out)
    for r in range(step * groups, w.shape[0]):
        v.row1_q4_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q4_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 18
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            v.row1_q4_0(flat, r, rb, xt, nb, ot)


@njit(inline="always", cache=True)
def _rows_q4_1(step, flat, r0, rb, xq, nb, out):
    if step == 32:
        v.rows32_q4_1(flat, r0, rb, xq, nb, out)
    elif step == 4:
        v.rows4_q4_1(flat, r0, rb, xq, nb, out)
    else:
        v.row1_q4_1(flat, r0, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matvec_q4_1(w, xq, out, step=STEP):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step == 4 or step == 32 else 1
    nb, groups = rb // 20, w.shape[0] // step
    for g in prange(groups):
        _rows_q4_1(step, flat, step * g, rb, xq, nb, out)
    for r in range(step * groups, w.shape[0]):
        v.row1_q4_1(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q4_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 20
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            v.row1_q4_1(flat, r, rb, xt, nb, ot)


@njit(inline="always", cache=True)
def _rows_q5_0(step, flat, r0, rb, xq, nb, out):
    if step == 32:
        v.rows32_q5_0(flat, r0, rb, xq, nb, out)
    elif step == 4:
        v.rows4_q5_0(flat, r0, rb, xq, nb, out)
    else:
        v.row1_q5_0(flat, r0, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matvec_q5_0(w, xq, out, step=STEP):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step == 4 or step == 32 else 1
    nb, groups = rb // 22, w.shape[0] // step
    for g in prange(groups):
        _rows_q5_0(step, flat, step * g, rb, xq, nb, out)
    for r in range(step * groups, w.shape[0]):
        v.row1_q5_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q5_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 22
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            v.row1_q5_0(flat, r, rb, xt, nb, ot)


@njit(inline="always", cache=True)
def _rows_q5_1(step, flat, r0, rb, xq, nb, out):
    if step == 32:
        v.rows32_q5_1(flat, r0, rb, xq, nb, out)
    elif step == 4:
        v.rows4_q5_1(flat, r0, rb, xq, nb, out)
    else:
        v.row1_q5_1(flat, r0, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matvec_q5_1(w, xq, out, step=STEP):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step == 4 or step == 32 else 1
    nb, groups = rb // 24, w.shape[0] // step
    for g in prange(groups):
        _rows_q5_1(step, flat, step * g, rb, xq, nb, out)
    for r in range(step * groups, w.shape[0]):
        v.row1_q5_1(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q5_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 24
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            v.row1_q5_1(flat, r, rb, xt, nb, ot)


@njit(inline="always", cache=True)
def _rows_q8_0(step, flat, r0, rb, xq, nb, out):
    if step == 32:
        v.rows32_q8_0(flat, r0, rb, xq, nb, out)
    elif step == 4:
        v.rows4_q8_0(flat, r0, rb, xq, nb, out)
    else:
        v.row1_q8_0(flat, r0, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matvec_q8_0(w, xq, out, step=STEP):
    flat, rb = w.reshape(-1), w.shape[1]
    step = step if step == 4 or step == 32 else 1
    nb, groups = rb // 34, w.shape[0] // step
    for g in prange(groups):
        _rows_q8_0(step, flat, step * g, rb, xq, nb, out)
    for r in range(step * groups, w.shape[0]):
        v.row1_q8_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q8_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 34
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            v.row1_q8_0(flat, r, rb, xt, nb, ot)
