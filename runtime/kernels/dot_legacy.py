"""Integer dot-product kernels for the 32-value block weights against 8-bit quantized activations.

    matvec_<t>(w: u8[rows, row_bytes], xq: u8[xbytes], out: f32[rows])          decode: one token
    matmat_<t>(w: u8[rows, row_bytes], xq: u8[tokens, xbytes], out: f32[tokens, rows])   many tokens

Weight/activation pairs as ggml's vec_dot_type: Q4_0, Q5_0, Q8_0 x Q8_0 and Q4_1, Q5_1 x Q8_1 (see
actquant). Each row is one vecir intrinsic that follows ggml-cpu's x86 ggml_vec_dot_<t>_q8_<k> (the
AVX2/AVX-512 build llama.cpp runs here): exact integer sums in 8 lanes per block, scaled and
fused-multiply-added into 8 float accumulators, one horizontal sum per row. The same IR runs on ARM
(NEON), with the same results. matmat runs the same row function per token, so it equals matvec bit for bit.
Numba's cache does not see edits to vecir: after changing it, touch this file (or clear the cache).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.runtime.kernels.vecir import row_q4_0, row_q4_1, row_q5_0, row_q5_1, row_q8_0

F32 = np.float32


@njit(inline="always", cache=True)
def _row_q4_0(wr, xr):
    return row_q4_0(wr, xr, wr.shape[0] // 18)


@njit(inline="always", cache=True)
def _row_q4_1(wr, xr):
    return row_q4_1(wr, xr, wr.shape[0] // 20)


@njit(inline="always", cache=True)
def _row_q5_0(wr, xr):
    return row_q5_0(wr, xr, wr.shape[0] // 22)


@njit(inline="always", cache=True)
def _row_q5_1(wr, xr):
    return row_q5_1(wr, xr, wr.shape[0] // 24)


@njit(inline="always", cache=True)
def _row_q8_0(wr, xr):
    return row_q8_0(wr, xr, wr.shape[0] // 34)


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
