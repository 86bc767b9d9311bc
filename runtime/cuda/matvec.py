"""The decode matvec: out = W . prep(x) for one token, one warp per row, with row kernels per block format.

Why not quant.unit_dot here: that one unpacks each weight on its own (a byte load, a shift and a mask
per value, the unit's scales decoded again for every 16 values) and ran at ~5 % of DRAM bandwidth. The
row functions below give each lane a fixed piece of a block (8 or 32 values), load the quants as 16-
or 32-bit words (one load for 4 or 8 values), decode a sub-block's scale once per piece and keep two
float sums per scale: sum(q * x) and sum(x), so value = a * q + b costs one FMA and one add per weight.
Formats the benchmark files use (Q4_K, Q6_K, Q5_0, Q8_0) have such a row function; the others keep the
per-unit path (correct, slower). Activations stay float32 (the CPU runtime's exact arithmetic).

Word loads need the views' alignment: Q4_K rows start at multiples of 4 bytes (tensor offsets are
32-aligned, 144-byte blocks), so its quants are read as u32; Q5_0 (22-byte blocks) and Q6_K (210) only
at multiples of 2, so as pairs of u16.
"""
from __future__ import annotations

import math
import os

from numba import cuda, float32, float64, int32, int64

from ggq.runtime.cuda.kernels import (PREP_COPY, PREP_GELU, PREP_NORM, PREP_NORM_SS, PREP_SILU, SCRATCH, SIMULATED,
                                      WARP, _activation, _block_sum, _inv_rms, _warp_reduce, ix, padded)
from ggq.runtime.cuda.matvec_int import (QBLOCK, _scale_min, _w32, int_row_dot, int_shared_words,
                                          prepare_quantized)
from ggq.runtime.cuda.quant import Q4_K, Q5_0, Q6_K, Q8_0, UNIT, unit_dot

device = cuda.jit(device=True, inline=True)


@device
def _pos(i):
    """Shared-memory index of activation i >= 0 (one pad float per unit of 16, see kernels.padded)."""
    return i + (i >> 4)


@device
def _piece_q8_0(u8, i8, u16, u32, f16, rb, blk, xs):
    """Piece = one 34-byte block (d, qs[32]); int8 loads sign-extend for free."""
    bb = rb + 34 * blk
    x0 = _pos(32 * blk)
    s0 = float32(0.0)
    s1 = float32(0.0)
    for j in range(16):
        s0 += float32(i8[bb + 2 + j]) * xs[x0 + j]
        s1 += float32(i8[bb + 18 + j]) * xs[x0 + 17 + j]
    return float32(f16[bb // 2]) * (s0 + s1)


@device
def _piece_q5_0(u8, i8, u16, u32, f16, rb, blk, xs):
    """Piece = one 22-byte block (d, qh u32, qs[16]): value j is the low nibble of qs[j] and value
    16 + j the high one, each with bit j (16 + j) of qh as its fifth; value = d * (q - 16)."""
    bb = rb + 22 * blk
    qh = _w32(u16, bb + 2)
    x0 = _pos(32 * blk)
    s = float32(0.0)
    sx = float32(0.0)
    for k in range(4):
        w = _w32(u16, bb + 6 + 4 * k)
        for j in range(4):
            lo = ((w >> (8 * j)) & 15) | (((qh >> (4 * k + j)) & 1) << 4)
            hi = ((w >> (8 * j + 4)) & 15) | (((qh >> (16 + 4 * k + j)) & 1) << 4)
            a, b = xs[x0 + 4 * k + j], xs[x0 + 17 + 4 * k + j]
            s += float32(lo) * a + float32(hi) * b
            sx += a + b
    return float32(f16[bb // 2]) * (s - float32(16.0) * sx)


@device
def _piece_q4_k(u8, i8, u16, u32, f16, rb, it, xs):
    """Piece = 4 quant words (16 bytes) of a 144-byte super-block (d, dmin, scales[12], qs[128]): bytes
    32p + 16h .. of qs hold values 16h.. of sub-block 2p (low nibbles) and of 2p + 1 (high); 8 pieces a
    super-block, so the two sub-blocks' scales are decoded once per 32 weights."""
    sb, p, h = it // 8, (it % 8) // 2, it % 2
    bb = rb + 144 * sb
    sc0, m0 = _scale_min(u8, bb + 4, 2 * p)
    sc1, m1 = _scale_min(u8, bb + 4, 2 * p + 1)
    w0 = (bb + 16 + 32 * p + 16 * h) // 4
    xl = _pos(256 * sb + 64 * p + 16 * h)           # 16 values inside one unit: contiguous in xs
    xh = xl + 32 + 2                                 # 32 values on = 2 units (and 2 pads) on
    s0 = float32(0.0)
    s1 = float32(0.0)
    t0 = float32(0.0)
    t1 = float32(0.0)
    for k in range(4):
        w = u32[w0 + k]
        for j in range(4):
            a, b = xs[xl + 4 * k + j], xs[xh + 4 * k + j]
            s0 += float32((w >> (8 * j)) & 15) * a
            s1 += float32((w >> (8 * j + 4)) & 15) * b
            t0 += a
            t1 += b
    d, dmin = float32(f16[bb // 2]), float32(f16[bb // 2 + 1])
    return d * (sc0 * s0 + sc1 * s1) - dmin * (m0 * t0 + m1 * t1)


@device
def _piece_q6_k(u8, i8, u16, u32, f16, rb, it, xs):
    """Piece = l in 8q .. 8q + 7 of half n of a 210-byte super-block (ql[128], qh[64], scales[16] int8, d):
    value l + 32g of the half (g = 0..3) is nibble g // 2 of ql[64n + l + 32 (g % 2)] with bits 2g, 2g + 1
    of qh[32n + l] above it, scale scales[8n + l // 16 + 2g]; value = d * scale * (q - 32). 8 pieces a
    super-block, each a pair of 32-bit words from ql's two halves and from qh."""
    sb, n, q = it // 8, (it % 8) // 4, it % 4
    bb = rb + 210 * sb
    la, hq = bb + 64 * n + 8 * q, bb + 128 + 32 * n + 8 * q
    x0 = _pos(256 * sb + 128 * n + 8 * q)          # 8 values inside one unit; groups 32 (= 34 in xs) apart
    s = cuda.local.array(4, float32)
    t = cuda.local.array(4, float32)
    for g in range(4):
        s[g] = 0.0
        t[g] = 0.0
    for k in range(2):
        a, b, hb = _w32(u16, la + 4 * k), _w32(u16, la + 32 + 4 * k), _w32(u16, hq + 4 * k)
        for j in range(4):
            ab, bbyte, h = (a >> (8 * j)) & 255, (b >> (8 * j)) & 255, (hb >> (8 * j)) & 255
            xi = x0 + 4 * k + j
            v0, v1, v2, v3 = xs[xi], xs[xi + 34], xs[xi + 68], xs[xi + 102]
            s[0] += float32((ab & 15) | ((h & 3) << 4)) * v0
            s[1] += float32((bbyte & 15) | (((h >> 2) & 3) << 4)) * v1
            s[2] += float32((ab >> 4) | (((h >> 4) & 3) << 4)) * v2
            s[3] += float32((bbyte >> 4) | ((h >> 6) << 4)) * v3
            t[0] += v0
            t[1] += v1
            t[2] += v2
            t[3] += v3
    sc = bb + 192 + 8 * n + q // 2
    part = float32(0.0)
    for g in range(4):
        part += float32(i8[sc + 2 * g]) * (s[g] - float32(32.0) * t[g])
    return float32(f16[(bb + 208) // 2]) * part


def _row(piece):
    """A lane's share of a row made of 32-value pieces, lane, lane + 32, ... One piece a round: two per
    round (the second clamped and weighted 0 past the end, so that both pieces' loads issue together) was
    measured slower on the H200 (bench/RESULTS.md, cuda_vs_llamacpp notes): the 576-column rows of the
    135M model have 18 pieces, so the second was all waste there, and the 2048-column ones lost too."""
    @device
    def row(u8, i8, u16, u32, f16, rb, cols, lane, xs):
        acc = float32(0.0)
        for it in range(lane, cols // 32, WARP):
            acc += piece(u8, i8, u16, u32, f16, rb, it, xs)
        return acc
    return row


_row_q8_0, _row_q5_0, _row_q4_k, _row_q6_k = (_row(f) for f in (_piece_q8_0, _piece_q5_0, _piece_q4_k, _piece_q6_k))


@device
def row_dot(kind, u8, i8, u16, u32, f16, f32, rb, cols, lane, xs):
    """This lane's share of W[row] . xs for the row of format `kind` at byte rb (summed over the warp by
    the caller); kind is the same for all lanes of the warp."""
    if kind == Q4_K:
        return _row_q4_k(u8, i8, u16, u32, f16, rb, cols, lane, xs)
    if kind == Q6_K:
        return _row_q6_k(u8, i8, u16, u32, f16, rb, cols, lane, xs)
    if kind == Q5_0:
        return _row_q5_0(u8, i8, u16, u32, f16, rb, cols, lane, xs)
    if kind == Q8_0:
        return _row_q8_0(u8, i8, u16, u32, f16, rb, cols, lane, xs)
    acc = float32(0.0)
    for u in range(lane, cols // UNIT, WARP):
        acc += unit_dot(kind, u8, i8, f16, f32, rb, u, xs, u * (UNIT + 1))
    return acc


@device
def _norm_scale(x, eps, prep, red, sumsq, ss_in):
    """RMSNorm's 1 / rms of x[0] for PREP_NORM (a block reduction over x) and PREP_NORM_SS (from
    sumsq[ss_in], summed by the launch that wrote x); 1 otherwise."""
    if prep == PREP_NORM:
        return _inv_rms(x, 0, eps, red)
    if prep == PREP_NORM_SS:
        return float32(1.0 / math.sqrt(sumsq[ss_in] / x.shape[1] + eps))
    return float32(1.0)


@device
def _prepare(x, up, norm_w, inv, prep, xs):
    """xs = prep(x[0]) in the padded layout, every thread of the block taking part (inv: _norm_scale). A
    thread takes 8 consecutive values and loads all of them (and their weights) before it stores any: a
    loop that loads and stores in turn waits a memory round trip per value (Numba's pointers may alias,
    so the compiler cannot hoist the loads itself)."""
    tid, n = cuda.threadIdx.x, x.shape[1]
    a = cuda.local.array(8, float32)
    b = cuda.local.array(8, float32)
    for c in range(tid, n // 8, cuda.blockDim.x):
        for k in range(8):
            a[k] = x[0, 8 * c + k]
            b[k] = float32(1.0) if prep == PREP_COPY else (up[0, 8 * c + k] if prep == PREP_SILU or
                                                             prep == PREP_GELU else norm_w[8 * c + k])
        for k in range(8):
            if prep == PREP_COPY:
                v = a[k]
            elif prep == PREP_SILU or prep == PREP_GELU:
                v = _activation(a[k], prep == PREP_GELU) * b[k]
            else:
                v = a[k] * inv * b[k]
            xs[_pos(8 * c + k)] = v
    cuda.syncthreads()


@device
def _segment(seg, n_segs, row):
    s = 0
    while s + 1 < n_segs and row >= seg[ix(s + 1), 5]:
        s += 1
    return s


MAX_SEGS = 16                   # matrices one launch may take (the model: 3 at most, q, k, v)


# GGQ_CUDA_MAXREG caps the matvec's registers per thread (more blocks an SM, at the risk of spills)
_MAXREG = "" if SIMULATED else os.environ.get("GGQ_CUDA_MAXREG", "")
_JIT = {"max_registers": int(_MAXREG)} if _MAXREG else {}


def _make_matvec(int_dots: bool):
    """The matvec kernel with float activations, or (int_dots) with int8 ones for the formats of INT_KINDS."""
    @cuda.jit(**_JIT)
    def matvec(segs, u8, i8, u16, u32, f16, f32, x, up, norm_w, eps, prep, out, accumulate, softcap, sumsq, ss_in,
               ss_out):
        """out[oo + r] (+)= W_s[r] . prep(x) for every row r of every segment s; one warp per row.
        prep: PREP_NORM(_SS) -> rmsnorm(x) * norm_w; PREP_SILU/GELU -> act(x) * up; PREP_COPY -> x. x, up, out:
        [1, n]. The block's warps take consecutive rows, and the grid strides over them: a grid smaller than
        rows / warps (launch_blocks) prepares x once for several rows per warp. ss_out >= 0: the sum of the
        squares of the outputs (as stored) is added to sumsq[ss_out], for the next launch's PREP_NORM_SS.
        The segment table is copied to shared memory first, so its loads overlap the preparation."""
        xs = cuda.shared.array(0, float32)
        red = cuda.shared.array(WARP, float64)
        seg = cuda.shared.array((MAX_SEGS, 7), int64)
        tmp = cuda.shared.array(SCRATCH, float32)      # the simulator's stand-in for shuffles
        tid = cuda.threadIdx.x
        warps, lane = cuda.blockDim.x // WARP, tid % WARP
        n_segs = segs.shape[0]
        e = tid
        while e < n_segs * 7:
            seg[ix(e // 7), ix(e % 7)] = segs[ix(e // 7), ix(e % 7)]
            e += cuda.blockDim.x
        n = x.shape[1]
        words = n + n // UNIT                  # padded(n), the float activations before the int8 ones
        xq = cuda.shared.array(0, int32)[words:words + n // 4]
        dx = xs[words + n // 4:words + n // 4 + n // 32]
        inv = _norm_scale(x, eps, prep, red, sumsq, ss_in)
        if int_dots:
            prepare_quantized(x, up, norm_w, inv, prep, xs, _pos, xq, dx, tmp)
        else:
            _prepare(x, up, norm_w, inv, prep, xs)
        n_rows = seg[n_segs - 1, 5] + seg[n_segs - 1, 1]
        squares = float64(0.0)
        base = cuda.blockIdx.x * warps
        while base < n_rows:                         # block-uniform trip count
            row = base + tid // WARP
            s = ix(_segment(seg, n_segs, row))
            r = row - seg[s, 5]
            active = row < n_rows
            o = seg[s, 4] + r
            acc = float32(0.0)
            before = float32(0.0)
            if active and lane == 0 and accumulate:
                before = out[0, ix(o)]               # loaded before the dot, so its latency overlaps it
            if active:
                kind, rb = seg[s, 3], seg[s, 0] + r * seg[s, 6]
                if int_dots and (kind == Q4_K or kind == Q6_K or kind == Q5_0 or kind == Q8_0):
                    acc = int_row_dot(kind, u8, i8, u16, u32, f16, rb, seg[s, 2], lane, xq, dx)
                else:
                    acc = row_dot(kind, u8, i8, u16, u32, f16, f32, rb, seg[s, 2], lane, xs)
            acc = _warp_reduce(acc, cuda.shared.array(SCRATCH, float32), False)
            if active and lane == 0:
                acc += before
                if softcap > 0.0:
                    acc = float32(softcap * math.tanh(acc / softcap))
                out[0, ix(o)] = acc
                squares += float64(acc) * float64(acc)
            base += cuda.gridDim.x * warps
        if ss_out >= 0:
            total = _block_sum(squares, red)
            if tid == 0:
                cuda.atomic.add(sumsq, ss_out, total)
    return matvec


matvec = _make_matvec(False)
matvec_int = _make_matvec(True)


def shared_bytes(n: int, int_dots: bool) -> int:
    """Dynamic shared memory of a matvec launch over n activations."""
    return 4 * (padded(n) + (int_shared_words(n) if int_dots else 0))


def blocks_that_fit(kernel, threads: int, most: int = 4) -> int:
    """Blocks of `threads` an SM holds at the compiled kernel's registers (65536 an SM, allocated per warp
    in units of 256), at most `most`: a grid of more than fit runs in two waves."""
    try:
        regs = kernel.get_regs_per_thread()
        regs = max(regs.values()) if isinstance(regs, dict) else int(regs)
    except Exception:  # noqa: BLE001 - the simulator has no registers
        return most
    per_warp = -(-regs * WARP // 256) * 256
    return max(1, min(most, 65536 // (per_warp * (threads // WARP)), 2048 // threads))


def launch_blocks(rows: int, warps: int, sm_count: int, per_sm: int = 4) -> int:
    """Blocks of a matvec launch: a warp per row, but no more than fit on the GPU at once (per_sm blocks of
    8 warps an SM), beyond which each warp takes several rows and x is prepared less often."""
    return max(1, min(-(-rows // warps), per_sm * sm_count))


def matvec_args(views) -> tuple:
    """The file views in matvec's order (it also reads 16- and 32-bit words)."""
    return views.u8, views.i8, views.u16, views.u32, views.f16, views.f32
