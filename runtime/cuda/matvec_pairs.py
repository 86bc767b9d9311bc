"""The integer-dot decode matvec with two rows a warp per round (GGQ_CUDA_ROW_PAIRS=1; off by default).

Why: where a launch has more rows than the grid has warps (1.1B gate+up: 11264 rows on ~3200 warps; the
output matvec: 49152), each warp took its rows one after another, one row's weight loads in flight at a
time. Here a warp takes rows r and r + stride together, their pieces in one loop body, so both rows'
loads issue before either is used. Same bits as matvec_int: each row's sum is formed in the same order.
Rows of a format without an integer row function, or a pair of two formats, go one at a time.
"""
from __future__ import annotations

import math

from numba import cuda, float32, float64, int32, int64

from ggq.runtime.cuda.kernels import SCRATCH, WARP, _block_sum, _warp_reduce, ix
from ggq.runtime.cuda.matvec import _JIT, MAX_SEGS, _norm_scale, _pos, _segment, row_dot
from ggq.runtime.cuda.matvec_int import (_ipiece_q4_k, _ipiece_q5_0, _ipiece_q6_k, _ipiece_q8_0, int_row_dot,
                                         prepare_quantized)
from ggq.runtime.cuda.quant import Q4_K, Q5_0, Q6_K, Q8_0, UNIT

device = cuda.jit(device=True, inline=True)


def _irow2(piece):
    @device
    def rows(u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx):
        acc_a = float32(0.0)
        acc_b = float32(0.0)
        it = lane
        while it < cols >> 5:
            acc_a += piece(u8, i8, u16, u32, f16, ra, it, xq, dx)
            acc_b += piece(u8, i8, u16, u32, f16, rb, it, xq, dx)
            it += WARP
        return acc_a, acc_b
    return rows


_irow2_q8_0, _irow2_q5_0, _irow2_q4_k, _irow2_q6_k = (_irow2(f) for f in (_ipiece_q8_0, _ipiece_q5_0, _ipiece_q4_k,
                                                                         _ipiece_q6_k))


@device
def _pair_dot(kind, u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx):
    if kind == Q4_K:
        return _irow2_q4_k(u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx)
    if kind == Q6_K:
        return _irow2_q6_k(u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx)
    if kind == Q5_0:
        return _irow2_q5_0(u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx)
    return _irow2_q8_0(u8, i8, u16, u32, f16, ra, rb, cols, lane, xq, dx)


@device
def _one_dot(seg, s, r, u8, i8, u16, u32, f16, f32, lane, xs, xq, dx):
    kind, rb = seg[s, 3], seg[s, 0] + r * seg[s, 6]
    if kind == Q4_K or kind == Q6_K or kind == Q5_0 or kind == Q8_0:
        return int_row_dot(kind, u8, i8, u16, u32, f16, rb, seg[s, 2], lane, xq, dx)
    return row_dot(kind, u8, i8, u16, u32, f16, f32, rb, seg[s, 2], lane, xs)


@device
def _two_dots(seg, sa, ra, sb, rb, both, u8, i8, u16, u32, f16, f32, lane, xs, xq, dx):
    """This lane's shares of rows ra (segment sa) and rb (sb; only if both): as a pair where they share
    an integer format and length, else one after the other."""
    kind = seg[sa, 3]
    if both and kind == seg[sb, 3] and seg[sa, 2] == seg[sb, 2] and (kind == Q4_K or kind == Q6_K or kind == Q5_0
                                                                      or kind == Q8_0):
        return _pair_dot(kind, u8, i8, u16, u32, f16, seg[sa, 0] + ra * seg[sa, 6], seg[sb, 0] + rb * seg[sb, 6],
                         seg[sa, 2], lane, xq, dx)
    acc_a = _one_dot(seg, sa, ra, u8, i8, u16, u32, f16, f32, lane, xs, xq, dx)
    acc_b = _one_dot(seg, sb, rb, u8, i8, u16, u32, f16, f32, lane, xs, xq, dx) if both else float32(0.0)
    return acc_a, acc_b


@device
def _store(out, o, acc, before, softcap):
    """out[0, o] = acc + before (soft-capped); returns the square of what was stored."""
    acc += before
    if softcap > 0.0:
        acc = float32(softcap * math.tanh(acc / softcap))
    out[0, ix(o)] = acc
    return float64(acc) * float64(acc)


@cuda.jit(**_JIT)
def matvec_int_pairs(segs, u8, i8, u16, u32, f16, f32, x, up, norm_w, eps, prep, out, accumulate, softcap, sumsq,
                     ss_in, ss_out):
    """matvec.matvec_int (same arguments, same results) with rows r and r + stride taken together."""
    xs = cuda.shared.array(0, float32)
    red = cuda.shared.array(WARP, float64)
    seg = cuda.shared.array((MAX_SEGS, 7), int64)
    tmp = cuda.shared.array(SCRATCH, float32)
    tid = cuda.threadIdx.x
    warps, lane = cuda.blockDim.x // WARP, tid % WARP
    n_segs = segs.shape[0]
    e = tid
    while e < n_segs * 7:
        seg[ix(e // 7), ix(e % 7)] = segs[ix(e // 7), ix(e % 7)]
        e += cuda.blockDim.x
    n = x.shape[1]
    words = n + n // UNIT
    xq = cuda.shared.array(0, int32)[words:words + n // 4]
    dx = xs[words + n // 4:words + n // 4 + n // 32]
    prepare_quantized(x, up, norm_w, _norm_scale(x, eps, prep, red, sumsq, ss_in), prep, xs, _pos, xq, dx, tmp)
    n_rows = seg[n_segs - 1, 5] + seg[n_segs - 1, 1]
    stride = cuda.gridDim.x * warps
    squares = float64(0.0)
    base = cuda.blockIdx.x * warps
    while base < n_rows:                         # block-uniform trip count
        row_a = base + tid // WARP
        row_b = row_a + stride
        sa, sb = ix(_segment(seg, n_segs, row_a)), ix(_segment(seg, n_segs, row_b))
        oa, ob = seg[sa, 4] + row_a - seg[sa, 5], seg[sb, 4] + row_b - seg[sb, 5]
        has_a, has_b = row_a < n_rows, row_b < n_rows
        before_a = out[0, ix(oa)] if has_a and lane == 0 and accumulate else float32(0.0)
        before_b = out[0, ix(ob)] if has_b and lane == 0 and accumulate else float32(0.0)
        acc_a, acc_b = float32(0.0), float32(0.0)
        if has_a:
            acc_a, acc_b = _two_dots(seg, sa, row_a - seg[sa, 5], sb, row_b - seg[sb, 5], has_b, u8, i8, u16, u32,
                                     f16, f32, lane, xs, xq, dx)
        acc_a = _warp_reduce(acc_a, cuda.shared.array(SCRATCH, float32), False)
        acc_b = _warp_reduce(acc_b, cuda.shared.array(SCRATCH, float32), False)
        if has_a and lane == 0:
            squares += _store(out, oa, acc_a, before_a, softcap)
        if has_b and lane == 0:
            squares += _store(out, ob, acc_b, before_b, softcap)
        base += 2 * stride
    if ss_out >= 0:
        total = _block_sum(squares, red)
        if tid == 0:
            cuda.atomic.add(sumsq, ss_out, total)
