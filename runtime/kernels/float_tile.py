"""Prompt kernels for the float weight types (F16, BF16, F32): LANES rows at a time, one row per vector lane.

The integer prompt kernels' layout (vecir_tile) in float32: a group of LANES rows is widened once into a
panel holding, for each column k, the rows' values side by side; then for each token, column k's
panel vector times the token's x[k] broadcast is one fused multiply-add into the rows' sums. TOKENS
tokens share each loaded panel vector. Each output is the float32 sum over k in order of
fma(w[r, k], x[t, k], .): its bits depend on the row and the token only.

    FLOAT_MATMAT[type](w, x: f32[tokens, n], out: f32[tokens, rows])    (w as weight_kernels views it)
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.quants.floats import bf16_bits_to_fp32
from ggq.runtime.kernels import FASTMATH
from ggq.runtime.kernels import vecir_isa as isa
from ggq.runtime.kernels.floats import half_to_float
from ggq.runtime.kernels.vecir import F32, _fma
from ggq.runtime.kernels.vecir_isa import I32, _vec, _vec_undef

# (rows per panel, tokens per call) by the vector registers the CPU has: TOKENS accumulators of LANES
# floats, plus the panel vector and a broadcast, filling the register file without spilling. With 32
# 512-bit registers, 32 x 8 (16 accumulators; two panel loads and 8 broadcasts per 16 fma) ran 1536x576 x
# 512 tokens at 378 GFLOP/s on 2 Zen 5 cores, where 16 x 8 (load-bound: 9 loads per 8 fma) ran at 308;
# 16 x 6 is the same count for 16 256-bit registers (AVX2) or 32 128-bit ones (NEON).
# GGQ_FLOAT_TILE=16x8 (rows x tokens) overrides, for tests and A/B (ggq's default Numba cache keys on it:
# tune_cache.CODEGEN_ENV).
SHAPES = {"avx512": (32, 8), "other": (16, 6)}


def _shape():
    forced = os.environ.get("GGQ_FLOAT_TILE")
    if forced:
        rows, tokens = forced.lower().split("x")
        return int(rows), int(tokens)
    return SHAPES["avx512" if "+avx512f" in isa._FEATURES else "other"]


LANES, TOKENS = _shape()
GROUPS_PER_ITEM = 2


def _float_gemm(n_toks):
    """Intrinsic gemm(P, p0, n, x, x0, xs, n_valid, out, o0, os): for token j < n_toks (clamped to
    n_valid - 1, so that a short tail repeats its last token), out[o0 + j * os + i] =
    sum_k P[p0 + k * LANES + i] * x[x0 + j * xs + k], i < LANES, the sum in k order by fma. Flat float32
    arrays and element offsets: weight panels (matmat_float) and attention's key and value panels
    (attention_tile) use the one kernel."""
    vec = _vec(F32, LANES)

    def typer(typingctx, P, p0, n, x, x0, xs, n_valid, out, o0, os):
        def codegen(context, builder, sig, args):
            _, p0_v, n_v, _, x0_v, xs_v, valid_v, _, o0_v, os_v = args

            def data(k):
                return builder.bitcast(context.make_array(sig.args[k])(context, builder, args[k]).data, F32.as_pointer())
            pp, xp, op = builder.gep(data(0), [p0_v]), builder.gep(data(3), [x0_v]), builder.gep(data(7), [o0_v])
            last = builder.sub(valid_v, ir.Constant(valid_v.type, 1))
            toks = [ir.Constant(valid_v.type, j) for j in range(n_toks)]
            toks = [builder.select(builder.icmp_signed("<", t, last), t, last) for t in toks]
            rows = [builder.gep(xp, [builder.mul(t, xs_v)]) for t in toks]
            accs = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES)) for _ in toks]
            with cgutils.for_range(builder, n_v) as loop:
                k = loop.index
                w = builder.load(builder.bitcast(builder.gep(pp, [builder.mul(k, ir.Constant(k.type, LANES))]),
                                                 vec.as_pointer()), align=4)
                for row, acc in zip(rows, accs):
                    xk = builder.insert_element(_vec_undef(F32, LANES), builder.load(builder.gep(row, [k])),
                                                ir.Constant(I32, 0))
                    xk = builder.shuffle_vector(xk, _vec_undef(F32, LANES), ir.Constant(_vec(I32, LANES), [0] * LANES))
                    builder.store(_fma(builder, w, xk, builder.load(acc)), acc)
            for t, acc in zip(toks, accs):
                dst = builder.gep(op, [builder.mul(t, os_v)])
                builder.store(builder.load(acc), builder.bitcast(dst, vec.as_pointer()), align=4)
            return context.get_dummy_value()
        i = types.intp
        return types.none(P, i, i, x, i, i, i, out, i, i), codegen
    return intrinsic(typer)


gemm16x8 = _float_gemm(TOKENS)


# widen codes: how a weight element becomes float32 (a compile-time-invariant branch inside the loops)
WIDEN = {"F16": 0, "BF16": 1, "F32": 2}


@njit(inline="always", cache=True)
def _widen(v, widen):
    return half_to_float(v) if widen == 0 else bf16_bits_to_fp32(v) if widen == 1 else np.float32(v)


@njit(inline="always", cache=True)
def _panel(w, r0, panel, widen):
    for i in range(LANES):
        for k in range(w.shape[1]):
            panel[k * LANES + i] = _widen(w[r0 + i, k], widen)


@njit(inline="always", cache=True, fastmath=FASTMATH)
def _rest_rows(w, x, out, first, widen):
    """Rows from `first` (fewer than a panel) one dot at a time."""
    for r in range(first, w.shape[0]):
        for t in range(x.shape[0]):
            acc = np.float32(0.0)
            for k in range(w.shape[1]):
                acc += _widen(w[r, k], widen) * x[t, k]
            out[t, r] = acc


@njit(parallel=True, cache=True)
def matmat_float(w, x, out, widen):
    """out[t, r] = w[r] . x[t] for a float weight type (widen: WIDEN[type])."""
    n, n_tok, n_rows, groups = w.shape[1], x.shape[0], w.shape[0], w.shape[0] // LANES
    xflat, oflat = x.reshape(-1), out.reshape(-1)
    for c in prange((groups + GROUPS_PER_ITEM - 1) // GROUPS_PER_ITEM):
        panel = np.empty(n * LANES, np.float32)
        for g in range(c * GROUPS_PER_ITEM, min(groups, (c + 1) * GROUPS_PER_ITEM)):
            _panel(w, g * LANES, panel, widen)
            for t in range(0, n_tok, TOKENS):
                gemm16x8(panel, 0, n, xflat, t * n, n, n_tok - t, oflat, t * n_rows + g * LANES, n_rows)
    _rest_rows(w, x, out, groups * LANES, widen)


def _matmat_of(type_name: str):
    widen = WIDEN[type_name]
    return lambda w, x, out: matmat_float(w, x, out, widen)


FLOAT_MATMAT = {name: _matmat_of(name) for name in WIDEN}
