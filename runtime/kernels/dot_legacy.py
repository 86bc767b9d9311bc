"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   many tokens

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Each row is one vecir intrinsic that follows ggml-cpu's x86 ggml_vec_dot_<t>_q8_<k> (the
AVX2/AVX-512 build llama.cpp runs here): exact integer sums in 8 lanes per block, scaled and
fused-multiply-added into 8 float accumulators, one horizontal sum per row. On ARM the same kernels
run (NEON sdot where the CPU has dotprod, vecir_isa), with the same results. vecir.ROWS_PER_STEP rows go together (shared activation loads,
independent chains), the rest one by one; every row's arithmetic is the same either way, so matmat
(one row at a time per token) equals matvec bit for bit.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

from numba import njit, prange

from ggq.runtime.kernels.vecir import ROWS_PER_STEP as STEP
from ggq.runtime.kernels.vecir import (row1_q4_0, row1_q4_1, row1_q5_0, row1_q5_1, row1_q8_0, rows_q4_0, rows_q4_1,
                                       rows_q5_0, rows_q5_1, rows_q8_0)

# One matvec/matmat pair per type, written out: cached Numba closures over a row function would share
# one cache entry.
@njit(parallel=True, cache=True)
def matvec_q4_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb, groups = rb // 18, w.shape[0] // STEP
    for g in prange(groups):
        rows_q4_0(flat, STEP * g, rb, xq, nb, out)
    for r in range(STEP * groups, w.shape[0]):
        row1_q4_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q4_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 18
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            row1_q4_0(flat, r, rb, xt, nb, ot)


@njit(parallel=True, cache=True)
def matvec_q4_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb, groups = rb // 20, w.shape[0] // STEP
    for g in prange(groups):
        rows_q4_1(flat, STEP * g, rb, xq, nb, out)
    for r in range(STEP * groups, w.shape[0]):
        row1_q4_1(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q4_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 20
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            row1_q4_1(flat, r, rb, xt, nb, ot)


@njit(parallel=True, cache=True)
def matvec_q5_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb, groups = rb // 22, w.shape[0] // STEP
    for g in prange(groups):
        rows_q5_0(flat, STEP * g, rb, xq, nb, out)
    for r in range(STEP * groups, w.shape[0]):
        row1_q5_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q5_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 22
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            row1_q5_0(flat, r, rb, xt, nb, ot)


@njit(parallel=True, cache=True)
def matvec_q5_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb, groups = rb // 24, w.shape[0] // STEP
    for g in prange(groups):
        rows_q5_1(flat, STEP * g, rb, xq, nb, out)
    for r in range(STEP * groups, w.shape[0]):
        row1_q5_1(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q5_1(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 24
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            row1_q5_1(flat, r, rb, xt, nb, ot)


@njit(parallel=True, cache=True)
def matvec_q8_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb, groups = rb // 34, w.shape[0] // STEP
    for g in prange(groups):
        rows_q8_0(flat, STEP * g, rb, xq, nb, out)
    for r in range(STEP * groups, w.shape[0]):
        row1_q8_0(flat, r, rb, xq, nb, out)


@njit(parallel=True, cache=True)
def matmat_q8_0(w, xq, out):
    flat, rb = w.reshape(-1), w.shape[1]
    nb = rb // 34
    for t in range(xq.shape[0]):
        xt, ot = xq[t], out[t]
        for r in prange(w.shape[0]):
            row1_q8_0(flat, r, rb, xt, nb, ot)
