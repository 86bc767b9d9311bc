"""Per-ISA forms of vecir's integer dot products: x86 (vpdpbusd of AVX512-VNNI / AVX-VNNI, pmaddubsw +
pmaddwd of AVX2) and aarch64 (NEON sdot of the dotprod extension, which every Apple Silicon chip has).

vecir writes every integer dot product in generic LLVM vector IR, which any target lowers. A form here
replaces part of it only where the CPU that Numba compiles for has the instruction, and computes the
same integer lanes: every sum is exact, only the grouping of the integer additions differs, so all
forms give bit-identical results. GGQ_NO_VNNI=1, GGQ_NO_MADD=1, GGQ_NO_SDOT=1 force the generic IR
(GGQ_NO_ZMM=1 the 256-bit forms, GGQ_ZMM=1 the 512-bit ones where the CPU runs them at half width) for
tests and A/B timing; ggq's default Numba cache keys on them
(tune_cache.CODEGEN_ENV), an explicit NUMBA_CACHE_DIR does not: use one per setting.

The IR shorthands at the top are vecir's too (this module is the lower layer, imported only by vecir).
"""
from __future__ import annotations

import os

from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, codegen, config

I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


# ---- IR shorthands ------------------------------------------------------------------------------
def _vec(t, n):
    return ir.VectorType(t, n)


def _signed(t, value):
    """Two's-complement wrap, so that e.g. i8 0x80 is written as -128 in the IR text."""
    half = 1 << (t.width - 1)
    return (value + half) % (2 * half) - half


def _splat(t, n, value):
    return ir.Constant(_vec(t, n), [_signed(t, value)] * n)


def _vec_undef(t, n):
    return ir.Constant(_vec(t, n), ir.Undefined)


def _zeros(t, n):
    return ir.Constant(_vec(t, n), [0] * n)


def _load(builder, p, ty):
    return builder.load(builder.bitcast(p, ty.as_pointer()), align=1)


def _bytes(builder, p, n, at=0):
    """<n x i8> at p + at."""
    return _load(builder, builder.gep(p, [ir.Constant(I32, at)]) if at else p, _vec(I8, n))


def _shuffle(builder, v, idx):
    """Pick elements idx of v."""
    return builder.shuffle_vector(v, _vec_undef(v.type.element, v.type.count), ir.Constant(_vec(I32, len(idx)), idx))


def _concat(builder, a, b):
    n = a.type.count
    return builder.shuffle_vector(a, b, ir.Constant(_vec(I32, 2 * n), list(range(2 * n))))


def _slice(builder, v, start, n):
    return builder.shuffle_vector(v, v, ir.Constant(_vec(I32, n), list(range(start, start + n))))


def _call(builder, name, ret, *args):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), list(args))


# ---- which forms: the features of the CPU Numba compiles for --------------------------------------
def _target():
    """(CPU name, set of +/- features) as Numba's JIT codegen uses them (NUMBA_CPU_NAME and
    NUMBA_CPU_FEATURES override the host's): an intrinsic the target lacks would not compile."""
    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return name, set(features.split(","))


# LLVM's aarch64 host feature list leaves dotprod out (Linux: /proc/cpuinfo's asimddp is not mapped;
# macOS: no host features at all), while the CPU name it detects implies it. These LLVM CPU names have
# dotprod (ARMv8.4+, or v8.2 cores with the extension); any other falls back to the generic IR.
_DOTPROD_CPUS = ("apple-m", "apple-a13", "apple-a14", "apple-a15", "apple-a16", "apple-a17", "apple-a18",
                 "neoverse-", "cortex-x", "cortex-a55", "cortex-a65", "cortex-a75", "cortex-a76", "cortex-a77",
                 "cortex-a78", "cortex-a710", "cortex-a715", "cortex-a720", "ampere1")


def _has_dotprod(name, features):
    if "+dotprod" in features or "-dotprod" in features:
        return "+dotprod" in features
    return name.startswith(_DOTPROD_CPUS)


_NAME, _FEATURES = _target()
# u8 x i8 quads on 256-bit vectors (vpdpbusd) for the legacy blocks
HAVE_VNNI = ({"+avx512vnni", "+avx512vl"} <= _FEATURES or "+avxvnni" in _FEATURES) and not os.environ.get("GGQ_NO_VNNI")
# pmaddubsw/pmaddwd on 256-bit vectors for the k-quant lanes
HAVE_MADD = "+avx2" in _FEATURES and not os.environ.get("GGQ_NO_MADD")
# LLVM target CPUs that run 512-bit integer instructions as two 256-bit halves, where the 512-bit k-quant
# lanes below lose to the 256-bit ones. Zen 4 (AMD EPYC family 25 model 17, KVM), whole decode steps of
# the shared model, 1 thread, alternating runs: Q6_K 7.42 / 7.40 ms at 256-bit vs 8.37 / 8.70 at 512-bit,
# Q4_K_M 8.71 / 8.46 vs 10.96 / 9.19; on Zen 5 (full-width) 512-bit made a Q4_K matvec 18 -> 26 GB/s.
# GGQ_ZMM=1 uses them there all the same (tests, A/B timing).
HALF_WIDTH_ZMM = ("znver4",)
# the same on 512-bit vectors, two 32-value chunks per instruction (vpermb needs AVX512-VBMI)
HAVE_ZMM = (HAVE_MADD and {"+avx512bw", "+avx512vbmi"} <= _FEATURES and not os.environ.get("GGQ_NO_ZMM")
            and (_NAME not in HALF_WIDTH_ZMM or os.environ.get("GGQ_ZMM") == "1"))
# the legacy blocks' vpdpbusd on 512-bit vectors, two rows a vector (vecir_pairs; tuned as shapes)
HAVE_ZMM_VNNI = HAVE_VNNI and {"+avx512vnni", "+avx512bw"} <= _FEATURES and not os.environ.get("GGQ_NO_ZMM")
# i8 x i8 quads on 128-bit vectors (sdot) for the legacy blocks and the k-quants that map onto them
HAVE_SDOT = _has_dotprod(_NAME, _FEATURES) and not os.environ.get("GGQ_NO_SDOT")


def describe() -> str:
    """The forms this process compiles, for logs and bench records."""
    legacy = ("sdot" if HAVE_SDOT else "vpdpbusd (also two rows a 512-bit vector)" if HAVE_ZMM_VNNI else
              "vpdpbusd" if HAVE_VNNI else "generic IR")
    kquants = ("pmaddubsw/pmaddwd, 512-bit" if HAVE_ZMM else "pmaddubsw/pmaddwd" if HAVE_MADD else
               "sdot (Q2_K, Q4_K, Q5_K), generic IR (Q3_K, Q6_K)" if HAVE_SDOT else "generic IR")
    return f"target {_NAME}; legacy blocks: {legacy}; k-quants: {kquants}"


# ---- quads: <8 x i32>, lane l = sum of the products of bytes 4l..4l+3 of <32 x i8> a and x ----------
def _vpdpbusd(builder, acc, a, x):
    """acc + quads of u8(a) * i8(x): one AVX512-VNNI/AVX-VNNI instruction."""
    v8 = _vec(I32, 8)
    return _call(builder, "llvm.x86.avx512.vpdpbusd.256", v8, acc, builder.bitcast(a, v8), builder.bitcast(x, v8))


def quads_vnni_zmm(builder, start, a, x):
    """<16 x i32> start + quads of u8(a) * i8(x) for <64 x i8> a, x: one 512-bit vpdpbusd."""
    v16 = _vec(I32, 16)
    return _call(builder, "llvm.x86.avx512.vpdpbusd.512", v16, start, builder.bitcast(a, v16), builder.bitcast(x, v16))


def quads_vnni(builder, a, x, offset):
    """Quads of (a - offset) * x for unsigned stored bytes a: vpdpbusd takes a as u8, so offset times
    the quads of x alone is subtracted."""
    zero = _zeros(I32, 8)
    dot = _vpdpbusd(builder, zero, a, x)
    if not offset:
        return dot
    sum_x = _vpdpbusd(builder, zero, _splat(I8, 32, 1), x)
    return builder.sub(dot, builder.mul(sum_x, _splat(I32, 8, offset)))


def _sdot(builder, acc, a, x):
    """<4 x i32> acc + quads of i8(a) * i8(x) for <16 x i8> a, x: one NEON sdot instruction."""
    return _call(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", _vec(I32, 4), acc, a, x)


def quads_sdot(builder, a, x):
    """Quads of signed a * x: sdot on the two 16-byte halves (lanes 0-3, then 4-7)."""
    zero = _zeros(I32, 4)
    lo = _sdot(builder, zero, _slice(builder, a, 0, 16), _slice(builder, x, 0, 16))
    hi = _sdot(builder, zero, _slice(builder, a, 16, 16), _slice(builder, x, 16, 16))
    return _concat(builder, lo, hi)


# ---- k-quant lanes: lane l = sum over values e = l (mod 8) of scale(e) * a_e * x_e ------------------
# byte order of a 32-value chunk that puts its values l, l+8, l+16, l+24 (all of ggml's lane l) at
# bytes 4l..4l+3: pmaddubsw's pair sums 2l and 2l+1 and sdot's quad l then each belong to lane l
_LANE_PAIRS = [e for l in range(8) for e in (l, l + 8, l + 16, l + 24)]


# The x86 forms below pair a chunk's values in _LANE_PAIRS order, the activations too. Those are the same
# for every weight row of a matvec, so the decode step puts them in that order once per matvec
# (vecir.q8_k_lane_order) and the rows take them as they are (x_lanes=True): one permute fewer per 32
# values and row.
X_LANE_ORDER = HAVE_MADD


def _x_chunk(builder, xp, c, n, order, x_lanes):
    """n activation bytes of chunks c.. at xp, in order (or as stored where already in lane order)."""
    x = _bytes(builder, xp, n, 32 * c)
    return x if x_lanes else builder.shuffle_vector(x, _vec_undef(I8, n), order)


def scaled_lanes_madd(builder, chunks, offset, xp, scales, x_lanes=False):
    """vecir._scaled_lanes with x86's pmaddubsw (u8 x i8 -> i16 pair sums) and pmaddwd (i16 x scale,
    pairs summed to i32). A pair (values l, l+8 or l+16, l+24) lies in one 16-value group, so per-16
    scales apply too. chunks hold the unsigned stored values, ggml's value being stored - offset, so
    offset * (the same sums over x alone) is subtracted. No i16 saturation: a pair sum is at most
    2 * 63 * 128."""
    per16 = scales.type.count == 16
    order = ir.Constant(_vec(I32, 32), _LANE_PAIRS)
    s16 = builder.trunc(scales, _vec(I16, scales.type.count))
    terms, terms_x = [], []
    for c, a in enumerate(chunks):
        x = _x_chunk(builder, xp, c, 32, order, x_lanes)
        a = builder.shuffle_vector(a, _vec_undef(I8, 32), order)
        idx = [2 * c, 2 * c + 1] * 8 if per16 else [c] * 16
        sc = builder.shuffle_vector(s16, s16, ir.Constant(_vec(I32, 16), idx))
        pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(I16, 16), a, x)
        terms.append(_call(builder, "llvm.x86.avx2.pmadd.wd", _vec(I32, 8), pairs, sc))
        if offset:
            pairs_x = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(I16, 16), _splat(I8, 32, 1), x)
            terms_x.append(_call(builder, "llvm.x86.avx2.pmadd.wd", _vec(I32, 8), pairs_x, sc))
    acc = _tree_sum(builder, terms)
    if offset:
        acc = builder.sub(acc, builder.mul(_tree_sum(builder, terms_x), _splat(I32, 8, offset)))
    return acc


def scaled_lanes_zmm(builder, chunks, offset, xp, scales, x_lanes=False):
    """scaled_lanes_madd on 512-bit vectors: chunks 2k and 2k+1 side by side in one vector, so each
    permute, pmaddubsw and pmaddwd does two chunks' work; the 16 lanes (chunk 2k's lanes 0-7, then
    2k+1's) are folded to 8 at the end. Half the instructions per super-block: Q4_K decode on Zen 5
    went from 18 to 26 GB/s a thread (it had been bound by instruction throughput, not memory)."""
    per16 = scales.type.count == 16
    order = ir.Constant(_vec(I32, 64), _LANE_PAIRS + [32 + e for e in _LANE_PAIRS])
    s16 = builder.trunc(scales, _vec(I16, scales.type.count))
    terms, terms_x = [], []
    for c in range(0, len(chunks), 2):
        x = _x_chunk(builder, xp, c, 64, order, x_lanes)
        a = builder.shuffle_vector(chunks[c], chunks[c + 1], order)
        idx = [2 * c, 2 * c + 1] * 8 + [2 * c + 2, 2 * c + 3] * 8 if per16 else [c] * 16 + [c + 1] * 16
        sc = builder.shuffle_vector(s16, s16, ir.Constant(_vec(I32, 32), idx))
        pairs = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", _vec(I16, 32), a, x)
        terms.append(_call(builder, "llvm.x86.avx512.pmaddw.d.512", _vec(I32, 16), pairs, sc))
        if offset:
            pairs_x = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", _vec(I16, 32), _splat(I8, 64, 1), x)
            terms_x.append(_call(builder, "llvm.x86.avx512.pmaddw.d.512", _vec(I32, 16), pairs_x, sc))
    acc = _tree_sum(builder, terms)
    if offset:
        acc = builder.sub(acc, builder.mul(_tree_sum(builder, terms_x), _splat(I32, 16, offset)))
    return builder.add(_slice(builder, acc, 0, 8), _slice(builder, acc, 8, 8))


def _tree_sum(builder, terms):
    """Sum of integer vectors added pairwise: one chain of 8 dependent adds (LLVM fuses them into
    vpdpwssd, 4+ cycles each) made the k-quant super-block latency-bound; the integer sum is exact
    in any grouping."""
    while len(terms) > 1:
        terms = [builder.add(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def scaled_lanes_sdot(builder, chunks, xp, scales):
    """vecir._scaled_lanes with sdot, for one scale per 32 values (<8 x i32> scales: Q4_K, Q5_K).
    chunks hold ggml's signed values. In _LANE_PAIRS order a chunk's quad l is exactly its part of
    lane l, under the chunk's one scale. (With one scale per 16 values a quad would span two scales:
    vecir keeps Q3_K and Q6_K on the generic IR rather than zero-pad half of every sdot.)"""
    assert scales.type.count == 8
    acc = _zeros(I32, 8)
    for c, a in enumerate(chunks):
        x = _shuffle(builder, _bytes(builder, xp, 32, 32 * c), _LANE_PAIRS)
        quads = quads_sdot(builder, _shuffle(builder, a, _LANE_PAIRS), x)
        acc = builder.add(acc, builder.mul(quads, _shuffle(builder, scales, [c] * 8)))
    return acc


def scaled_sum_sdot(builder, chunks, xp, scales):
    """<4 x i32> whose elements add up to sum_e scale(e) * a_e * x_e, one scale per 16 values (<16 x i32>
    scales), for Q2_K, of which ggml uses only that total (isum), not the 8 lanes: an sdot per 16
    values, times its scale. chunks hold ggml's signed values."""
    acc = _zeros(I32, 4)
    for c, a in enumerate(chunks):
        x = _bytes(builder, xp, 32, 32 * c)
        for h in range(2):
            dot = _sdot(builder, _zeros(I32, 4), _slice(builder, a, 16 * h, 16), _slice(builder, x, 16 * h, 16))
            acc = builder.add(acc, builder.mul(dot, _shuffle(builder, scales, [2 * c + h] * 4)))
    return acc
