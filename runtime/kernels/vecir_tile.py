"""Prompt kernels of the integer dots: GROUP weight rows at a time, one row per vector lane.

A prompt multiplies every weight row with many activation rows. The decode kernels (vecir) keep 8
lanes of partial sums per row and add them up at the end, which costs a horizontal sum per output and
unpacks each weight block again for every token. Here a group of GROUP rows (16 where the CPU has
AVX-512 VNNI: one 512-bit vector of int32; else 8) is first unpacked once into a buffer laid out for
the dot instruction (`unpack8_<t>`): for each block and each 4-value group g, 4 * GROUP bytes holding
values 4g..4g+3 of row 0, then of row 1, ... A dot instruction (vpdpbusd on x86 with VNNI, sdot on
ARM, generic vector IR elsewhere) with token x's 4 values 4g..4g+3 broadcast to every lane then adds
4 products into each row's lane, so 8 of them make the rows' exact integer dots with one block of x;
one scaled multiply-add per block and token takes them into the rows' float sums, and GROUP finished
outputs are stored side by side (`gemm8x<C>_<t>`, C tokens per call sharing the loaded weight vectors).
On Zen 5, 16 rows ran the legacy types 1.8x faster than 8 (k-quants: the same); on cores that split
512-bit work in two (Zen 4) it is a guess that they are no slower.

Integer parts are exact; each output is then sum over blocks, in order, of fma(dot_b, d_w * d_x, .),
plus the Q4_1/Q5_1 m * s terms fused in the same order: its bits depend on nothing but the row and
the token (not on C, GROUP, the thread count or the ISA form). It is not the decode kernels' float order
(those follow ggml's 8-lane one), so prompt and decode logits differ in the last bits, as llama.cpp's
batched and one-token kernels do.

    unpack8_<t>(w, r0, row_bytes, nb, U, D, M)       rows r0..r0+GROUP-1 of flat block bytes w -> U, D, M
    gemm8x<C>_<t>(U, D, M, nb, xq, t0, n_tok, xq_bytes, sx, out, out_stride, r0)
        out[(t0 + j) * out_stride + r0 + i] = row r0 + i . activation row t0 + j, i < GROUP, j < C
        (token indices past n_tok - 1 are clamped to it)
U: u8[nb * BLOCK]; D, M: f32[nb * GROUP] (block scales, Q4_1/Q5_1 mins); sx: i32 [tokens, nb], the sum
of each activation block's 8-bit values (for the VNNI form's unsigned weights, see vecir.quads_vnni).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.runtime.kernels import vecir as v
from ggq.runtime.kernels import vecir_isa as isa
from ggq.runtime.kernels.vecir_isa import I8, I32, _bytes, _concat, _load, _slice, _vec, _vec_undef, _zeros

F32 = v.F32
# rows per group, one per int32 lane: 16 (512-bit vectors) where the CPU has AVX-512 VNNI, else 8
# (256-bit: AVX2, AVX-VNNI; NEON and the generic IR split them). GGQ_TILE_ROWS=8 forces 8 (tests, A/B;
# like vecir_isa's switches, Numba's cache does not key on it: one NUMBA_CACHE_DIR per setting).
WIDE = "+avx512vnni" in isa._FEATURES and isa.HAVE_VNNI and os.environ.get("GGQ_TILE_ROWS") != "8"
GROUP = 16 if WIDE else 8
GROUP_BYTES = 4 * GROUP   # one 4-value group of every row of the group
BLOCK = 8 * GROUP_BYTES   # unpacked bytes per 32-value block
UNSIGNED = isa.HAVE_VNNI and not isa.HAVE_SDOT   # vpdpbusd takes the weights as u8, plus an offset term


def describe() -> str:
    """The prompt kernels' shape and form on this CPU, for `ggq bench` and `ggq tune --show`."""
    form = f"vpdpbusd {32 * GROUP}-bit" if UNSIGNED else "sdot" if isa.HAVE_SDOT else "generic IR"
    from ggq.runtime.kernels.float_tile import LANES, TOKENS
    return f"block weights {GROUP} rows x 4 tokens a call ({form}); float weights {LANES} rows x {TOKENS} tokens"


def _splat_vec(builder, s, ty, n=GROUP):
    one = builder.insert_element(_vec_undef(ty, n), s, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, _vec_undef(ty, n), ir.Constant(_vec(I32, n), [0] * n))


def _dot4(builder, acc, a, x):
    """acc (<GROUP x i32>) + per lane l: sum of the 4 products of bytes 4l..4l+3 of a and x
    (<4 GROUP x i8>): vpdpbusd (a unsigned; 512-bit where WIDE), else per 8 lanes: two NEON sdots (a
    signed) or generic IR (a signed)."""
    if UNSIGNED and GROUP == 16:
        return isa._call(builder, "llvm.x86.avx512.vpdpbusd.512", _vec(I32, 16), acc,
                         builder.bitcast(a, _vec(I32, 16)), builder.bitcast(x, _vec(I32, 16)))
    if GROUP == 16:
        lo = _dot4(builder, _slice(builder, acc, 0, 8), _slice(builder, a, 0, 32), _slice(builder, x, 0, 32))
        hi = _dot4(builder, _slice(builder, acc, 8, 8), _slice(builder, a, 32, 32), _slice(builder, x, 32, 32))
        return _concat(builder, lo, hi)
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


@contextmanager
def _row_loop(context, builder, aryty, ary, r0, rb):
    """for i in range(GROUP), as a loop in the code (not unrolled: a fraction of the code to compile):
    yields i and an i8* to row r0 + i of the flat weight bytes."""
    with cgutils.for_range(builder, ir.Constant(r0.type, GROUP)) as loop:
        i = loop.index
        yield i, v._ptr(context, builder, aryty, ary, builder.mul(builder.add(r0, i), rb))


def _at(builder, const, i, scale):
    """const + i * scale, for an index value i."""
    return builder.add(ir.Constant(i.type, const), builder.mul(i, ir.Constant(i.type, scale)))


def _f32_ptr(context, builder, aryty, ary):
    return builder.bitcast(context.make_array(aryty)(context, builder, ary).data, F32.as_pointer())


def legacy_unpack(kind):
    """Intrinsic unpack8_<kind>(w, r0, rb, nb, U, D, M) (module docstring)."""
    ws, at_m = v.LEGACY_LAYOUT[kind][:2]

    def typer(typingctx, w, r0, rb, nb, U, D, M):
        def codegen(context, builder, sig, args):
            w_arr, r0_v, rb_v, nb_v, u_arr, d_arr, m_arr = args
            up = v._ptr(context, builder, sig.args[4], u_arr, ir.Constant(nb_v.type, 0))
            dp, mp = _f32_ptr(context, builder, sig.args[5], d_arr), _f32_ptr(context, builder, sig.args[6], m_arr)
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                with _row_loop(context, builder, sig.args[0], w_arr, r0_v, rb_v) as (i, row):
                    wp = builder.gep(row, [builder.mul(b, ir.Constant(b.type, ws))])
                    quads = builder.bitcast(v._legacy_values(builder, wp, kind, UNSIGNED), _vec(I32, 8))
                    for g in range(8):
                        at = builder.add(builder.mul(b, ir.Constant(b.type, BLOCK)), _at(builder, GROUP_BYTES * g, i, 4))
                        dst = builder.bitcast(builder.gep(up, [at]), I32.as_pointer())
                        builder.store(builder.extract_element(quads, ir.Constant(I32, g)), dst, align=1)
                    slot = builder.add(builder.mul(b, ir.Constant(b.type, GROUP)), i)
                    builder.store(v._half_at(builder, wp, 0), builder.gep(dp, [slot]))
                    if at_m is not None:
                        builder.store(v._half_at(builder, wp, at_m), builder.gep(mp, [slot]))
            return context.get_dummy_value()
        return types.none(w, types.intp, types.intp, types.intp, U, D, M), codegen
    return intrinsic(typer)


def _store_outputs(builder, op, toks, accs, stride, r0):
    """The GROUP finished sums of each token side by side: out[t * stride + r0 ..]."""
    for t, acc in zip(toks, accs):
        dst = builder.gep(op, [builder.add(builder.mul(t, stride), r0)])
        builder.store(builder.load(acc), builder.bitcast(dst, _vec(F32, GROUP).as_pointer()), align=4)


def _tokens(builder, t0, n_tok, n):
    """Token indices t0 .. t0 + n - 1, each clamped to the last token n_tok - 1: a batch's last run of
    fewer than n tokens computes its last token more than once (the same bits, stored to the same
    place), so one compiled width serves every batch size."""
    last = builder.sub(n_tok, ir.Constant(n_tok.type, 1))
    toks = [builder.add(t0, ir.Constant(t0.type, j)) for j in range(n)]
    return [builder.select(builder.icmp_signed("<", t, last), t, last) for t in toks]


def legacy_gemm(kind, n_toks):
    """Intrinsic gemm8x<n_toks>_<kind>(U, D, M, nb, xq, t0, n_tok, xrb, sx, out, stride, r0) (module docstring)."""
    at_m, xs = v.LEGACY_LAYOUT[kind][1], v.LEGACY_LAYOUT[kind][5]
    xq_at, offset = (2 if xs == 34 else 4), _offset(kind)

    def typer(typingctx, U, D, M, nb, x, t0, n_tok, xrb, sx, out, stride, r0):
        def codegen(context, builder, sig, args):
            u_arr, d_arr, m_arr, nb_v, x_arr, t0_v, n_tok_v, xrb_v, sx_arr, out_arr, stride_v, r0_v = args
            up = v._ptr(context, builder, sig.args[0], u_arr, ir.Constant(nb_v.type, 0))
            dp, mp = _f32_ptr(context, builder, sig.args[1], d_arr), _f32_ptr(context, builder, sig.args[2], m_arr)
            toks = _tokens(builder, t0_v, n_tok_v, n_toks)
            xps = [v._ptr(context, builder, sig.args[4], x_arr, builder.mul(t, xrb_v)) for t in toks]
            sxp = builder.bitcast(context.make_array(sig.args[8])(context, builder, sx_arr).data, I32.as_pointer())
            zero8 = ir.Constant(_vec(F32, GROUP), [0.0] * GROUP)
            accs = [cgutils.alloca_once_value(builder, zero8) for _ in toks]
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                ub = builder.gep(up, [builder.mul(b, ir.Constant(b.type, BLOCK))])
                weights = [_bytes(builder, ub, GROUP_BYTES, GROUP_BYTES * g) for g in range(8)]
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
                        dot = _dot4(builder, dot, weights[g], builder.bitcast(xg, _vec(I8, GROUP_BYTES)))
                    d = builder.fmul(dw, _splat_vec(builder, v._half_at(builder, xp, 0), F32))
                    acc = v._fma(builder, d, builder.sitofp(dot, _vec(F32, GROUP)), builder.load(accs[j]))
                    if at_m is not None:
                        acc = v._fma(builder, mw, _splat_vec(builder, v._half_at(builder, xp, 2), F32), acc)
                    builder.store(acc, accs[j])
            _store_outputs(builder, _f32_ptr(context, builder, sig.args[9], out_arr), toks, accs, stride_v, r0_v)
            return context.get_dummy_value()
        return (types.none(U, D, M, types.intp, x, types.intp, types.intp, types.intp, sx, out, types.intp, types.intp),
                codegen)
    return intrinsic(typer)


# Tokens per gemm call: 4 share each loaded weight vector (8 weight vectors, 4 accumulators and 4 dot
# chains stay in registers: 32 on AVX-512 and NEON); a batch's last run of 1-3 tokens repeats its last.
TILE_TOKENS = 4
unpack8_q4_0, unpack8_q4_1, unpack8_q5_0, unpack8_q5_1, unpack8_q8_0 = (legacy_unpack(k) for k in v.LEGACY_KINDS)
gemm8x4_q4_0, gemm8x4_q4_1, gemm8x4_q5_0, gemm8x4_q5_1, gemm8x4_q8_0 = (
    legacy_gemm(k, TILE_TOKENS) for k in v.LEGACY_KINDS)


# ---- k-quants: super-blocks of 256 values with integer sub-block scales ------------------------------
# kind -> (super-block bytes, sub-blocks, offset of d, offset of dmin or None, value offset)
# result = sum over super-blocks of d_x * (d * sum_s scale_s * dot_s - dmin * sum_s min_s * bsum_s), where
# bsum_s is the sum of the activation's 8-bit values over sub-block s (Q8_K's bsums). Q3_K and Q6_K have
# no mins; their value offset, where the VNNI form keeps values unsigned, takes the mins' place with
# min_s = offset * scale_s and the factor d itself, so it is subtracted in integers.
KQUANT_LAYOUT = {
    "q2_k": (84, 16, 80, 82, 0), "q3_k": (110, 16, 108, None, 4), "q4_k": (144, 8, 0, 2, 0),
    "q5_k": (176, 8, 0, 2, 0), "q6_k": (210, 16, 208, None, 32),
}
SB = 64 * GROUP_BYTES  # unpacked bytes per super-block of a row group: 64 groups of 4 values


def _kquant_values(builder, kind, wp, signed_offset):
    chunks = {"q2_k": v._chunks_q2_k, "q3_k": v._chunks_q3_k, "q6_k": v._chunks_q6_k}.get(kind)
    chunks = chunks(builder, wp) if chunks else v._chunks_q45_k(builder, wp, kind == "q5_k")
    if signed_offset:
        chunks = [builder.sub(c, v._splat(I8, 32, signed_offset)) for c in chunks]
    return chunks


def _kquant_scales(builder, kind, wp):
    """(<n_sub x i32> scales, <n_sub x i32> mins or None) of one super-block, sub-blocks in order."""
    if kind == "q2_k":
        q = _bytes(builder, wp, 16)
        return (builder.zext(builder.and_(q, v._splat(I8, 16, 15)), _vec(I32, 16)),
                builder.zext(builder.lshr(q, v._splat(I8, 16, 4)), _vec(I32, 16)))
    if kind == "q3_k":
        return v._scales_q3_k(builder, wp), None
    if kind == "q6_k":
        return builder.sext(_bytes(builder, wp, 16, 192), _vec(I32, 16)), None
    return v._scales_k4(builder, wp)


def kquant_unpack(kind):
    """Intrinsic unpack8_<kind>(w, r0, rb, nsb, U, S, N, D, DM): rows r0..r0+7 into U (values, as the
    legacy unpack lays them out), S (i32 [nsb * n_sub * 8]: scales per sub-block and row), N (i32
    [nsb * 8 * 8]: mins as i16 pairs, _min_pairs), D and DM (f32 [nsb * 8]: d, and -dmin or -d)."""
    wsz, n_sub, at_d, at_dmin, offset = KQUANT_LAYOUT[kind]
    unsigned_offset = offset if UNSIGNED else 0

    def typer(typingctx, w, r0, rb, nsb, U, S, N, D, DM):
        def codegen(context, builder, sig, args):
            w_arr, r0_v, rb_v, nsb_v = args[:4]
            up = v._ptr(context, builder, sig.args[4], args[4], ir.Constant(nsb_v.type, 0))
            sp, np_ = (builder.bitcast(context.make_array(sig.args[k])(context, builder, args[k]).data,
                                       I32.as_pointer()) for k in (5, 6))
            dp, dmp = _f32_ptr(context, builder, sig.args[7], args[7]), _f32_ptr(context, builder, sig.args[8], args[8])
            with cgutils.for_range(builder, nsb_v) as loop:
                b = loop.index
                with _row_loop(context, builder, sig.args[0], w_arr, r0_v, rb_v) as (i, row):
                    wp = builder.gep(row, [builder.mul(b, ir.Constant(b.type, wsz))])
                    for c, chunk in enumerate(_kquant_values(builder, kind, wp, 0 if UNSIGNED else offset)):
                        quads = builder.bitcast(chunk, _vec(I32, 8))
                        for g in range(8):
                            at = builder.add(builder.mul(b, ir.Constant(b.type, SB)),
                                             _at(builder, GROUP_BYTES * (8 * c + g), i, 4))
                            dst = builder.bitcast(builder.gep(up, [at]), I32.as_pointer())
                            builder.store(builder.extract_element(quads, ir.Constant(I32, g)), dst, align=1)
                    scales, mins = _kquant_scales(builder, kind, wp)
                    if mins is None:
                        mins = builder.mul(scales, v._splat(I32, n_sub, unsigned_offset))
                    for s in range(n_sub):
                        slot = builder.add(builder.mul(b, ir.Constant(b.type, n_sub * GROUP)), _at(builder, s * GROUP, i, 1))
                        builder.store(builder.extract_element(scales, ir.Constant(I32, s)), builder.gep(sp, [slot]))
                    for k, packed in enumerate(_min_pairs(builder, mins, n_sub)):
                        slot = builder.add(builder.mul(b, ir.Constant(b.type, 8 * GROUP)), _at(builder, k * GROUP, i, 1))
                        builder.store(packed, builder.gep(np_, [slot]))
                    slot = builder.add(builder.mul(b, ir.Constant(b.type, GROUP)), i)
                    d = v._half_at(builder, wp, at_d)
                    dmin = v._half_at(builder, wp, at_dmin) if at_dmin is not None else d
                    builder.store(d, builder.gep(dp, [slot]))
                    builder.store(builder.fneg(dmin), builder.gep(dmp, [slot]))
            return context.get_dummy_value()
        return types.none(w, types.intp, types.intp, types.intp, U, S, N, D, DM), codegen
    return intrinsic(typer)


def _min_pairs(builder, mins, n_sub):
    """The 8 i32 words of a row's mins, each two i16 for the Q8_K bsums 2k and 2k+1 (sums of 16 values):
    the mins of sub-blocks 2k and 2k+1 (16 sub-blocks) or that of sub-block k twice (8 of 32 values)."""
    words = []
    for k in range(8):
        lo, hi = (2 * k, 2 * k + 1) if n_sub == 16 else (k, k)
        lo_v = builder.and_(builder.extract_element(mins, ir.Constant(I32, lo)), ir.Constant(I32, 0xFFFF))
        hi_v = builder.shl(builder.extract_element(mins, ir.Constant(I32, hi)), ir.Constant(I32, 16))
        words.append(builder.or_(lo_v, hi_v))
    return words


def _dot2_i16(builder, acc, a, b):
    """acc + per lane: a.lo16 * b.lo16 + a.hi16 * b.hi16 (<GROUP x i32> of i16 pairs): vpdpwssd with
    AVX512-VNNI, else generic IR (pmaddwd on x86, smull/addp on ARM)."""
    if isa.HAVE_VNNI:
        return isa._call(builder, f"llvm.x86.avx512.vpdpwssd.{32 * GROUP}", _vec(I32, GROUP), acc, a, b)
    i16s, i32s = _vec(ir.IntType(16), 2 * GROUP), _vec(I32, 2 * GROUP)
    prod = builder.mul(builder.sext(builder.bitcast(a, i16s), i32s), builder.sext(builder.bitcast(b, i16s), i32s))
    even = builder.shuffle_vector(prod, prod, ir.Constant(_vec(I32, GROUP), list(range(0, 2 * GROUP, 2))))
    odd = builder.shuffle_vector(prod, prod, ir.Constant(_vec(I32, GROUP), list(range(1, 2 * GROUP, 2))))
    return builder.add(acc, builder.add(even, odd))


def kquant_gemm(kind, n_toks):
    """Intrinsic gemm8x<n_toks>_<kind>(U, S, N, D, DM, nsb, xq, t0, n_tok, xrb, out, stride, r0): as the legacy
    gemm, per super-block: exact integer sums of scale * dot and min * bsum over the sub-blocks, then
    fma(isum, d * d_x, acc) and fma(imin, -dmin * d_x, acc) (one fma of isum - imin where the factor is d)."""
    n_sub, at_dmin = KQUANT_LAYOUT[kind][1], KQUANT_LAYOUT[kind][3]
    groups, has_mins = 64 // n_sub, at_dmin is not None or UNSIGNED and KQUANT_LAYOUT[kind][4]

    def typer(typingctx, U, S, N, D, DM, nsb, x, t0, n_tok, xrb, out, stride, r0):
        def codegen(context, builder, sig, args):
            nsb_v, x_arr, t0_v, n_tok_v, xrb_v, out_arr, stride_v, r0_v = args[5:]
            up = v._ptr(context, builder, sig.args[0], args[0], ir.Constant(nsb_v.type, 0))
            sp, np_ = (builder.bitcast(context.make_array(sig.args[k])(context, builder, args[k]).data,
                                       I32.as_pointer()) for k in (1, 2))
            dp, dmp = _f32_ptr(context, builder, sig.args[3], args[3]), _f32_ptr(context, builder, sig.args[4], args[4])
            toks = _tokens(builder, t0_v, n_tok_v, n_toks)
            xps = [v._ptr(context, builder, sig.args[6], x_arr, builder.mul(t, xrb_v)) for t in toks]
            zero8 = ir.Constant(_vec(F32, GROUP), [0.0] * GROUP)
            accs = [cgutils.alloca_once_value(builder, zero8) for _ in toks]
            vec_i32 = _vec(I32, GROUP).as_pointer()
            with cgutils.for_range(builder, nsb_v) as loop:
                b = loop.index
                ub = builder.gep(up, [builder.mul(b, ir.Constant(b.type, SB))])
                xbs = [builder.gep(xp, [builder.mul(b, ir.Constant(b.type, 292))]) for xp in xps]
                isums = [cgutils.alloca_once_value(builder, _zeros(I32, GROUP)) for _ in toks]
                for ptr in isums:
                    builder.store(_zeros(I32, GROUP), ptr)
                # sub-blocks as a loop, not unrolled: a fraction of the code to compile, at the same speed
                with cgutils.for_range(builder, ir.Constant(b.type, n_sub)) as sub:
                    s = sub.index
                    slot = builder.add(builder.mul(b, ir.Constant(b.type, n_sub * GROUP)),
                                       builder.mul(s, ir.Constant(b.type, GROUP)))
                    scale = builder.load(builder.bitcast(builder.gep(sp, [slot]), vec_i32), align=4)
                    first = builder.mul(s, ir.Constant(b.type, groups))  # the sub-block's first group of 4
                    wb = builder.gep(ub, [builder.mul(first, ir.Constant(b.type, GROUP_BYTES))])
                    weights = [_bytes(builder, wb, GROUP_BYTES, GROUP_BYTES * g) for g in range(groups)]
                    for j, xb in enumerate(xbs):
                        xs_ = builder.gep(xb, [builder.add(builder.mul(first, ir.Constant(b.type, 4)), ir.Constant(b.type, 4))])
                        dot = _zeros(I32, GROUP)
                        for g in range(groups):
                            xg = _splat_vec(builder, _load(builder, builder.gep(xs_, [ir.Constant(I32, 4 * g)]), I32), I32)
                            dot = _dot4(builder, dot, weights[g], builder.bitcast(xg, _vec(I8, GROUP_BYTES)))
                        builder.store(builder.add(builder.load(isums[j]), builder.mul(dot, scale)), isums[j])
                isums = [builder.load(p) for p in isums]
                imins = [_zeros(I32, GROUP) for _ in toks]
                if has_mins:  # sum_s min_s * bsum_s: 8 dots of i16 pairs against the 16 bsums, per token
                    mslot = builder.mul(b, ir.Constant(b.type, 8 * GROUP))
                    pairs = [builder.load(builder.bitcast(builder.gep(np_, [builder.add(mslot, ir.Constant(b.type, k * GROUP))]),
                                                          vec_i32), align=4) for k in range(8)]
                    for j, xb in enumerate(xbs):
                        for k, packed in enumerate(pairs):
                            bs = _load(builder, builder.gep(xb, [ir.Constant(I32, 260 + 4 * k)]), I32)
                            imins[j] = _dot2_i16(builder, imins[j], packed, _splat_vec(builder, bs, I32))
                slot = builder.mul(b, ir.Constant(b.type, GROUP))
                d = _load(builder, builder.gep(dp, [slot]), _vec(F32, GROUP))
                neg_dmin = _load(builder, builder.gep(dmp, [slot]), _vec(F32, GROUP))
                for j, xb in enumerate(xbs):
                    dx = _splat_vec(builder, _load(builder, xb, F32), F32)
                    acc = builder.load(accs[j])
                    if has_mins and at_dmin is None:   # the offset term: d is its factor too
                        isums[j] = builder.sub(isums[j], imins[j])
                    acc = v._fma(builder, builder.fmul(d, dx), builder.sitofp(isums[j], _vec(F32, GROUP)), acc)
                    if has_mins and at_dmin is not None:
                        acc = v._fma(builder, builder.fmul(neg_dmin, dx), builder.sitofp(imins[j], _vec(F32, GROUP)), acc)
                    builder.store(acc, accs[j])
            _store_outputs(builder, _f32_ptr(context, builder, sig.args[10], out_arr), toks, accs, stride_v, r0_v)
            return context.get_dummy_value()
        return (types.none(U, S, N, D, DM, types.intp, x, types.intp, types.intp, types.intp, out, types.intp,
                           types.intp),
                codegen)
    return intrinsic(typer)


KQUANT_KINDS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
unpack8_q2_k, unpack8_q3_k, unpack8_q4_k, unpack8_q5_k, unpack8_q6_k = (kquant_unpack(k) for k in KQUANT_KINDS)
gemm8x4_q2_k, gemm8x4_q3_k, gemm8x4_q4_k, gemm8x4_q5_k, gemm8x4_q6_k = (
    kquant_gemm(k, TILE_TOKENS) for k in KQUANT_KINDS)
