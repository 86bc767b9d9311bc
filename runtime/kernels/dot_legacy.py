"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   prefill

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Blocks go four at a time through vecir's vector IR: exact integer sums with a shared horizontal
reduction, then the float combination of ggml-cpu/quants.c's generic ggml_vec_dot_<t>_q8_<k>_generic literally, per block and in the same
order, so every output equals that scalar C code compiled without FP contraction. matmat runs the same
row function per token, so it equals matvec bit for bit; the row's weights stay in L1 across tokens.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels.vecir import (dot1_q4_0, dot1_q4_1, dot1_q5_0, dot1_q5_1, dot1_q8_0, dot4_q4_0,
                                       dot4_q4_1, dot4_q5_0, dot4_q5_1, dot4_q8_0)

F32 = np.float32


@njit(inline="always", cache=True)
def _row_q4_0(wr, xr):
    nb = wr.shape[0] // 18
    acc = F32(0.0)
    for b in range(0, nb - 3, 4):
        acc = dot4_q4_0(wr, b * 18, xr, b * 34, acc)
    for b in range(nb - nb % 4, nb):
        acc = dot1_q4_0(wr, b * 18, xr, b * 34, acc)
    return acc


@njit(inline="always", cache=True)
def _row_q4_1(wr, xr):
    nb = wr.shape[0] // 20
    acc = F32(0.0)
    for b in range(0, nb - 3, 4):
        acc = dot4_q4_1(wr, b * 20, xr, b * 36, acc)
    for b in range(nb - nb % 4, nb):
        acc = dot1_q4_1(wr, b * 20, xr, b * 36, acc)
    return acc


@njit(inline="always", cache=True)
def _row_q5_0(wr, xr):
    nb = wr.shape[0] // 22
    acc = F32(0.0)
    for b in range(0, nb - 3, 4):
        acc = dot4_q5_0(wr, b * 22, xr, b * 34, acc)
    for b in range(nb - nb % 4, nb):
        acc = dot1_q5_0(wr, b * 22, xr, b * 34, acc)
    return acc


@njit(inline="always", cache=True)
def _row_q5_1(wr, xr):
    nb = wr.shape[0] // 24
    acc = F32(0.0)
    for b in range(0, nb - 3, 4):
        acc = dot4_q5_1(wr, b * 24, xr, b * 36, acc)
    for b in range(nb - nb % 4, nb):
        acc = dot1_q5_1(wr, b * 24, xr, b * 36, acc)
    return acc


@njit(inline="always", cache=True)
def _row_q8_0(wr, xr):
    nb = wr.shape[0] // 34
    acc = F32(0.0)
    for b in range(0, nb - 3, 4):
        acc = dot4_q8_0(wr, b * 34, xr, b * 34, acc)
    for b in range(nb - nb % 4, nb):
        acc = dot1_q8_0(wr, b * 34, xr, b * 34, acc)
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
