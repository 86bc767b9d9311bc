"""Quantize float32 activations to the 8-bit block formats that ggml's CPU backend dots weights against.

    Q8_0  34 bytes / 32 values: d (f16), qs[32] int8                 (for Q4_0, Q5_0, Q8_0 weights)
    Q8_1  36 bytes / 32 values: d (f16), s = d * sum(qs) (f16), qs   (for Q4_1, Q5_1)
    Q8_K 292 bytes / 256 values: d (f32), qs[256] int8, bsums[16] int16 sums of 16 qs (for the k-quants)

ggml-cpu quantizes src1 of a mat-mul with its `from_float` of the weight's vec_dot_type, and that
function is not the reference one on x86: quantize_row_q8_0/q8_1 in ggml-cpu/arch/x86/quants.c
(any AVX/AVX2/AVX-512 build) use id = 127/amax and round half to EVEN, whereas the generic fallback
(quantize_row_q8_0_ref) uses id = 1/(amax/127) and roundf (half away from zero). Both are here:
variant "x86" (the default, what llama.cpp runs on this kind of machine) and "generic". Q8_K has a
single implementation (x86 also calls quantize_row_q8_K_ref).

Kernels: quantize_<fmt>[_generic](x: f32[rows, n], out: u8[rows, nbytes]), serial (a decode step
quantizes one short row; the float32 -> int8 rounding must stay exact, so no fastmath).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.floats import f32_as_u32, fp32_to_fp16_bits
from ggq.quants.legacy import c_float_to_int8, c_roundf

F32 = np.float32
QK8_0 = 32
QK_K = 256
# format -> (values per block, bytes per block)
ACT_FORMATS: dict[str, tuple[int, int]] = {"Q8_0": (32, 34), "Q8_1": (32, 36), "Q8_K": (256, 292)}


def act_row_bytes(fmt: str, n: int) -> int:
    """Bytes of one activation row of n values in format fmt."""
    block, size = ACT_FORMATS[fmt]
    if n % block:
        raise ValueError(f"{fmt}: row of {n} is not a multiple of {block}")
    return n // block * size


@njit(inline="always", cache=True)
def _put_u16(out, r, at, h):
    out[r, at] = np.uint8(h & 0xFF)
    out[r, at + 1] = np.uint8(h >> 8)


@njit(inline="always", cache=True)
def _amax(x, r, j0, n):
    amax = F32(0.0)
    for j in range(n):
        amax = max(amax, F32(abs(x[r, j0 + j])))
    return amax


@njit(inline="always", cache=True)
def _x86_int(v):
    """_mm256_round_ps(NEAREST) then _mm256_cvtps_epi32: round half to even; NaN/out of range -> INT_MIN."""
    v = np.rint(v)
    if not (abs(v) < F32(2147483648.0)):
        return np.int64(-2147483648)
    return np.int64(v)


@njit(inline="always", cache=True)
def _x86_block(x, r, j0, out, at, qs_at):
    """One x86 Q8_0/Q8_1 block: writes d and qs (int16/int8 packs saturate), returns (d, sum of ints)."""
    amax = _amax(x, r, j0, QK8_0)
    d = F32(amax / F32(127.0))
    _put_u16(out, r, at, fp32_to_fp16_bits(d))
    inv = F32(F32(127.0) / amax) if amax != F32(0.0) else F32(0.0)
    total = np.int64(0)
    for j in range(QK8_0):
        q = _x86_int(F32(x[r, j0 + j] * inv))
        total += q
        q = min(max(q, -128), 127)
        out[r, at + qs_at + j] = np.uint8(q & 0xFF)
    return d, np.int32(total)  # hsum_i32_8 wraps like int32


@njit(cache=True)
def quantize_q8_0(x, out):
    """ggml-cpu x86 quantize_row_q8_0 (AVX/AVX2 path)."""
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // QK8_0):
            _x86_block(x, r, b * QK8_0, out, b * 34, 2)


@njit(cache=True)
def quantize_q8_1(x, out):
    """ggml-cpu x86 quantize_row_q8_1 (AVX2 path): s = fp16(d * (float)sum(qs))."""
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // QK8_0):
            d, total = _x86_block(x, r, b * QK8_0, out, b * 36, 4)
            _put_u16(out, r, b * 36 + 2, fp32_to_fp16_bits(F32(d * F32(total))))


@njit(inline="always", cache=True)
def _generic_block(x, r, j0, out, at, qs_at):
    """quantize_row_q8_0_ref's block: d = amax/127, id = 1/d, q = (int8_t)roundf(x*id); returns (d, sum)."""
    d = F32(_amax(x, r, j0, QK8_0) / F32(127.0))
    inv = F32(F32(1.0) / d) if d != F32(0.0) else F32(0.0)
    _put_u16(out, r, at, fp32_to_fp16_bits(d))
    total = np.int64(0)
    for j in range(QK8_0):
        q = c_float_to_int8(c_roundf(F32(x[r, j0 + j] * inv)))
        total += q
        out[r, at + qs_at + j] = np.uint8(q & 0xFF)
    return d, total


@njit(cache=True)
def quantize_q8_0_generic(x, out):
    """ggml's quantize_row_q8_0_ref (ggml-cpu's generic fallback)."""
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // QK8_0):
            _generic_block(x, r, b * QK8_0, out, b * 34, 2)


@njit(cache=True)
def quantize_q8_1_generic(x, out):
    """ggml's quantize_row_q8_1_ref: s = fp16((float)sum(qs) * d)."""
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // QK8_0):
            d, total = _generic_block(x, r, b * QK8_0, out, b * 36, 4)
            _put_u16(out, r, b * 36 + 2, fp32_to_fp16_bits(F32(F32(total) * d)))


@njit(inline="always", cache=True)
def _nearest_int(v):
    """ggml's nearest_int: the 1.5*2^23 magic-number rounding (half to even for |v| < 2^22)."""
    bits = np.int64(f32_as_u32(F32(v + F32(12582912.0))))
    return (bits & 0x007FFFFF) - 0x00400000


@njit(cache=True)
def quantize_q8_k(x, out):
    """ggml's quantize_row_q8_K_ref (also the x86 one); an all-zero block gets zero bsums (ggml leaves them)."""
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // QK_K):
            j0, at = b * QK_K, b * 292
            amax, vmax = F32(0.0), F32(0.0)
            for j in range(QK_K):
                ax = F32(abs(x[r, j0 + j]))
                if ax > amax:
                    amax, vmax = ax, x[r, j0 + j]
            out[r, at:at + 292] = 0
            if amax == F32(0.0):
                continue
            iscale = F32(F32(-127.0) / vmax)
            for g in range(QK_K // 16):
                total = 0
                for j in range(16):
                    q = min(127, _nearest_int(F32(iscale * x[r, j0 + 16 * g + j])))
                    total += q
                    out[r, at + 4 + 16 * g + j] = np.uint8(q & 0xFF)
                _put_u16(out, r, at + 260 + 2 * g, np.uint16(total & 0xFFFF))
            bits = f32_as_u32(F32(F32(1.0) / iscale))
            for k in range(4):
                out[r, at + k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(0xFF))


QUANTIZERS = {
    ("Q8_0", "x86"): quantize_q8_0, ("Q8_0", "generic"): quantize_q8_0_generic,
    ("Q8_1", "x86"): quantize_q8_1, ("Q8_1", "generic"): quantize_q8_1_generic,
    ("Q8_K", "x86"): quantize_q8_k, ("Q8_K", "generic"): quantize_q8_k,
}


# a prompt's rows in parallel (prompts only: one decode row is too short to share out)
@njit(parallel=True, cache=True)
def quantize_rows_q8_0(x, out):
    for r in prange(x.shape[0]):
        quantize_q8_0(x[r:r + 1], out[r:r + 1])


@njit(parallel=True, cache=True)
def quantize_rows_q8_1(x, out):
    for r in prange(x.shape[0]):
        quantize_q8_1(x[r:r + 1], out[r:r + 1])


@njit(parallel=True, cache=True)
def quantize_rows_q8_k(x, out):
    for r in prange(x.shape[0]):
        quantize_q8_k(x[r:r + 1], out[r:r + 1])


PARALLEL_QUANTIZERS = {"Q8_0": quantize_rows_q8_0, "Q8_1": quantize_rows_q8_1, "Q8_K": quantize_rows_q8_k}


def quantize_prompt(x: np.ndarray, fmt: str) -> np.ndarray:
    """quantize_activations(x, fmt) for the [tokens, n] rows of a prompt (x86 variant), rows in parallel."""
    out = np.empty((x.shape[0], act_row_bytes(fmt, x.shape[1])), dtype=np.uint8)
    PARALLEL_QUANTIZERS[fmt](np.ascontiguousarray(x, dtype=np.float32), out)
    return out


def quantize_activations(x: np.ndarray, fmt: str, variant: str = "x86") -> np.ndarray:
    """float32 [..., n] -> uint8 [..., act_row_bytes(fmt, n)] in ggml's block layout."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    out = np.empty((rows.shape[0], act_row_bytes(fmt, n)), dtype=np.uint8)
    QUANTIZERS[fmt, variant](rows, out)
    return out.reshape(*x.shape[:-1], out.shape[-1])
