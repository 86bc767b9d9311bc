"""Q4_K and Q6_K rows × Q8_K activations, and F16 rows × F16 activations, in the float order of
llama.cpp's x86 build (the `match_llamacpp` mode; ggq's own k-quant dots follow ggml's generic order,
dot_kquants, and its F16 ones keep float32 activations).

    Q4_0  repacked into 8-row interleaved blocks on AVX2 hosts (ggml_gemv/gemm_q4_0_8x8_q8_0): per
          row and block, acc = fma(isum, d_w * d_x, acc) with the block's exact integer sum.
    F16   activations rounded to F16 (ggml's vec_dot_type for F16 weights); one row: ggml_vec_dot_f16
          (ggml_ops.dot_f16); a batch: llamafile's tinyBLAS, one 16-lane accumulator per output over
          steps of 16 values, then _mm512_reduce_add_ps (`tinyblas`).
    Q4_K  llama.cpp repacks Q4_K matrices into 8-row interleaved blocks on AVX2 hosts
          (ggml_gemv/gemm_q4_K_8x8_q8_K). Per row and super-block the integer sums are exact:
          isum = sum_s scale_s * (q . x over sub-block s), imin = sum_s min_s * (bsum of sub-block s);
          then acc = fma(isum, d * yd, acc), accm = fma(imin, dmin * yd, accm); the row is acc - accm.
          The gemv form (one activation row; decode) does that once per super-block; the gemm form
          (activation rows in groups of 4 in a batch) once per pair of sub-blocks (`gemm`).
    Q6_K  ggml_vec_dot_q6_K_q8_K's AVX2 form: 8 integer lanes per super-block, lane l holding the
          products of bytes 4l..4l+3 of each 32-value chunk times that half-chunk's scale, minus
          32 * (bsums[2l] * scale[2l] + bsums[2l+1] * scale[2l+1]); lanes fused-multiply-added with
          d = yd * d_w into 8 float accumulators; one hsum_float_8 at the end.

    tiled llama.cpp's tiled k-quant matmul (ggml-cpu/tiled, AVX512-VNNI microkernel) for batches of 8
          rows or more of a matrix that is not repacked; for Q6_K, per super-block:
          s1 = sum_s scale_s * (q . x - 32 * bsum_s) over 16-value sub-blocks (exact), then
          acc = fma(s1 * d_w, yd, acc) (the source's multiply then add, which GCC fuses).

Checked against llama.cpp's own outputs (bench/llamacpp_trace.py); tests/test_runtime_ggml_ops.py
checks them against float64 sums of the dequantized rows.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ggq.quants.ksearch import get_scale_min_k4
from ggq.runtime.kernels.ggml_ops import dot_f16, f16_bits, f16_value, fma32, reduce_add_16
from ggq.runtime.kernels.vecir import f16_at, f32_at, i16_at

F32 = np.float32
Q8K_BYTES, Q4K_BYTES, Q6K_BYTES = 292, 144, 210


@njit(cache=True)
def _row_q4_k(w, wo, xq, nb, gemm):
    acc, accm = F32(0.0), F32(0.0)
    for b in range(nb):
        wb, xb = wo + b * Q4K_BYTES, b * Q8K_BYTES
        yd = f32_at(xq, xb)
        d, dmin = f16_at(w, wb) * yd, f16_at(w, wb + 2) * yd
        isum, imin = 0, 0
        for s in range(8):
            sc, mn = get_scale_min_k4(s, w[wb + 4:wb + 16])
            qbase, shift = wb + 16 + 32 * (s // 2), 4 * (s % 2)
            dot = 0
            for l in range(32):
                x = np.int32(np.int8(xq[xb + 4 + 32 * s + l]))
                dot += ((np.int32(w[qbase + l]) >> shift) & 0xF) * x
            isum += np.int32(sc) * dot
            bsum = i16_at(xq, xb + 260 + 4 * s) + i16_at(xq, xb + 262 + 4 * s)
            imin += np.int32(mn) * bsum
            if gemm and s % 2 == 1:
                acc, accm = fma32(F32(isum), d, acc), fma32(F32(imin), dmin, accm)
                isum, imin = 0, 0
        if not gemm:
            acc, accm = fma32(F32(isum), d, acc), fma32(F32(imin), dmin, accm)
    return acc - accm


@njit(inline="always", cache=True)
def _q6_value(w, wb, v):
    """Stored 6-bit value (0..63) of value v (0..255) of the Q6_K block at w[wb:]."""
    half, rest = v // 128, v % 128
    s, l = rest // 32, rest % 32
    ql = np.int32(w[wb + 64 * half + l + 32 * (s % 2)])
    low = (ql >> 4) & 0xF if s >= 2 else ql & 0xF
    high = (np.int32(w[wb + 128 + 32 * half + l]) >> (2 * s)) & 3
    return low | (high << 4)


@njit(cache=True)
def _row_q6_k(w, wo, xq, nb, lanes, acc):
    acc[:] = 0.0
    for b in range(nb):
        wb, xb = wo + b * Q6K_BYTES, b * Q8K_BYTES
        lanes[:] = 0
        for c in range(8):
            for e in range(32):
                v = 32 * c + e
                scale = np.int32(np.int8(w[wb + 192 + 2 * c + e // 16]))
                x = np.int32(np.int8(xq[xb + 4 + v]))
                lanes[e // 4] += scale * (_q6_value(w, wb, v) * x)
        for l in range(8):
            sc0 = np.int32(np.int8(w[wb + 192 + 2 * l]))
            sc1 = np.int32(np.int8(w[wb + 193 + 2 * l]))
            lanes[l] -= 32 * (i16_at(xq, xb + 260 + 4 * l) * sc0 + i16_at(xq, xb + 262 + 4 * l) * sc1)
        d = f32_at(xq, xb) * f16_at(w, wb + 208)
        for l in range(8):
            acc[l] = fma32(d, F32(lanes[l]), acc[l])
    r = (acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3])
    return (r[0] + r[2]) + (r[1] + r[3])


@njit(cache=True)
def _row_q6_k_tiled(w, wo, xq, nb):
    acc = F32(0.0)
    for b in range(nb):
        wb, xb = wo + b * Q6K_BYTES, b * Q8K_BYTES
        s1 = 0
        for s in range(16):
            raw = 0
            for e in range(16):
                v = 16 * s + e
                raw += _q6_value(w, wb, v) * np.int32(np.int8(xq[xb + 4 + v]))
            s1 += np.int32(np.int8(w[wb + 192 + s])) * (raw - 32 * i16_at(xq, xb + 260 + 2 * s))
        acc = fma32(F32(s1) * f16_at(w, wb + 208), f32_at(xq, xb), acc)  # GCC fuses the add into the multiply
    return acc


@njit(cache=True)
def _row_q4_0_repacked(w, wo, xq, nb):
    acc = F32(0.0)
    for b in range(nb):
        wb, xb = wo + 18 * b, 34 * b
        isum = 0
        for l in range(16):
            q = np.int32(w[wb + 2 + l])
            isum += ((q & 0xF) - 8) * np.int32(np.int8(xq[xb + 2 + l]))
            isum += ((q >> 4) - 8) * np.int32(np.int8(xq[xb + 18 + l]))
        acc = fma32(F32(isum), f16_at(w, wb) * f16_at(xq, xb), acc)
    return acc


@njit(parallel=True, cache=True)
def matvec_q4_0_repacked(w, xq, out):
    """out[r] = row r of the Q4_0 matrix w . the Q8_0 row xq, as llama.cpp's repacked kernels sum it."""
    nb = w.shape[1] // 18
    flat = w.reshape(-1)
    for r in prange(w.shape[0]):
        out[r] = _row_q4_0_repacked(flat, r * w.shape[1], xq, nb)


@njit(parallel=True, cache=True)
def matvec_q4_k(w, xq, out, gemm):
    """out[r] = row r of the Q4_K matrix w [rows, row_bytes] . the Q8_K row xq, in llama.cpp's order
    (its gemm form if gemm, else its gemv form)."""
    nb = w.shape[1] // Q4K_BYTES
    flat = w.reshape(-1)
    for r in prange(w.shape[0]):
        out[r] = _row_q4_k(flat, r * w.shape[1], xq, nb, gemm)


@njit(parallel=True, cache=True)
def matvec_q6_k(w, xq, out, tiled):
    """out[r] = row r of the Q6_K matrix w . the Q8_K row xq, in ggml's AVX2 vec_dot order (or its
    tiled matmul's, if tiled)."""
    nb = w.shape[1] // Q6K_BYTES
    flat = w.reshape(-1)
    if tiled:
        for r in prange(w.shape[0]):
            out[r] = _row_q6_k_tiled(flat, r * w.shape[1], xq, nb)
        return
    n_chunks = (w.shape[0] + 15) // 16
    for c in prange(n_chunks):
        lanes = np.empty(8, np.int32)
        acc = np.empty(8, np.float32)
        for r in range(16 * c, min(16 * c + 16, w.shape[0])):
            out[r] = _row_q6_k(flat, r * w.shape[1], xq, nb, lanes, acc)


@njit(cache=True)
def _row_f16_tinyblas(w, wo, xh, n, lanes):
    lanes[:16] = 0.0
    for i in range(0, n, 16):
        for e in range(16):
            lanes[e] += f16_value(w[wo + i + e]) * f16_value(xh[i + e])  # exact products: fma = add
    return reduce_add_16(lanes, 0)


@njit(parallel=True, cache=True)
def matvec_f16(w, x, xh, out, tinyblas):
    """out[r] = row r of the F16 matrix w [rows, cols] (uint16) . x rounded to F16 (into xh), in
    ggml_vec_dot_f16's order, or tinyBLAS's if tinyblas."""
    n = w.shape[1]
    for i in range(n):
        xh[i] = f16_bits(x[i])
    flat = w.reshape(-1)
    n_chunks = (w.shape[0] + 15) // 16
    for c in prange(n_chunks):
        lanes = np.empty(64, np.float32)
        for r in range(16 * c, min(16 * c + 16, w.shape[0])):
            if tinyblas:
                out[r] = _row_f16_tinyblas(flat, r * n, xh, n, lanes)
            else:
                out[r] = dot_f16(flat, r * n, xh, 0, n, lanes)
