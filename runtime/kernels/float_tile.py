"""Prompt kernels for the float weight types (F16, BF16, F32): 16 rows at a time, one row per vector lane.

The integer prompt kernels' layout (vecir_tile) in float32: a group of 16 rows is widened once into a
panel holding, for each column k, the 16 rows' values side by side; then for each token, column k's
panel vector times the token's x[k] broadcast is one fused multiply-add into the 16 rows' sums. Eight
tokens share each loaded panel vector. Each output is the float32 sum over k in order of
fma(w[r, k], x[t, k], .): its bits depend on the row and the token only.

    FLOAT_MATMAT[type](w, x: f32[tokens, n], out: f32[tokens, rows])    (w as weight_kernels views it)
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.quants.floats import bf16_bits_to_fp32
from ggq.runtime.kernels import FASTMATH
from ggq.runtime.kernels.floats import half_to_float
from ggq.runtime.kernels.vecir import F32, _fma
from ggq.runtime.kernels.vecir_isa import I32, _vec, _vec_undef

LANES = 16         # rows per panel: one 512-bit vector of float32 (two 256-bit ones where that is the width)
TOKENS = 8         # tokens per call
GROUPS_PER_ITEM = 2


def _float_gemm(n_toks):
    """Intrinsic gemm(P, n, x, t0, n_tok, out, r0): out[t * rows + r0 + i] (rows = out's row length) =
    sum_k P[k * 16 + i] * x[t * n + k], for tokens t0.. t0 + n_toks - 1 clamped to n_tok - 1."""
    vec = _vec(F32, LANES)

    def typer(typingctx, P, n, x, t0, n_tok, out, stride, r0):
        def codegen(context, builder, sig, args):
            p_arr, n_v, x_arr, t0_v, n_tok_v, out_arr, stride_v, r0_v = args

            def data(k):
                return builder.bitcast(context.make_array(sig.args[k])(context, builder, args[k]).data, F32.as_pointer())
            pp, xp, op = data(0), data(2), data(5)
            last = builder.sub(n_tok_v, ir.Constant(n_tok_v.type, 1))
            toks = [builder.add(t0_v, ir.Constant(t0_v.type, j)) for j in range(n_toks)]
            toks = [builder.select(builder.icmp_signed("<", t, last), t, last) for t in toks]
            rows = [builder.gep(xp, [builder.mul(t, n_v)]) for t in toks]
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
                dst = builder.gep(op, [builder.add(builder.mul(t, stride_v), r0_v)])
                builder.store(builder.load(acc), builder.bitcast(dst, vec.as_pointer()), align=4)
            return context.get_dummy_value()
        return types.none(P, types.intp, x, types.intp, types.intp, out, types.intp, types.intp), codegen
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
                gemm16x8(panel, n, xflat, t, n_tok, oflat, n_rows, g * LANES)
    _rest_rows(w, x, out, groups * LANES, widen)


def _matmat_of(type_name: str):
    widen = WIDEN[type_name]
    return lambda w, x, out: matmat_float(w, x, out, widen)


FLOAT_MATMAT = {name: _matmat_of(name) for name in WIDEN}
