"""Dot products of float weight rows (F16, BF16) with float32 activations, written as LLVM vector IR.

Numba widens an F16 value through integer bit arithmetic one element at a time; here a row is read 16
halves at a time and widened by one `fpext <16 x half>` (F16C's vcvtph2ps on x86, fcvtl on ARM), BF16
by a shift into the high half of each float, then multiplied into 16 float lanes that are summed once at
the end of the row. Every product and sum is float32, in a fixed order (lane l takes elements
l, l + 16, ...; lanes added pairwise), so results do not depend on the machine.

    dot_f16(w_row_u16, x, n, pf) -> float32      # sum_i half(w[i]) * x[i], i < n - n % 16
    dot_bf16(w_row_u16, x, n, pf) -> float32

pf > 0: prefetch the row's bytes that far ahead of each load (the tuned distance, runtime/tune.py).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.runtime.kernels.vecir import F32, I32, _prefetch, _ptr, _vec

LANES = 16
I16 = ir.IntType(16)


def _data(context, builder, aryty, ary, elem):
    """elem* to the first element of a 1-D array."""
    return builder.bitcast(_ptr(context, builder, aryty, ary, ir.Constant(I32, 0)), elem.as_pointer())


def _widen_f16(builder, h):
    return builder.fpext(builder.bitcast(h, _vec(ir.HalfType(), LANES)), _vec(F32, LANES))


def _widen_bf16(builder, h):
    bits = builder.shl(builder.zext(h, _vec(I32, LANES)), ir.Constant(_vec(I32, LANES), [16] * LANES))
    return builder.bitcast(bits, _vec(F32, LANES))


def _sum_lanes(builder, v):
    """Pairwise: 16 -> 8 -> 4 -> 2 -> 1."""
    n = v.type.count
    while n > 1:
        half = n // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(_vec(I32, half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(_vec(I32, half), list(range(half, n))))
        v, n = builder.fadd(lo, hi), half
    return builder.extract_element(v, ir.Constant(I32, 0))


def _row_dot(widen):
    def typer(typingctx, w, x, n, pf):
        if not (isinstance(w, types.Array) and w.dtype == types.uint16 and isinstance(x, types.Array)
                and x.dtype == types.float32):
            return None

        def codegen(context, builder, sig, args):
            wp = _data(context, builder, sig.args[0], args[0], I16)
            xp = _data(context, builder, sig.args[1], args[1], F32)
            acc = cgutils.alloca_once_value(builder, ir.Constant(_vec(F32, LANES), [0.0] * LANES))
            steps = builder.udiv(args[2], ir.Constant(args[2].type, LANES))
            with cgutils.for_range(builder, steps) as loop:
                at = builder.mul(loop.index, ir.Constant(loop.index.type, LANES))
                _prefetch(builder, builder.gep(wp, [at]), args[3])
                h = builder.load(builder.bitcast(builder.gep(wp, [at]), _vec(I16, LANES).as_pointer()), align=1)
                xv = builder.load(builder.bitcast(builder.gep(xp, [at]), _vec(F32, LANES).as_pointer()), align=1)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(widen(builder, h), xv)), acc)
            return _sum_lanes(builder, builder.load(acc))
        return types.float32(w, x, n, types.intp), codegen
    return intrinsic(typer)


dot_f16 = _row_dot(_widen_f16)
dot_bf16 = _row_dot(_widen_bf16)
