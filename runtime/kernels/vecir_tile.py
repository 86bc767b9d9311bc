"""Prompt kernels of the integer dots: 8 weight rows at a time, one row per vector lane.

A prompt multiplies every weight row with many activation rows. The decode kernels (vecir) keep 8
lanes of partial sums per row and add them up at the end, which costs a horizontal sum per output and
unpacks each weight block again for every token. Here a group of 8 rows is first unpacked once into
a buffer laid out for the dot instruction (`unpack8_<t>`): for each block and each 4-value group g,
32 bytes holding values 4g..4g+3 of row 0, then of row 1, ... row 7. A dot instruction (vpdpbusd on
x86 with VNNI, sdot on ARM, generic vector IR elsewhere) with token x's 4 values 4g..4g+3 broadcast to
every lane then adds 4 products into each row's lane, so 8 of them make the 8 rows' exact integer dot
with one block of x; one scaled multiply-add per block and token takes it into the rows' float sums,
and 8 finished outputs are stored side by side (`gemm8x<C>_<t>`, C tokens per call sharing the loaded
weight vectors).

Integer parts are exact; each output is then sum over blocks, in order, of fma(dot_b, d_w * d_x, .),
plus the Q4_1/Q5_1 m * s terms fused in the same order: its bits depend on nothing but the row and
the token (not on C, the thread count or the ISA form). It is not the decode kernels' float order
(those follow ggml's 8-lane one), so prompt and decode logits differ in the last bits, as llama.cpp's
batched and one-token kernels do.

    unpack8_<t>(w, r0, row_bytes, nb, U, D, M)       rows r0..r0+7 of flat block bytes w -> U, D, M
    gemm8x<C>_<t>(U, D, M, nb, xq, t0, xq_bytes, sx, out, out_stride, r0)
        out[(t0 + j) * out_stride + r0 + i] = row r0 + i . activation row t0 + j, i < 8, j < C
U: u8[nb * 256]; D, M: f32[nb * 8] (block scales, Q4_1/Q5_1 mins); sx: i32 [tokens, nb], the sum of each
activation block's 8-bit values (for the VNNI form's unsigned weights, see vecir.quads_vnni).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.runtime.kernels import vecir as v
from ggq.runtime.kernels import vecir_isa as isa
from ggq.runtime.kernels.vecir_isa import I8, I32, _bytes, _concat, _load, _slice, _vec, _vec_undef, _zeros

F32 = v.F32
GROUP = 8          # rows per group: one per lane of a 256-bit vector of int32
UNSIGNED = isa.HAVE_VNNI and not isa.HAVE_SDOT   # vpdpbusd takes the weights as u8, plus an offset term


def _splat_vec(builder, s, ty, n=GROUP):
    one = builder.insert_element(_vec_undef(ty, n), s, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, _vec_undef(ty, n), ir.Constant(_vec(I32, n), [0] * n))


def _dot4(builder, acc, a, x):
    """acc (<8 x i32>) + per lane l: sum of the 4 products of bytes 4l..4l+3 of a and x (<32 x i8>):
    vpdpbusd (a unsigned), two NEON sdots (a signed) or generic IR (a signed)."""
    if isa.HAVE_SDOT:
        lo = isa._sdot(builder, _slice(builder, acc, 0, 4), _slice(builder, a, 0, 16), _slice(builder, x, 0, 16))
        hi = isa._sdot(builder, _slice(builder, acc, 4, 4), _slice(builder, a, 16, 16), _slice(builder, x, 16, 16))
        return _concat(builder, lo, hi)
    if UNSIGNED:
        return isa._vpdpbusd(builder, acc, a, x)
    pairs = v._pair_sums(builder, a, x)
    even = builder.shuffle_vector(pairs, pairs, ir.Constant(_vec(I32, 8), list(range(0, 16, 2))))
    odd = builder.shuffle_vector(pairs, pairs, ir.Constant(_vec(I32, 8), list(range(1, 16, 2))))
    return builder.add(acc, builder.add(even, odd))


def _offset(kind):
    """What the stored unsigned values exceed ggml's by, where the VNNI form runs (else 0)."""
    if not UNSIGNED:
        return 0
    return 128 if kind == "q8_0" else v.LEGACY_LAYOUT[kind][4]


def _f32_ptr(context, builder, aryty, ary):
    return builder.bitcast(context.make_array(aryty)(context, builder, ary).data, F32.as_pointer())


def legacy_unpack(kind):
    """Intrinsic unpack8_<kind>(w, r0, rb, nb, U, D, M) (module docstring)."""
    ws, at_m = v.LEGACY_LAYOUT[kind][:2]

    def typer(typingctx, w, r0, rb, nb, U, D, M):
        def codegen(context, builder, sig, args):
            w_arr, r0_v, rb_v, nb_v, u_arr, d_arr, m_arr = args
            rows = [v._ptr(context, builder, sig.args[0], w_arr,
                           builder.mul(builder.add(r0_v, ir.Constant(r0_v.type, i)), rb_v)) for i in range(GROUP)]
            up = v._ptr(context, builder, sig.args[4], u_arr, ir.Constant(nb_v.type, 0))
            dp, mp = _f32_ptr(context, builder, sig.args[5], d_arr), _f32_ptr(context, builder, sig.args[6], m_arr)
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                for i, row in enumerate(rows):
                    wp = builder.gep(row, [builder.mul(b, ir.Constant(b.type, ws))])
                    quads = builder.bitcast(v._legacy_values(builder, wp, kind, UNSIGNED), _vec(I32, 8))
                    for g in range(8):
                        at = builder.add(builder.mul(b, ir.Constant(b.type, 256)), ir.Constant(b.type, 32 * g + 4 * i))
                        dst = builder.bitcast(builder.gep(up, [at]), I32.as_pointer())
                        builder.store(builder.extract_element(quads, ir.Constant(I32, g)), dst, align=1)
                    slot = builder.add(builder.mul(b, ir.Constant(b.type, GROUP)), ir.Constant(b.type, i))
                    builder.store(v._half_at(builder, wp, 0), builder.gep(dp, [slot]))
                    if at_m is not None:
                        builder.store(v._half_at(builder, wp, at_m), builder.gep(mp, [slot]))
            return context.get_dummy_value()
        return types.none(w, types.intp, types.intp, types.intp, U, D, M), codegen
    return intrinsic(typer)


def legacy_gemm(kind, n_toks):
    """Intrinsic gemm8x<n_toks>_<kind>(U, D, M, nb, xq, t0, xrb, sx, out, stride, r0) (module docstring)."""
    at_m, xs = v.LEGACY_LAYOUT[kind][1], v.LEGACY_LAYOUT[kind][5]
    xq_at, offset = (2 if xs == 34 else 4), _offset(kind)

    def typer(typingctx, U, D, M, nb, x, t0, xrb, sx, out, stride, r0):
        def codegen(context, builder, sig, args):
            u_arr, d_arr, m_arr, nb_v, x_arr, t0_v, xrb_v, sx_arr, out_arr, stride_v, r0_v = args
            up = v._ptr(context, builder, sig.args[0], u_arr, ir.Constant(nb_v.type, 0))
            dp, mp = _f32_ptr(context, builder, sig.args[1], d_arr), _f32_ptr(context, builder, sig.args[2], m_arr)
            toks = [builder.add(t0_v, ir.Constant(t0_v.type, j)) for j in range(n_toks)]
            xps = [v._ptr(context, builder, sig.args[4], x_arr, builder.mul(t, xrb_v)) for t in toks]
            sxp = builder.bitcast(context.make_array(sig.args[7])(context, builder, sx_arr).data, I32.as_pointer())
            zero8 = ir.Constant(_vec(F32, GROUP), [0.0] * GROUP)
            accs = [cgutils.alloca_once_value(builder, zero8) for _ in toks]
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                ub = builder.gep(up, [builder.mul(b, ir.Constant(b.type, 256))])
                weights = [_bytes(builder, ub, 32, 32 * g) for g in range(8)]
                slot = builder.mul(b, ir.Constant(b.type, GROUP))
                dw = _load(builder, builder.gep(dp, [slot]), _vec(F32, GROUP))
                mw = _load(builder, builder.gep(mp, [slot]), _vec(F32, GROUP)) if at_m is not None else None
                for j, (t, xp0) in enumerate(zip(toks, xps)):
                    xp = builder.gep(xp0, [builder.mul(b, ir.Constant(b.type, xs))])
                    dot = _zeros(I32, GROUP)
                    if offset:
                        s = _load(builder, builder.gep(sxp, [builder.add(builder.mul(t, nb_v), b)]), I32)
                        dot = _splat_vec(builder, builder.mul(s, ir.Constant(I32, -offset)), I32)
                    for g in range(8):
                        xg = _splat_vec(builder, _load(builder, builder.gep(xp, [ir.Constant(I32, xq_at + 4 * g)]), I32), I32)
                        dot = _dot4(builder, dot, weights[g], builder.bitcast(xg, _vec(I8, 32)))
                    d = builder.fmul(dw, _splat_vec(builder, v._half_at(builder, xp, 0), F32))
                    acc = v._fma(builder, d, builder.sitofp(dot, _vec(F32, GROUP)), builder.load(accs[j]))
                    if at_m is not None:
                        acc = v._fma(builder, mw, _splat_vec(builder, v._half_at(builder, xp, 2), F32), acc)
                    builder.store(acc, accs[j])
            op = _f32_ptr(context, builder, sig.args[8], out_arr)
            for t, acc in zip(toks, accs):
                dst = builder.gep(op, [builder.add(builder.mul(t, stride_v), r0_v)])
                builder.store(builder.load(acc), builder.bitcast(dst, _vec(F32, GROUP).as_pointer()), align=4)
            return context.get_dummy_value()
        return types.none(U, D, M, types.intp, x, types.intp, types.intp, sx, out, types.intp, types.intp), codegen
    return intrinsic(typer)


# Tokens per gemm call: 4 share each loaded weight vector (8 weight vectors, 4 accumulators and 4 dot
# chains stay in registers: 32 on AVX-512 and NEON); gemm8x1 takes a batch's last tokens.
TILE_TOKENS = 4
unpack8_q4_0, unpack8_q4_1, unpack8_q5_0, unpack8_q5_1, unpack8_q8_0 = (legacy_unpack(k) for k in v.LEGACY_KINDS)
gemm8x4_q4_0, gemm8x4_q4_1, gemm8x4_q5_0, gemm8x4_q5_1, gemm8x4_q8_0 = (
    legacy_gemm(k, TILE_TOKENS) for k in v.LEGACY_KINDS)
gemm8x1_q4_0, gemm8x1_q4_1, gemm8x1_q5_0, gemm8x1_q5_1, gemm8x1_q8_0 = (legacy_gemm(k, 1) for k in v.LEGACY_KINDS)
