"""Matrix-vector kernels for the float formats F32, F16, BF16 (weights viewed as float32 / uint16 rows).

Tiles for prefill: F16 rows are widened by a parallel kernel; numpy widens BF16 (shift into the top half
of a uint32) fast enough.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.floats import bf16_bits_to_fp32, f32_as_u32, u32_as_f32
from ggq.runtime.kernels import FASTMATH
from ggq.runtime.kernels.vecfloat import dot_bf16, dot_f16

F0 = np.float32(0.0)


@njit(inline="always", cache=True)
def half_to_float(h):
    """IEEE half bits -> float32, exact, written with selects instead of branches so that LLVM vectorizes
    it: rebias the exponent (15 -> 127); inf/NaN get the largest exponent; subnormals are formed as
    2^-14 * (1 + m/1024) - 2^-14."""
    h32 = np.uint32(h)
    e = h32 & np.uint32(0x7C00)
    bits = ((h32 & np.uint32(0x7FFF)) << np.uint32(13)) + np.uint32(112 << 23)
    bits = bits + (np.uint32(112 << 23) if e == np.uint32(0x7C00) else np.uint32(0))
    bits = bits + (np.uint32(1 << 23) if e == np.uint32(0) else np.uint32(0))
    f = u32_as_f32(bits) - (np.float32(6.103515625e-05) if e == np.uint32(0) else np.float32(0.0))
    return u32_as_f32(f32_as_u32(f) | ((h32 & np.uint32(0x8000)) << np.uint32(16)))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_f32(w, x, out):
    for r in prange(w.shape[0]):
        acc = F0
        for i in range(w.shape[1]):
            acc += w[r, i] * x[i]
        out[r] = acc


@njit(parallel=True, cache=True)
def matvec_f16(w, x, out, pf=0):
    n = w.shape[1]
    for r in prange(w.shape[0]):
        acc = dot_f16(w[r], x, n, pf)  # 16 values at a time; the tail (n % 16) here
        for i in range(n - n % 16, n):
            acc += half_to_float(w[r, i]) * x[i]
        out[r] = acc


@njit(parallel=True, cache=True)
def matvec_bf16(w, x, out, pf=0):
    n = w.shape[1]
    for r in prange(w.shape[0]):
        acc = dot_bf16(w[r], x, n, pf)
        for i in range(n - n % 16, n):
            acc += bf16_bits_to_fp32(w[r, i]) * x[i]
        out[r] = acc


@njit(parallel=True, cache=True)
def decode_rows_f16(w, r0, out):
    """Rows r0.. of F16 bits as float32, rows in parallel (numpy's float16 widening ran at ~0.2 G values/s
    here, half of an F16 model's prompt time; half_to_float's selects vectorize)."""
    for r in prange(out.shape[0]):
        for i in range(out.shape[1]):
            out[r, i] = half_to_float(w[r0 + r, i])


def decode_rows_bf16(w: np.ndarray, r0: int, out: np.ndarray) -> None:
    out.view(np.uint32)[...] = w[r0:r0 + out.shape[0]].astype(np.uint32) << 16


def decode_rows_f32(w: np.ndarray, r0: int, out: np.ndarray) -> None:
    out[...] = w[r0:r0 + out.shape[0]]
