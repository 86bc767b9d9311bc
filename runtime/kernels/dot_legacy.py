"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   prefill

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Each block's integer sum comes from vecir's vector IR (exact), and the float combination
follows ggml-cpu/quants.c's generic ggml_vec_dot_<t>_q8_<k>_generic literally, per block and in the same
order, so every output equals that scalar C code compiled without FP contraction. matmat runs the same
row function per token, so it equals matvec bit for bit; the row's weights stay in L1 across tokens.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels.vecir import (dot_q4_0_block, dot_q4_1_block, dot_q5_0_block, dot_q5_1_block,
                                       dot_q8_0_block, f16_at)

F32 = np.float32


@njit(inline="always", cache=True)
def _row_q4_0(wr, xr):
    acc = F32(0.0)
    for b in range(wr.shape[0] // 18):
        sumi = dot_q4_0_block(wr, b * 18 + 2, xr, b * 34 + 2)
        acc += F32(sumi) * f16_at(wr, b * 18) * f16_at(xr, b * 34)
    return acc


@njit(inline="always", cache=True)
def _row_q4_1(wr, xr):
    acc = F32(0.0)
    for b in range(wr.shape[0] // 20):
        sumi = dot_q4_1_block(wr, b * 20 + 4, xr, b * 36 + 4)
        acc += (f16_at(wr, b * 20) * f16_at(xr, b * 36)) * F32(sumi) + f16_at(wr, b * 20 + 2) * f16_at(xr, b * 36 + 2)
    return acc


@njit(inline="always", cache=True)
def _row_q5_0(wr, xr):
    acc = F32(0.0)
    for b in range(wr.shape[0] // 22):
        sumi = dot_q5_0_block(wr, b * 22 + 2, xr, b * 34 + 2)
        acc += (f16_at(wr, b * 22) * f16_at(xr, b * 34)) * F32(sumi)
    return acc


@njit(inline="always", cache=True)
def _row_q5_1(wr, xr):
    acc = F32(0.0)
    for b in range(wr.shape[0] // 24):
        sumi = dot_q5_1_block(wr, b * 24 + 4, xr, b * 36 + 4)
        acc += (f16_at(wr, b * 24) * f16_at(xr, b * 36)) * F32(sumi) + f16_at(wr, b * 24 + 2) * f16_at(xr, b * 36 + 2)
    return acc


@njit(inline="always", cache=True)
def _row_q8_0(wr, xr):
    acc = F32(0.0)
    for b in range(wr.shape[0] // 34):
        sumi = dot_q8_0_block(wr, b * 34 + 2, xr, b * 34 + 2)
        acc += F32(sumi) * (f16_at(wr, b * 34) * f16_at(xr, b * 34))
    return acc


# One matvec/matmat pair per type; written out because cached Numba closures over a row function
# would share one cache entry.
@njit(parallel=True, cache=True)
def matvec_q4_0(w, xq, out):
    for r in prange(w.shape[0]):
        out[r] = _row_q4_0(w[r], xq)


@njit(parallel=True, cache=True)
def matmat_q4_0(w, xq, out):
    for r in prange(w.shape[0]):
        for t in range(xq.shape[0]):
            out[t, r] = _row_q4_0(w[r], xq[t])


@njit(parallel=True, cache=True)
def matvec_q4_1(w, xq, out):
    for r in prange(w.shape[0]):
        out[r] = _row_q4_1(w[r], xq)


@njit(parallel=True, cache=True)
def matmat_q4_1(w, xq, out):
    for r in prange(w.shape[0]):
        for t in range(xq.shape[0]):
            out[t, r] = _row_q4_1(w[r], xq[t])


@njit(parallel=True, cache=True)
def matvec_q5_0(w, xq, out):
    for r in prange(w.shape[0]):
        out[r] = _row_q5_0(w[r], xq)


@njit(parallel=True, cache=True)
def matmat_q5_0(w, xq, out):
    for r in prange(w.shape[0]):
        for t in range(xq.shape[0]):
            out[t, r] = _row_q5_0(w[r], xq[t])


@njit(parallel=True, cache=True)
def matvec_q5_1(w, xq, out):
    for r in prange(w.shape[0]):
        out[r] = _row_q5_1(w[r], xq)


@njit(parallel=True, cache=True)
def matmat_q5_1(w, xq, out):
    for r in prange(w.shape[0]):
        for t in range(xq.shape[0]):
            out[t, r] = _row_q5_1(w[r], xq[t])


@njit(parallel=True, cache=True)
def matvec_q8_0(w, xq, out):
    for r in prange(w.shape[0]):
        out[r] = _row_q8_0(w[r], xq)


@njit(parallel=True, cache=True)
def matmat_q8_0(w, xq, out):
    for r in prange(w.shape[0]):
        for t in range(xq.shape[0]):
            out[t, r] = _row_q8_0(w[r], xq[t])
