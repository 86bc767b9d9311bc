"""Legacy-block matvec rows two to a 512-bit vector (x86 with AVX512-VNNI and AVX512-BW).

vecir._legacy_rows keeps each row's 8 float lanes in a 256-bit vector and spends about a dozen vector
instructions per row and block: unpack, vpdpbusd, offset correction, int-to-float, the scale
d = d_w * d_x broadcast, fused multiply-add. That is the limit of a Q4_0 row on a core whose memory
keeps up (about 1 G blocks a second a thread on Zen 5, 18 GB/s). Here rows go in pairs: lanes 0-7 of
one <16 x f32> belong to the first row, 8-15 to the second, so one 512-bit vpdpbusd, one conversion and
one fma serve both, the two rows' nibbles unpack in one 256-bit step, and the activation block's
offset term is computed once and starts the integer sum instead of being subtracted from it.

Every lane does exactly what it does in vecir._legacy_rows (the same exact integer quads, the same
float product d_w * d_x, the same fma into its own accumulator, the same hsum_float_8 per row), so the
results are the same bits; only which instructions carry the lanes differs. Whether pairs are faster
depends on the core (Zen 4 splits 512-bit work in two halves; Intel may lower its clock), so they are
separate kernel shapes (shapes.LEGACY_PAIRED_STEPS) that runtime/tune.py measures against the others.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.runtime.kernels import vecir as v
from ggq.runtime.kernels import vecir_isa as isa
from ggq.runtime.kernels.vecir_isa import I8, I32, _bytes, _concat, _splat, _vec, _zeros

F32 = v.F32
# low nibbles of row A, its high nibbles, then row B's: from lo = [A | B] & 15 and hi = [A | B] >> 4
_PAIR_NIBBLES = list(range(0, 16)) + list(range(32, 48)) + list(range(16, 32)) + list(range(48, 64))


def _pair_values(builder, wa, wb, kind):
    """<64 x i8>: the unsigned stored values of one block of row A (bytes 0-31) and of row B (32-63),
    as vecir._legacy_values(..., unsigned=True) gives each."""
    _, _, at_qh, at_qs, _, _ = v.LEGACY_LAYOUT[kind]
    if kind == "q8_0":
        a = _concat(builder, _bytes(builder, wa, 32, at_qs), _bytes(builder, wb, 32, at_qs))
        return builder.xor(a, _splat(I8, 64, 128))
    q = _concat(builder, _bytes(builder, wa, 16, at_qs), _bytes(builder, wb, 16, at_qs))
    lo, hi = builder.and_(q, _splat(I8, 32, 15)), builder.lshr(q, _splat(I8, 32, 4))
    a = builder.shuffle_vector(lo, hi, ir.Constant(_vec(I32, 64), _PAIR_NIBBLES))
    if at_qh is not None:
        bits = [v._qh32_bits(builder, builder.gep(w, [ir.Constant(I32, at_qh)])) for w in (wa, wb)]
        a = builder.or_(a, _concat(builder, *bits))
    return a


def _offset_start(builder, xv, kind):
    """<16 x i32>: -offset * (quads of x alone), the VNNI form's correction, where the sum starts."""
    offset = 128 if kind == "q8_0" else v.LEGACY_LAYOUT[kind][4]
    if not offset:
        return _zeros(I32, 16)
    sum_x = isa.quads_vnni(builder, _splat(I8, 32, 1), xv, 0)
    neg = builder.mul(sum_x, _splat(I32, 8, -offset))
    return _concat(builder, neg, neg)


def _pair_scales(builder, wa, wb, dx):
    """<16 x f32>: d_wA * d_x in lanes 0-7, d_wB * d_x in 8-15 (each one float product, as per row)."""
    dw = builder.insert_element(builder.insert_element(ir.Constant(_vec(F32, 2), ir.Undefined),
                                                       v._half_at(builder, wa, 0), ir.Constant(I32, 0)),
                                v._half_at(builder, wb, 0), ir.Constant(I32, 1))
    d = builder.fmul(dw, _splat_f32(builder, dx, 2))
    return builder.shuffle_vector(d, d, ir.Constant(_vec(I32, 16), [0] * 8 + [1] * 8))


def _splat_f32(builder, s, n):
    one = builder.insert_element(ir.Constant(_vec(F32, n), ir.Undefined), s, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(_vec(I32, n), [0] * n))


def _store_pair(builder, acc, summs, out_p, index):
    """out[index], out[index + 1] = hsum_float_8 of each row's 8 lanes (+ its m * s sum)."""
    for half in range(2):
        total = v._hsum_float_8(builder, isa._slice(builder, acc, 8 * half, 8))
        if summs is not None:
            total = builder.fadd(total, builder.load(summs[half]))
        builder.store(total, builder.gep(out_p, [builder.add(index, ir.Constant(index.type, half))]))


def paired_legacy_rows(kind, n_rows):
    """Intrinsic (w, r0, row_bytes, x, nb, out, pf) as vecir._legacy_rows(kind, n_rows), with rows r0 + 2i
    and r0 + 2i + 1 sharing 512-bit vectors (n_rows even)."""
    ws, at_m, _, _, _, xs = v.LEGACY_LAYOUT[kind]
    xq_at = 2 if xs == 34 else 4

    def typer(typingctx, w, r0, row_bytes, x, nb, out, pf):
        if not v._i8_arrays(w, x):
            return None

        def codegen(context, builder, sig, args):
            w_arr, r0_v, rb, x_arr, nb_v, out_arr, pf_v = args
            xp0 = v._ptr(context, builder, sig.args[3], x_arr, ir.Constant(nb_v.type, 0))
            rows = [v._ptr(context, builder, sig.args[0], w_arr,
                           builder.mul(builder.add(r0_v, ir.Constant(r0_v.type, i)), rb)) for i in range(n_rows)]
            accs = [cgutils.alloca_once_value(builder, ir.Constant(_vec(F32, 16), [0.0] * 16))
                    for _ in range(n_rows // 2)]
            summs = [cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0)) for _ in rows]
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                xp = builder.gep(xp0, [builder.mul(b, ir.Constant(b.type, xs))])
                xv, dx = _bytes(builder, xp, 32, xq_at), v._half_at(builder, xp, 0)
                x64, start = _concat(builder, xv, xv), _offset_start(builder, xv, kind)
                sx = v._half_at(builder, xp, 2) if at_m is not None else None
                for p, acc in enumerate(accs):
                    wa, wb = (builder.gep(rows[2 * p + i], [builder.mul(b, ir.Constant(b.type, ws))]) for i in (0, 1))
                    v._prefetch(builder, wa, pf_v)
                    v._prefetch(builder, wb, pf_v)
                    quads = isa.quads_vnni_zmm(builder, start, _pair_values(builder, wa, wb, kind), x64)
                    lanes = builder.sitofp(quads, _vec(F32, 16))
                    builder.store(v._fma(builder, _pair_scales(builder, wa, wb, dx), lanes, builder.load(acc)), acc)
                    if at_m is not None:
                        for i, wp in ((0, wa), (1, wb)):
                            s = summs[2 * p + i]
                            builder.store(v._fma(builder, v._half_at(builder, wp, at_m), sx, builder.load(s)), s)
            out_p = context.make_array(sig.args[5])(context, builder, out_arr).data
            for p, acc in enumerate(accs):
                pair_summs = summs[2 * p:2 * p + 2] if at_m is not None else None
                _store_pair(builder, builder.load(acc), pair_summs, out_p,
                            builder.add(r0_v, ir.Constant(r0_v.type, 2 * p)))
            return context.get_dummy_value()
        return types.none(w, types.intp, types.intp, x, types.intp, out, types.intp), codegen
    return intrinsic(typer)


def _paired_or_not(kind, n_rows):
    """The paired form where the CPU has it; elsewhere the 256-bit rows of the same count (the same
    bits), so that every kernel compiles on every host; the tuner offers pairs only where they exist."""
    return paired_legacy_rows(kind, n_rows) if isa.HAVE_ZMM_VNNI else v._legacy_rows(kind, n_rows)


# rows per step: shapes.LEGACY_PAIRED_STEPS
pairs2_q4_0, pairs2_q4_1, pairs2_q5_0, pairs2_q5_1, pairs2_q8_0 = (_paired_or_not(k, 2) for k in v.LEGACY_KINDS)
pairs8_q4_0, pairs8_q4_1, pairs8_q5_0, pairs8_q5_1, pairs8_q8_0 = (_paired_or_not(k, 8) for k in v.LEGACY_KINDS)
