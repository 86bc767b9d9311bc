"""LLVM vector IR building blocks for the integer dot-product kernels (dot_legacy, dot_kquants).

Numba does not vectorize byte-unpacking loops well (0.5-1 GB/s), so each block's integer work is written
here as a Numba intrinsic that emits LLVM vector IR directly: load the block's bytes as <N x i8>,
unpack nibbles / high bits with shifts, masks and shuffles, multiply with the int8 activations in i16
and reduce in i32. LLVM lowers this generic IR for any host (SSE/AVX2/AVX-512, NEON); where the target
CPU has a dot instruction (x86 vpdpbusd / pmaddubsw, ARM sdot), vecir_isa's form of the same sums is used
instead. Since every result is an exact integer sum, the grouping of the additions does not matter: the
results equal ggml's scalar vec_dot_* loops bit for bit on every host. Float work (block scales) stays in
ggml's order, the same for all forms.

Every intrinsic takes 1-D contiguous arrays plus byte offsets (intp) into them; no bounds checks.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ggq.qtypes import QTYPES
from ggq.runtime.kernels import vecir_isa as isa
from ggq.runtime.kernels.vecir_isa import (I8, I16, I32, _bytes, _concat, _load, _shuffle, _signed, _slice, _splat,
                                           _vec, _vec_undef)

F32 = ir.FloatType()


def _ptr(context, builder, aryty, ary, offset):
    """i8* to byte `offset` of a 1-D array's data."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(builder.bitcast(data, I8.as_pointer()), [offset])


def _reduce_add(builder, v):
    n, width = v.type.count, v.type.element.width
    fnty = ir.FunctionType(v.type.element, [v.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.vector.reduce.add.v{n}i{width}")
    return builder.call(fn, [v])


def _fold8(builder, v):
    """Sum a 16- or 32-element vector down to 8 elements: element l gets v[l] + v[l+8] + ..."""
    parts = [_slice(builder, v, k, 8) for k in range(0, v.type.count, 8)]
    acc = parts[0]
    for part in parts[1:]:
        acc = builder.add(acc, part)
    return acc


def _nibbles(builder, q):
    """<16 x i8> packed bytes -> <32 x i8>: low nibbles then high nibbles (ggml's 32-value blocks)."""
    lo = builder.and_(q, _splat(I8, 16, 15))
    hi = builder.lshr(q, _splat(I8, 16, 4))
    return _concat(builder, lo, hi)


def _bit_select(builder, bits, masks, value):
    """<n x i8>: value where bits & masks != 0, else 0 (bits and masks vectors of one int type)."""
    n = bits.type.count
    on = builder.icmp_unsigned("!=", builder.and_(bits, masks), ir.Constant(bits.type, [0] * n))
    return builder.select(on, _splat(I8, n, value), _splat(I8, n, 0))


def _qh32_bits(builder, p):
    """Q5_0/Q5_1: bit e of the little-endian u32 at p, as 16 or 0 for the 32 values e of the block
    (byte e of a broadcast of the 4 bytes, tested against bit e % 8)."""
    qh = _bytes(builder, p, 4)
    spread = builder.shuffle_vector(qh, _vec_undef(I8, 4), ir.Constant(_vec(I32, 32), [e // 8 for e in range(32)]))
    masks = ir.Constant(_vec(I8, 32), [_signed(I8, 1 << (e % 8)) for e in range(32)])
    return _bit_select(builder, spread, masks, 16)


def _i8_arrays(*arrays):
    return all(isinstance(a, types.Array) and a.ndim == 1 for a in arrays)


# ---- scalars --------------------------------------------------------------------------------------
@intrinsic
def f16_at(typingctx, a, off):
    """float32 of the IEEE half stored little-endian at byte off of a (exact widening)."""
    def codegen(context, builder, sig, args):
        h = _load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]), ir.IntType(16))
        return builder.fpext(builder.bitcast(h, ir.HalfType()), F32)
    return types.float32(a, types.intp), codegen


@intrinsic
def f32_at(typingctx, a, off):
    """float32 stored little-endian at byte off of a."""
    def codegen(context, builder, sig, args):
        return _load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]), F32)
    return types.float32(a, types.intp), codegen


@intrinsic
def i16_at(typingctx, a, off):
    """int16 stored little-endian at byte off of a, widened to int32."""
    def codegen(context, builder, sig, args):
        return builder.sext(_load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]),
                                  ir.IntType(16)), I32)
    return types.int32(a, types.intp), codegen


# ---- 32-value blocks × Q8_0/Q8_1 activations --------------------------------------------------
# kind -> (weight block bytes, offset of m or None, offset of qh or None, offset of qs, value offset,
#          activation block bytes)
LEGACY_LAYOUT = {
    "q4_0": (18, None, None, 2, 8, 34), "q4_1": (20, 2, None, 4, 0, 36),
    "q5_0": (22, None, 2, 6, 16, 34), "q5_1": (24, 2, 4, 8, 0, 36), "q8_0": (34, None, None, 2, 0, 34),
}


def _pair_sums(builder, a, x):
    """<16 x i32> of a[2i]*x[2i] + a[2i+1]*x[2i+1] for <32 x i8> a, x, written as LLVM's x86 backend
    matches pmaddwd (sign-extend to i16 first, then even/odd halves extended to i32)."""
    a16, x16 = builder.sext(a, _vec(I16, 32)), builder.sext(x, _vec(I16, 32))

    def half(v, start):
        sel = builder.shuffle_vector(v, v, ir.Constant(_vec(I32, 16), list(range(start, 32, 2))))
        return builder.sext(sel, _vec(I32, 16))
    return builder.add(builder.mul(half(a16, 0), half(x16, 0)), builder.mul(half(a16, 1), half(x16, 1)))


def _legacy_values(builder, wp, kind, unsigned):
    """<32 x i8> values of the weight block at wp: signed (value offset applied), or unsigned as stored
    (Q8_0: flipped by 128) for the VNNI form (u8 x i8), which subtracts offset * sum(x) afterwards."""
    _, _, at_qh, at_qs, offset, _ = LEGACY_LAYOUT[kind]
    if kind == "q8_0":
        a = _bytes(builder, wp, 32, at_qs)
        return builder.xor(a, _splat(I8, 32, 128)) if unsigned else a
    a = _nibbles(builder, _bytes(builder, wp, 16, at_qs))
    if at_qh is not None:
        a = builder.or_(a, _qh32_bits(builder, builder.gep(wp, [ir.Constant(I32, at_qh)])))
    return builder.sub(a, _splat(I8, 32, offset)) if offset and not unsigned else a


def _block_quads(builder, wp, xv, kind):
    """<8 x i32>, lane l = the exact integer sum of value_j * x_j over bytes j = 4l..4l+3 of one block
    (ggml's x86 grouping; any grouping of these integer adds gives the same lanes)."""
    unsigned = isa.HAVE_VNNI and not isa.HAVE_SDOT
    return _quads_of(builder, _legacy_values(builder, wp, kind, unsigned), xv, kind)


def _quads_of(builder, values, xv, kind):
    """_block_quads of a block's values from _legacy_values (unsigned exactly where the VNNI form runs),
    so that a tile unpacks each weight block once for several activation rows."""
    if isa.HAVE_SDOT:
        return isa.quads_sdot(builder, values, xv)
    if isa.HAVE_VNNI:
        offset = 128 if kind == "q8_0" else LEGACY_LAYOUT[kind][4]
        return isa.quads_vnni(builder, values, xv, offset)
    # generic IR: <16 x i32> pair sums, folded as x86's pmaddubsw + pmaddwd-with-ones group them
    partials = _pair_sums(builder, values, xv)
    even = builder.shuffle_vector(partials, partials, ir.Constant(_vec(I32, 8), list(range(0, 16, 2))))
    odd = builder.shuffle_vector(partials, partials, ir.Constant(_vec(I32, 8), list(range(1, 16, 2))))
    return builder.add(even, odd)


def _fma(builder, a, b, c):
    fnty = ir.FunctionType(a.type, [a.type] * 3)
    name = f"llvm.fma.v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "llvm.fma.f32"
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [a, b, c])


def _prefetch(builder, p, distance):
    """Ask for the cache line `distance` bytes past p (an i64 value; read, keep in every level).
    Unconditional: at distance 0 it asks for a line being loaded anyway (a spare uop), where a branch
    around it made LLVM keep two versions of every kernel loop (a cold start 10 s longer)."""
    i8p = ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    target = builder.gep(builder.bitcast(p, i8p), [distance])
    builder.call(fn, [target, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def _hsum_float_8(builder, v):
    """ggml's hsum_float_8: (high 4 + low 4), then (r0 + r2) + (r1 + r3)."""
    def pick(vec, idx):
        return builder.shuffle_vector(vec, vec, ir.Constant(_vec(I32, len(idx)), idx))
    r = builder.fadd(pick(v, [4, 5, 6, 7]), pick(v, [0, 1, 2, 3]))
    s = builder.fadd(pick(r, [0, 1]), pick(r, [2, 3]))
    return builder.fadd(builder.extract_element(s, ir.Constant(I32, 0)), builder.extract_element(s, ir.Constant(I32, 1)))


def _legacy_rows(kind, n_rows):
    """Intrinsic (w, r0, row_bytes, x, nb, out): out[r0 + i] for the n_rows rows from r0 of the flat
    weight bytes w, each the dot of its nb blocks with the activation row x in ggml-cpu's x86 (AVX2/
    AVX-512) order: per block 8 float lanes of exact integer sums times d = d_w * d_x, fused-multiply-
    added into 8 accumulators; one hsum_float_8 at the end; for Q4_1/Q5_1 the m * s terms summed on the
    side (fused, as GCC contracts `summs += m * s`) and added last. Several rows share each activation
    block and keep independent accumulator chains, which the out-of-order core overlaps."""
    ws, at_m, _, _, _, xs = LEGACY_LAYOUT[kind]
    xq_at = 2 if xs == 34 else 4

    def typer(typingctx, w, r0, row_bytes, x, nb, out, pf):
        if not _i8_arrays(w, x):
            return None

        def codegen(context, builder, sig, args):
            w_arr, r0_v, rb, x_arr, nb_v, out_arr, pf_v = args
            xp0 = _ptr(context, builder, sig.args[3], x_arr, ir.Constant(nb_v.type, 0))
            rows = [_ptr(context, builder, sig.args[0], w_arr,
                         builder.mul(builder.add(r0_v, ir.Constant(r0_v.type, i)), rb)) for i in range(n_rows)]
            accs = [cgutils.alloca_once_value(builder, ir.Constant(_vec(F32, 8), [0.0] * 8)) for _ in rows]
            summs = [cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0)) for _ in rows]
            with cgutils.for_range(builder, nb_v) as loop:
                b = loop.index
                xp = builder.gep(xp0, [builder.mul(b, ir.Constant(b.type, xs))])
                xv, dx = _bytes(builder, xp, 32, xq_at), _half_at(builder, xp, 0)
                sx = _half_at(builder, xp, 2) if at_m is not None else None
                for row, acc, summ in zip(rows, accs, summs):
                    wp = builder.gep(row, [builder.mul(b, ir.Constant(b.type, ws))])
                    _prefetch(builder, wp, pf_v)
                    lanes = builder.sitofp(_block_quads(builder, wp, xv, kind), _vec(F32, 8))
                    d = builder.fmul(_half_at(builder, wp, 0), dx)
                    d8 = builder.shuffle_vector(builder.insert_element(_vec_undef(F32, 8), d, ir.Constant(I32, 0)),
                                                _vec_undef(F32, 8), ir.Constant(_vec(I32, 8), [0] * 8))
                    builder.store(_fma(builder, d8, lanes, builder.load(acc)), acc)
                    if at_m is not None:
                        builder.store(_fma(builder, _half_at(builder, wp, at_m), sx, builder.load(summ)), summ)
            out_p = context.make_array(sig.args[5])(context, builder, out_arr).data
            for i, (acc, summ) in enumerate(zip(accs, summs)):
                total = _hsum_float_8(builder, builder.load(acc))
                if at_m is not None:
                    total = builder.fadd(total, builder.load(summ))
                builder.store(total, builder.gep(out_p, [builder.add(r0_v, ir.Constant(r0_v.type, i))]))
            return context.get_dummy_value()
        return types.none(w, types.intp, types.intp, x, types.intp, out, types.intp), codegen
    return intrinsic(typer)


LEGACY_KINDS = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")
# Rows per step of the matvec kernels (kernels/tuning.py LEGACY_ROW_STEPS picks one per matrix where
# the model runs): 32 rows won on an Intel Xeon (more accumulator chains and memory streams in flight),
# 1 row won by 3-5x on an AMD Zen 5, where 8-32 interleaved row streams ran at 4-7 GB/s.
row1_q4_0, row1_q4_1, row1_q5_0, row1_q5_1, row1_q8_0 = (_legacy_rows(k, 1) for k in LEGACY_KINDS)
rows4_q4_0, rows4_q4_1, rows4_q5_0, rows4_q5_1, rows4_q8_0 = (_legacy_rows(k, 4) for k in LEGACY_KINDS)
rows32_q4_0, rows32_q4_1, rows32_q5_0, rows32_q5_1, rows32_q8_0 = (_legacy_rows(k, 32) for k in LEGACY_KINDS)


# ---- 256-value super-blocks × Q8_K activations --------------------------------------------------
def _splat_lane(builder, v, i):
    """<8 x i32> filled with element i of v."""
    e = builder.extract_element(v, ir.Constant(I32, i))
    one = builder.insert_element(ir.Constant(_vec(I32, 8), [0] * 8), e, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(_vec(I32, 8), [0] * 8))


def _scaled_lanes(builder, chunks, xp, scales):
    """ggml's aux32[8] of a super-block: lane l = sum over values e = l (mod 8) of scale(e) * a_e * x_e.
    chunks: 8 <32 x i8> value vectors in order; xp: i8* to the Q8_K block's qs; scales: <8 x i32> (one
    per 32 values) or <16 x i32> (one per 16). The products and the fold to 8 lanes stay in i16: at most
    4 products of |a| <= 32 and |x| <= 128 are added before widening, which fits."""
    per16 = scales.type.count == 16
    acc = ir.Constant(_vec(I32, 8), [0] * 8)
    for c, a in enumerate(chunks):
        x16 = builder.sext(_bytes(builder, xp, 32, 32 * c), _vec(I16, 32))
        p = builder.mul(builder.sext(a, _vec(I16, 32)), x16)
        groups = [(_slice(builder, p, 0, 16), 2 * c), (_slice(builder, p, 16, 16), 2 * c + 1)] if per16 else [(p, c)]
        for part, scale_index in groups:
            folded = _fold8(builder, part)
            lanes = builder.sext(folded, _vec(I32, 8))
            acc = builder.add(acc, builder.mul(lanes, _splat_lane(builder, scales, scale_index)))
    return acc


def _shift_mask(builder, q, shift, mask):
    n = q.type.count
    if shift:
        q = builder.lshr(q, _splat(I8, n, shift))
    return builder.and_(q, _splat(I8, n, mask))


# value offsets: the chunk generators below return the stored unsigned values; ggml's are these minus
K_OFFSET = {"q2_k": 0, "q3_k": 4, "q4_k": 0, "q5_k": 0, "q6_k": 32}


def _chunks_q2_k(builder, wp):
    halves = [_bytes(builder, wp, 32, 16 + 32 * h) for h in range(2)]
    return [_shift_mask(builder, halves[h], 2 * s, 3) for h in range(2) for s in range(4)]


def _chunks_q3_k(builder, wp):
    hm = _bytes(builder, wp, 32)
    chunks = []
    for h in range(2):
        q = _bytes(builder, wp, 32, 32 + 32 * h)
        for s in range(4):
            # stored value ((q >> 2s) & 3) | 4 * hmask bit; ggml's value is that minus 4 (K_OFFSET)
            low = _shift_mask(builder, q, 2 * s, 3)
            chunks.append(builder.add(low, _bit_select(builder, hm, _splat(I8, 32, 1 << (4 * h + s)), 4)))
    return chunks


def _chunks_q45_k(builder, wp, high_bits):
    qs_at = 48 if high_bits else 16
    qh = _bytes(builder, wp, 32, 16) if high_bits else None
    chunks = []
    for k in range(4):
        q = _bytes(builder, wp, 32, qs_at + 32 * k)
        for half, value in enumerate((_shift_mask(builder, q, 0, 15), _shift_mask(builder, q, 4, 15))):
            if high_bits:
                value = builder.or_(value, _bit_select(builder, qh, _splat(I8, 32, 1 << (2 * k + half)), 16))
            chunks.append(value)
    return chunks


def _chunks_q6_k(builder, wp):
    chunks = []
    for h in range(2):
        ql0, ql1 = _bytes(builder, wp, 32, 64 * h), _bytes(builder, wp, 32, 64 * h + 32)
        qh = _bytes(builder, wp, 32, 128 + 32 * h)
        for s, (ql, nib_shift) in enumerate(((ql0, 0), (ql1, 0), (ql0, 4), (ql1, 4))):
            high = builder.shl(_shift_mask(builder, qh, 2 * s, 3), _splat(I8, 32, 4))
            value = builder.or_(_shift_mask(builder, ql, nib_shift, 15), high)
            chunks.append(value)  # ggml's value is this minus 32 (K_OFFSET)
    return chunks


def _scales_k4(builder, wp):
    """Q4_K/Q5_K: the 8 6-bit scales and 8 mins packed in bytes 4..15 (get_scale_min_k4), <8 x i32> each."""
    q = _bytes(builder, wp, 16, 4)  # 12 scale bytes, then 4 bytes of the block's next field
    first4 = ir.Constant(_vec(ir.IntType(1), 8), [1] * 4 + [0] * 4)

    def pick(low_idx, high_idx, low_mask, high_shift):
        a = _shuffle(builder, q, low_idx)
        b = _shuffle(builder, q, high_idx)
        top = builder.shl(builder.lshr(b, _splat(I8, 8, 6)), _splat(I8, 8, 4))
        packed = builder.or_(_shift_mask(builder, a, high_shift, 0xF), top)
        return builder.zext(builder.select(first4, builder.and_(a, _splat(I8, 8, low_mask)), packed), _vec(I32, 8))
    scales = pick([0, 1, 2, 3, 8, 9, 10, 11], [0, 0, 0, 0, 0, 1, 2, 3], 63, 0)
    mins = pick([4, 5, 6, 7, 8, 9, 10, 11], [4, 4, 4, 4, 4, 5, 6, 7], 63, 4)
    return scales, mins


def _scales_q3_k(builder, wp):
    """Q3_K: 16 6-bit scales in bytes 96..107 (low nibbles, then 2-bit high parts), minus 32, <16 x i32>."""
    low8 = _bytes(builder, wp, 8, 96)
    high4 = _bytes(builder, wp, 4, 104)
    lo = _shuffle(builder, low8, list(range(8)) * 2)
    first8 = ir.Constant(_vec(ir.IntType(1), 16), [1] * 8 + [0] * 8)
    lo = builder.select(first8, builder.and_(lo, _splat(I8, 16, 15)), builder.lshr(lo, _splat(I8, 16, 4)))
    hi = builder.lshr(_shuffle(builder, high4, [0, 1, 2, 3] * 4),
                      ir.Constant(_vec(I8, 16), [2 * (j // 4) for j in range(16)]))
    value = builder.or_(lo, builder.shl(builder.and_(hi, _splat(I8, 16, 3)), _splat(I8, 16, 4)))
    return builder.sub(builder.zext(value, _vec(I32, 16)), _splat(I32, 16, 32))


def _bsums_dot(builder, xp, weights16):
    """sum_j bsums[j] * weights16[j] over the Q8_K block at xp (its 16 int16 bsums at byte 260)."""
    bsums = builder.sext(_load(builder, builder.gep(xp, [ir.Constant(I32, 260)]), _vec(I16, 16)), _vec(I32, 16))
    return _reduce_add(builder, builder.mul(bsums, weights16))


def _half_at(builder, p, at):
    h = _load(builder, builder.gep(p, [ir.Constant(I32, at)]), ir.IntType(16))
    return builder.fpext(builder.bitcast(h, ir.HalfType()), F32)


def _add_lanes(builder, sums_p, d, lanes):
    """sums[l] += d * (float)aux32[l], elementwise (ggml's order; no fused multiply-add)."""
    ptr = builder.bitcast(sums_p, _vec(F32, 8).as_pointer())
    splat = builder.shuffle_vector(builder.insert_element(_vec_undef(F32, 8), d, ir.Constant(I32, 0)),
                                   _vec_undef(F32, 8), ir.Constant(_vec(I32, 8), [0] * 8))
    new = builder.fadd(builder.load(ptr, align=4), builder.fmul(splat, builder.sitofp(lanes, _vec(F32, 8))))
    builder.store(new, ptr, align=4)


def _lanes(builder, kind, wp, xq, scales, x_lanes=False):
    """ggml's aux32[8] of the super-block at wp against the Q8_K quants at xq (Q2_K, whose lanes are only
    summed into isum, may get any vector with that sum); x_lanes: xq's chunks are in isa._LANE_PAIRS
    order already (q8_k_lane_order; only where isa.X_LANE_ORDER)."""
    offset = K_OFFSET[kind]
    chunks = {"q2_k": _chunks_q2_k, "q3_k": _chunks_q3_k, "q6_k": _chunks_q6_k}.get(kind)
    chunks = chunks(builder, wp) if chunks else _chunks_q45_k(builder, wp, kind == "q5_k")
    assert isa.X_LANE_ORDER or not x_lanes
    if isa.HAVE_ZMM:
        return isa.scaled_lanes_zmm(builder, chunks, offset, xq, scales, x_lanes)
    if isa.HAVE_MADD:
        return isa.scaled_lanes_madd(builder, chunks, offset, xq, scales, x_lanes)
    if offset:
        chunks = [builder.sub(c, _splat(I8, 32, offset)) for c in chunks]
    if isa.HAVE_SDOT and kind == "q2_k":
        return isa.scaled_sum_sdot(builder, chunks, xq, scales)
    if isa.HAVE_SDOT and scales.type.count == 8:  # one scale per 32 values: Q4_K, Q5_K
        return isa.scaled_lanes_sdot(builder, chunks, xq, scales)
    return _scaled_lanes(builder, chunks, xq, scales)


@intrinsic
def lane_sums(typingctx):
    """Room for the 8 float lane sums of a k-quant row on the calling function's stack (a float32
    pointer): the row kernels then allocate nothing, and each thread's chunk has its own."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(cgutils.alloca_once(builder, ir.ArrayType(F32, 8)), F32.as_pointer())
    return types.CPointer(types.float32)(), codegen


def _superblock(kind, x_lanes=False):
    """Intrinsic (w, wo, x, xo, sums, sumf) -> float32: one super-block at w[wo] dotted with the Q8_K
    block at x[xo] (x_lanes: its quants in lane order, q8_k_lane_order),
    as one iteration of ggml_vec_dot_<kind>_q8_K_generic: updates the 8 float lane
    sums in sums[0:8] (a float32 array or lane_sums() pointer; Q2_K leaves it alone) and returns sumf with this block's scalar
    term (Q2_K: dall * isum - dmin * summs; Q4_K/Q5_K: - dmin * sumi) applied."""
    def typer(typingctx, w, wo, x, xo, sums, sumf, pf):
        if not _i8_arrays(w, x):
            return None

        def codegen(context, builder, sig, args):
            wp = _ptr(context, builder, sig.args[0], args[0], args[1])
            xp = _ptr(context, builder, sig.args[2], args[2], args[3])
            if isinstance(sig.args[4], types.CPointer):
                sums_p = args[4]
            else:
                sums_p = _ptr(context, builder, sig.args[4], args[4], ir.Constant(ir.IntType(64), 0))
            xq = builder.gep(xp, [ir.Constant(I32, 4)])
            yd = _load(builder, xp, F32)
            sumf = args[5]
            for line in range(0, QTYPES[kind.upper()].type_size, 64):  # the block's lines, `pf` bytes ahead
                _prefetch(builder, builder.gep(wp, [ir.Constant(I32, line)]), args[6])
            if kind == "q2_k":
                scale_bytes = _bytes(builder, wp, 16)
                scales = builder.zext(builder.and_(scale_bytes, _splat(I8, 16, 15)), _vec(I32, 16))
                isum = _reduce_add(builder, _lanes(builder, kind, wp, xq, scales, x_lanes))
                summs = _bsums_dot(builder, xp, builder.zext(builder.lshr(scale_bytes, _splat(I8, 16, 4)),
                                                             _vec(I32, 16)))
                dall = builder.fmul(yd, _half_at(builder, wp, 80))
                dmin = builder.fmul(yd, _half_at(builder, wp, 82))
                term = builder.fsub(builder.fmul(dall, builder.sitofp(isum, F32)),
                                    builder.fmul(dmin, builder.sitofp(summs, F32)))
                return builder.fadd(sumf, term)
            if kind == "q3_k":
                scales, d_at = _scales_q3_k(builder, wp), 108
            elif kind == "q6_k":
                scales, d_at = builder.sext(_bytes(builder, wp, 16, 192), _vec(I32, 16)), 208
            else:
                scales, mins = _scales_k4(builder, wp)
                d_at = 0
            _add_lanes(builder, sums_p, builder.fmul(_half_at(builder, wp, d_at), yd),
                       _lanes(builder, kind, wp, xq, scales, x_lanes))
            if kind in ("q4_k", "q5_k"):
                sumi = _bsums_dot(builder, xp, _shuffle(builder, mins, [j // 2 for j in range(16)]))
                dmin = builder.fmul(_half_at(builder, wp, 2), yd)
                sumf = builder.fsub(sumf, builder.fmul(dmin, builder.sitofp(sumi, F32)))
            return sumf
        return types.float32(w, types.intp, x, types.intp, sums, types.float32, types.intp), codegen
    return intrinsic(typer)


block_q2_k = _superblock("q2_k")
block_q3_k = _superblock("q3_k")
block_q4_k = _superblock("q4_k")
block_q5_k = _superblock("q5_k")
block_q6_k = _superblock("q6_k")
# the same against activations in lane order (q8_k_lane_order), where isa.X_LANE_ORDER; else the above
X_LANES = isa.X_LANE_ORDER
block_q2_k_lx, block_q3_k_lx, block_q4_k_lx, block_q5_k_lx, block_q6_k_lx = (
    (_superblock(k, True) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")) if X_LANES
    else (block_q2_k, block_q3_k, block_q4_k, block_q5_k, block_q6_k))


@intrinsic
def q8_k_lane_order(typingctx, src, dst, nsb):
    """dst = the nsb Q8_K blocks of src (292 bytes: d, 256 quants, 16 bsums), each 32-quant chunk's
    bytes in isa._LANE_PAIRS order (d and bsums as they are): what the x_lanes super-blocks read."""
    if not _i8_arrays(src, dst):
        return None

    def codegen(context, builder, sig, args):
        sp = _ptr(context, builder, sig.args[0], args[0], ir.Constant(args[2].type, 0))
        dp = _ptr(context, builder, sig.args[1], args[1], ir.Constant(args[2].type, 0))
        with cgutils.for_range(builder, args[2]) as loop:
            at = builder.mul(loop.index, ir.Constant(loop.index.type, 292))
            s, d = builder.gep(sp, [at]), builder.gep(dp, [at])
            for part, n in ((0, 4), (260, 32)):
                v = _bytes(builder, s, n, part)
                builder.store(v, builder.bitcast(builder.gep(d, [ir.Constant(I32, part)]), v.type.as_pointer()), align=1)
            for c in range(8):
                v = _shuffle(builder, _bytes(builder, s, 32, 4 + 32 * c), isa._LANE_PAIRS)
                builder.store(v, builder.bitcast(builder.gep(d, [ir.Constant(I32, 4 + 32 * c)]),
                                                 v.type.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.none(src, dst, types.intp), codegen
