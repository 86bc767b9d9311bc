"""llama.cpp's CPU arithmetic for the non-matmul ops, bit for bit (the `match_llamacpp` mode).

Each kernel repeats the float operations of ggml-cpu's x86 build (AVX-512 host, GCC's default
contraction into fused multiply-adds) in the same order, so that given the same inputs it returns the
same bits. Checked op by op against tensors dumped from llama.cpp itself (bench/llamacpp_trace.cpp;
tests/fixtures/ggml_golden.npz and tests/test_runtime_ggml_ops.py, with references that need no
llama.cpp). Other builds of llama.cpp (AVX2 only, ARM) round differently in places (v_expf, lane
orders); this module follows the AVX-512 one.

    rmsnorm          ggml_compute_forward_rms_norm_f32 then the weight multiply (float x*x summed in
                     double, float mean, 1/sqrtf)
    rope             ggml_rope_cache_init + rotate_pairs: theta advanced by repeated float multiplies,
                     cosf/sinf, then x0*c - x1*s as fma(x0, c, -(x1*s))
    swiglu           ggml_vec_swiglu_f32 with the AVX-512 ggml_v_expf polynomial
    flash_attention  ggml_compute_forward_flash_attn_ext_f16_one_chunk over an F16 KV cache: q rounded
                     to F16, q.k in the AVX-512 lane order of ggml_vec_dot_f16, online softmax with expf,
                     the V sum kept in F16 (decode, and prompts under 64 tokens)
    flash_attention_tiled  ggml_compute_forward_flash_attn_ext_tiled (prompts of 64 tokens or more)

The F16 KV cache is stored as uint16 bit patterns.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

F32 = np.float32


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma.f32: vfmadd on x86, fmadd on ARM)."""
    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        return builder.call(fn, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def f16_bits(typingctx, x):
    """IEEE half bit pattern of float32 x, rounded to nearest even (as F16C's vcvtps2ph)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def f16_value(typingctx, h):
    """float32 of the IEEE half bit pattern h (exact)."""
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@njit(cache=True)
def rmsnorm(x, weight, eps, out):
    """out[r] = (x[r] * (1 / sqrtf(mean(x[r]^2) + eps))) * weight, for every row r of a 2-D x."""
    n = x.shape[1]
    eps32 = F32(eps)
    for r in range(x.shape[0]):
        total = 0.0
        for i in range(n):
            total += np.float64(x[r, i] * x[r, i])  # the product rounded to float, the sum in double
        mean = F32(total / n)
        scale = F32(1.0) / F32(math.sqrt(mean + eps32))
        for i in range(n):
            out[r, i] = (x[r, i] * scale) * weight[i]


def rope_theta_scale(base: float, n_dims: int) -> np.float32:
    """powf(base, -2.0f / n_dims), through the C library's powf as ggml calls it (float rounding)."""
    import ctypes
    import ctypes.util
    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    libm.powf.restype, libm.powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return F32(libm.powf(F32(base), F32(-2.0) / F32(n_dims)))


@njit(cache=True)
def rope_table(pos, theta_scale, freq_scale, factors, table):
    """table[i] = (cos, sin) of pair i at position pos: theta starts at pos and is multiplied by
    theta_scale (powf(base, -2/n_dims)) once per pair, in float, as ggml_rope_cache_init does."""
    theta = F32(pos)
    for i in range(table.shape[0]):
        angle = freq_scale * (theta / factors[i])
        table[i, 0] = math.cos(angle)
        table[i, 1] = math.sin(angle)
        theta = theta * theta_scale


@njit(cache=True)
def rope(x, table, neox):
    """Rotate every head of x [heads, head_dim] in place with the (cos, sin) table of one position."""
    half = table.shape[0]
    for h in range(x.shape[0]):
        for i in range(half):
            a_idx, b_idx = (i, i + half) if neox else (2 * i, 2 * i + 1)
            c, s = table[i, 0], table[i, 1]
            x0, x1 = x[h, a_idx], x[h, b_idx]
            x[h, a_idx] = fma32(x0, c, -(x1 * s))
            x[h, b_idx] = fma32(x0, s, x1 * c)


def _hex(text):
    return F32(float.fromhex(text))


# ggml_v_expf's constants, as its source writes them
_ROUNDER, _LOG2E = _hex("0x1.8p23"), _hex("0x1.715476p+0")
_LN2_HI, _LN2_LO = _hex("0x1.62e4p-1"), _hex("0x1.7f7d1cp-20")
_C5, _C4, _C3, _C2, _C1 = (_hex("0x1.0e4020p-7"), _hex("0x1.573e2ep-5"), _hex("0x1.555e66p-3"),
                           _hex("0x1.fffdb6p-2"), _hex("0x1.ffffecp-1"))


@njit(cache=True)
def v_expf(x):
    """ggml_v_expf's AVX-512 form, one lane: exp(x) from a degree-5 polynomial and a scaling by 2^n."""
    z = fma32(x, _LOG2E, _ROUNDER)  # adding 1.5 * 2^23 rounds x * log2(e) to an integer
    n = z - _ROUNDER
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = b * b
    j = fma32(fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2)), u, fma32(_C1, b, F32(1.0)))
    if abs(n) > F32(192.0):
        return F32(0.0) if n <= F32(0.0) else F32(np.inf)
    return F32(np.float64(j) * 2.0 ** int(n))  # vscalefps: exact in double, one rounding to float


@njit(cache=True)
def swiglu(gate, up):
    """gate <- silu(gate) * up with silu(g) = g / (1 + v_expf(-g)), element-wise over [T, n_ff]."""
    for r in range(gate.shape[0]):
        for i in range(gate.shape[1]):
            g = gate[r, i]
            gate[r, i] = (g / (F32(1.0) + v_expf(F32(0.0) - g))) * up[r, i]


@njit(inline="always", cache=True)
def reduce_add_16(v, at):
    """GCC's _mm512_reduce_add_ps of v[at:at+16]: halves of 8 (hi + lo), of 4, then (0+2) + (1+3)."""
    b0 = (v[at + 12] + v[at + 4]) + (v[at + 8] + v[at])
    b1 = (v[at + 13] + v[at + 5]) + (v[at + 9] + v[at + 1])
    b2 = (v[at + 14] + v[at + 6]) + (v[at + 10] + v[at + 2])
    b3 = (v[at + 15] + v[at + 7]) + (v[at + 11] + v[at + 3])
    return (b0 + b2) + (b1 + b3)


@njit(cache=True)
def dot_f16(a, ao, b, bo, n, lanes):
    """ggml_vec_dot_f16 on AVX-512 of the n F16 values at a[ao:] and b[bo:] (uint16 arrays): 4
    accumulators of 16 lanes over each 64 values (products of halves are exact in float), summed
    (0+2) + (1+3), reduced as _mm512_reduce_add_ps; the rest added in double. lanes: [64] scratch."""
    main = n - n % 64
    lanes[:] = 0.0
    for i in range(0, main, 64):
        for e in range(64):
            lanes[e] += f16_value(a[ao + i + e]) * f16_value(b[bo + i + e])
    for l in range(16):
        lanes[l] = (lanes[l] + lanes[32 + l]) + (lanes[16 + l] + lanes[48 + l])
    total = np.float64(reduce_add_16(lanes, 0))
    for i in range(main, n):
        total += np.float64(f16_value(a[ao + i]) * f16_value(b[bo + i]))
    return F32(total)


@njit(cache=True)
def flash_attention(q, k_cache, v_cache, n_kv, window, scale, qh, vkq, lanes, out):
    """out[h] = softmax(q[h].K * scale) V over cache positions < n_kv (the last `window` only, if > 0),
    for q [H, D] float32 and k_cache/v_cache [H_kv, ctx, D] F16 bits. qh, vkq: [D] uint16 scratch;
    lanes: [64] float32 scratch."""
    n_head, dim = q.shape
    group = n_head // k_cache.shape[0]
    lo = max(0, n_kv - window) if window > 0 else 0
    for h in range(n_head):
        kv = h // group
        for d in range(dim):
            qh[d] = f16_bits(q[h, d])
            vkq[d] = 0
        total, best = F32(0.0), F32(-np.inf)
        for j in range(lo, n_kv):
            s = dot_f16(k_cache[kv, j], 0, qh, 0, dim, lanes) * scale
            ms, vs = F32(1.0), F32(1.0)
            if s > best:
                ms = F32(math.exp(best - s))
                best = s
                for d in range(dim):
                    vkq[d] = f16_bits(f16_value(vkq[d]) * ms)
            else:
                vs = F32(math.exp(s - best))
            for d in range(dim):
                vkq[d] = f16_bits(fma32(f16_value(v_cache[kv, j, d]), vs, f16_value(vkq[d])))
            total = fma32(total, ms, vs)
        inv = F32(1.0) / total if total != 0.0 else F32(0.0)
        for d in range(dim):
            out[h, d] = f16_value(vkq[d]) * inv


KV_TILE = 64  # GGML_FA_TILE_KV


@njit(cache=True)
def flash_attention_tiled(q, k_cache, v_cache, n_kv, window, scale, kq, acc, out):
    """flash_attention as ggml_compute_forward_flash_attn_ext_tiled computes it (micro-batches of 64
    query rows or more): q stays float32; per tile of 64 cache positions, q.k as a sequential chain
    of fused multiply-adds, times scale; masked positions -inf; the tile's max updates the running
    max (rescaling by expf); exps by v_expf, their sum per 16 lanes (_mm512_reduce_add_ps) added in
    double; the V sum a fused multiply-add chain in float32. kq: [64], acc: [D] float32 scratch."""
    n_head, dim = q.shape
    group = n_head // k_cache.shape[0]
    lo = max(0, n_kv - window) if window > 0 else 0
    for h in range(n_head):
        kv = h // group
        acc[:] = 0.0
        total, best = F32(0.0), F32(-np.inf)
        for ic in range(lo - lo % KV_TILE, n_kv, KV_TILE):
            tile_max = F32(-np.inf)
            for tk in range(KV_TILE):
                p = ic + tk
                if p < lo or p >= n_kv:
                    kq[tk] = -np.inf
                    continue
                s = F32(0.0)
                for d in range(dim):
                    s = fma32(f16_value(k_cache[kv, p, d]), q[h, d], s)
                kq[tk] = s * scale
                tile_max = max(tile_max, kq[tk])
            if tile_max == -np.inf:
                continue
            new_best = max(best, tile_max)
            if new_best > best:
                ms = F32(math.exp(best - new_best))
                for d in range(dim):
                    acc[d] = acc[d] * ms
                total = total * ms
            best = new_best
            tile_sum = 0.0
            for c in range(0, KV_TILE, 16):
                for e in range(16):
                    kq[c + e] = v_expf(kq[c + e] - best)
                tile_sum += np.float64(reduce_add_16(kq, c))
            total = F32(np.float64(total) + tile_sum)
            for tk in range(KV_TILE):
                p = ic + tk
                if lo <= p < n_kv:
                    for d in range(dim):
                        acc[d] = fma32(f16_value(v_cache[kv, p, d]), kq[tk], acc[d])
        inv = F32(1.0) / total if total != 0.0 else F32(0.0)
        for d in range(dim):
            out[h, d] = acc[d] * inv

