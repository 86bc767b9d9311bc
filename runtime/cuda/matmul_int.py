"""The prompt matmul with integer dots (the default path; exact=True keeps kernels.matmul's float tiles):
activations rounded to int8 blocks of 32 once per matrix input (quantize_rows), weights unpacked to int8
in shared memory tile by tile, products summed four at a time with `__dp4a`.

Why: kernels.matmul dequantizes every weight to a float and spends an FMA per product; numba.cuda has
no tensor-core (mma) API, so the fastest products it can issue are dp4a's 4 int8 products an instruction
(twice the FMA rate on Hopper). llama.cpp's MMQ does the same with int8 tensor cores.

Layouts. Activations: xq [T, K/4] int32 words of 4 int8 values, xd [T, K/32] scales (max |x| / 127, as
ggml's q8_1 and matvec_int's), xs [T, K/32] = xd * sum(q) (for formats with a separate min). Weights:
every format in INT_KINDS is unpacked to signed int8 values q with value = a * q + b, a per 16 values
(Q6_K's sub-block scales; the others repeat one a per 32), b per 32 (Q4_K's -dmin * m; 0 for the others,
whose offsets are folded into q: Q5_0's q - 16, Q6_K's q - 32 are sign-extended in place).

Tile: TILE_ROWS rows x (TY x tokens a thread) tokens a block, K in steps of STEP_BLOCKS blocks of 32. A
thread sums ROWS_PER x tokens-a-thread outputs: rows tx + 16 a (lanes along rows, so the output stores
coalesce), tokens ty + TY b. Each block's products (each 16-value half's for Q6_K, whose halves have
scales of their own) are summed as an int32 in dp4a's accumulator started at MAGIC, the bits of the
float 1.5 * 2^23: for |s| < 2^22 (32 products are at most 32 * 128 * 127) the word's bits are then the
float 1.5 * 2^23 + s exactly, so one float subtraction converts it (an int-to-float conversion runs at a
quarter of the FMA rate).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int32, uint32

from ggq.runtime.cuda import kernels as kn
from ggq.runtime.cuda.kernels import PREP_NORM, PREP_SILU, SIMULATED, WARP, _activation, _inv_rms, ix
from ggq.runtime.cuda.matvec_int import LOW, QBLOCK, _spread4, _w32, dp4a
from ggq.runtime.cuda.quant import Q4_K, Q5_0, Q6_K, Q8_0, _scale_min_k4

device = cuda.jit(device=True, inline=True)

INT_KINDS = (Q4_K, Q6_K, Q5_0, Q8_0)
# rows: the segment tables' tile unit (upload.launch_mats). Tokens: TY * tokens a thread, 8 or 4 (64- or
# 32-token tiles; the narrower where the wider leaves SMs idle: a 576-row matrix at 512 tokens is only 72
# tiles of 64 x 64). The simulator (a Python thread per GPU thread) runs 32 threads: 8- or 4-token tiles.
TILE_ROWS = kn.TILE_ROWS
STEP_BLOCKS = 4                         # blocks of 32 per shared-memory step (128 values)
STEP_WORDS = STEP_BLOCKS * 8
THREADS = 32 if SIMULATED else 128      # 16 x TY threads: tx along rows, ty along tokens
TY = THREADS // 16
ROWS_PER = TILE_ROWS // 16
WIDE, NARROW = 8, 4                     # tokens a thread
HALVES = 2 * STEP_BLOCKS                # a weight scale per 16 values
PAD_WORDS = STEP_WORDS + 1              # a shared row's stride: rows tx + 16 a fall in different banks
MAGIC = 0x4B400000
MAGIC_F = 12582912.0                    # 1.5 * 2^23
QUANT_THREADS = 32 if SIMULATED else 256

if SIMULATED:
    @device
    def _as_float(i):
        return float32(np.array([i], np.int32).view(np.float32)[0])
else:
    from numba.cuda import libdevice

    @device
    def _as_float(i):
        return libdevice.int_as_float(i)


@device
def _prepared(x, t, j, prep, w, inv, n_ff, gelu):
    if prep == PREP_NORM:
        return x[t, j] * inv * w[j]
    if prep == PREP_SILU:
        return _activation(x[t, j], gelu) * x[t, n_ff + j]
    return x[t, j]


@cuda.jit
def quantize_rows(x, cols, prep, w, eps, gelu, xq, xd, xs):
    """xq/xd/xs of v = prep(x[t, :cols]) (cols % 32 == 0), one block a token, a thread a block of 32. prep:
    PREP_COPY v = x; PREP_NORM rmsnorm(x[t]) * w (kernels.rmsnorm_rows' arithmetic); PREP_SILU act(x[t, j])
    * x[t, cols + j] (kernels.gate_act's; gelu picks the activation). The rounding is matvec_int's
    prepare_quantized (round half to even of v * 127 / max |v|)."""
    red = cuda.shared.array(WARP, float64)
    t = cuda.blockIdx.x
    inv = _inv_rms(x, t, eps, red) if prep == PREP_NORM else float32(1.0)
    vals = cuda.local.array(QBLOCK, float32)
    for blk in range(cuda.threadIdx.x, cols // QBLOCK, cuda.blockDim.x):
        amax = float32(0.0)
        for j in range(QBLOCK):
            vals[j] = _prepared(x, t, QBLOCK * blk + j, prep, w, inv, cols, gelu)
            amax = max(amax, abs(vals[j]))
        scale = float32(127.0) / amax if amax > 0.0 else float32(0.0)
        total = int32(0)
        for k in range(8):
            word = uint32(0)
            for j in range(4):
                q = int32(round(vals[4 * k + j] * scale))
                total += q
                word |= uint32(q & 255) << (8 * j)
            xq[t, 8 * blk + k] = int32(word)
        d = amax / float32(127.0)
        xd[t, blk] = d
        xs[t, blk] = d * float32(total)


# ---- weights: half h (values 16 h .. 16 h + 15) of block `blk` (of 32) of a row as 4 int8 words ------
# each writes them to ws[r, c:c + 4] and returns (a, b): value = a * q + b (b the same for both halves)
@device
def _sign_extend(v, bit):
    """Each byte of v holds an unsigned (bit + 1)-bit value q; returns q - 2^bit as signed bytes
    (flip the top bit, then copy it into the bits above: no carries cross the bytes)."""
    top = uint32(0x01010101) << bit
    s = v ^ top
    high = s & top
    for k in range(1, 8 - bit):
        s |= high << k
    return s


@device
def _unit_q8_0(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c):
    bb = rb + 34 * blk
    for m in range(4):
        ws[r, c + m] = int32(_w32(u16, bb + 2 + 16 * h + 4 * m))
    return float32(f16[ix(bb >> 1)]), float32(0.0)


@device
def _unit_q5_0(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c):
    bb = rb + 22 * blk
    qh = _w32(u16, bb + 2)
    for m in range(4):
        w = (_w32(u16, bb + 6 + 4 * m) >> (4 * h)) & LOW
        ws[r, c + m] = int32(_sign_extend(w | _spread4(qh >> (16 * h + 4 * m)), 4))
    return float32(f16[ix(bb >> 1)]), float32(0.0)


@device
def _unit_q4_k(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c):
    sb, j = blk >> 3, blk & 7
    bb = rb + 144 * sb
    w0 = (bb + 16 + 32 * (j >> 1) + 16 * h) >> 2
    for m in range(4):
        ws[r, c + m] = int32((u32[ix(w0 + m)] >> (4 * (j & 1))) & LOW)
    sc, mn = _scale_min_k4(u8, bb + 4, j)
    return float32(f16[ix(bb >> 1)]) * float32(sc), -float32(f16[ix((bb >> 1) + 1)]) * float32(mn)


@device
def _unit_q6_k(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c):
    sb, j = blk >> 3, blk & 7
    bb = rb + 210 * sb
    half, kk = j >> 2, j & 3
    lo, hi = bb + 64 * half + 32 * (kk & 1) + 16 * h, bb + 128 + 32 * half + 16 * h
    for m in range(4):
        low = (_w32(u16, lo + 4 * m) >> (4 * (kk >> 1))) & LOW
        high = (_w32(u16, hi + 4 * m) >> (2 * kk)) & 0x03030303
        ws[r, c + m] = int32(_sign_extend(low | (high << 4), 5))
    a = float32(f16[ix((bb + 208) >> 1)]) * float32(i8[ix(bb + 192 + 8 * half + 2 * kk + h)])
    return a, float32(0.0)


@device
def _unit(kind, u8, i8, u16, u32, f16, rb, blk, h, ws, r, c):
    if kind == Q4_K:
        return _unit_q4_k(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c)
    if kind == Q6_K:
        return _unit_q6_k(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c)
    if kind == Q5_0:
        return _unit_q5_0(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c)
    return _unit_q8_0(u8, i8, u16, u32, f16, rb, blk, h, ws, r, c)


@device
def _find_tile_segment(segs, tile):
    s = 0
    while s + 1 < segs.shape[0] and tile >= segs[s + 1, 5]:
        s += 1
    return s


@device
def _load_weights(segs, s, u8, i8, u16, u32, f16, row0, kb0, ws, wa, wb):
    """Rows row0.. of segment s, blocks kb0..kb0 + STEP_BLOCKS - 1, into ws (words), wa (a per half),
    wb (b per block); zeros past the last row or block."""
    rows, nblk, kind, row_bytes = segs[s, 1], segs[s, 2] // QBLOCK, segs[s, 3], segs[s, 6]
    for u in range(cuda.threadIdx.x, TILE_ROWS * STEP_BLOCKS * 2, cuda.blockDim.x):
        r, kb, h = u // (2 * STEP_BLOCKS), (u // 2) % STEP_BLOCKS, u % 2
        a, b = float32(0.0), float32(0.0)
        if row0 + r < rows and kb0 + kb < nblk:
            a, b = _unit(kind, u8, i8, u16, u32, f16, segs[s, 0] + (row0 + r) * row_bytes, kb0 + kb, h, ws, r,
                         8 * kb + 4 * h)
        else:
            for m in range(4):
                ws[r, 8 * kb + 4 * h + m] = int32(0)
        wa[r, 2 * kb + h] = a
        if h == 0:
            wb[r, kb] = b


@device
def _load_activations(xq, xd, xs, n_tokens, t0, kb0, nblk, xsh, xdsh, xssh, tile_tokens):
    for e in range(cuda.threadIdx.x, tile_tokens * STEP_WORDS, cuda.blockDim.x):
        t, k = e // STEP_WORDS, e % STEP_WORDS
        ok = t0 + t < n_tokens and kb0 * 8 + k < nblk * 8
        xsh[t, k] = xq[t0 + t, kb0 * 8 + k] if ok else int32(0)
    for e in range(cuda.threadIdx.x, tile_tokens * STEP_BLOCKS, cuda.blockDim.x):
        t, kb = e // STEP_BLOCKS, e % STEP_BLOCKS
        ok = t0 + t < n_tokens and kb0 + kb < nblk
        xdsh[t, kb] = xd[t0 + t, kb0 + kb] if ok else float32(0.0)
        xssh[t, kb] = xs[t0 + t, kb0 + kb] if ok else float32(0.0)


@device
def _multiply_step(ws, wa, wb, xsh, xdsh, xssh, tx, ty, parts, part_words, has_min, acc, isum, wr, xr):
    """acc += this thread's products of one step's tiles (see the module docstring): per block of 32,
    `parts` int sums of part_words words each (2 for Q6_K's two scales, else 1), converted and scaled."""
    tokens_per = xr.shape[0]
    for kb in range(STEP_BLOCKS):
        for h in range(parts):
            for a in range(ROWS_PER):
                for b in range(tokens_per):
                    isum[a, b] = int32(MAGIC)
            for m in range(part_words):
                k = 8 * kb + part_words * h + m
                for a in range(ROWS_PER):
                    wr[a] = ws[tx + 16 * a, k]
                for b in range(tokens_per):
                    xr[b] = xsh[ty + TY * b, k]
                for a in range(ROWS_PER):
                    for b in range(tokens_per):
                        isum[a, b] = dp4a(wr[a], xr[b], isum[a, b])
            for a in range(ROWS_PER):
                wah = wa[tx + 16 * a, 2 * kb + h]
                for b in range(tokens_per):
                    f = _as_float(isum[a, b]) - float32(MAGIC_F)
                    acc[a, b] += wah * (xdsh[ty + TY * b, kb] * f)
        if has_min:
            for a in range(ROWS_PER):
                wba = wb[tx + 16 * a, kb]
                for b in range(tokens_per):
                    acc[a, b] += wba * xssh[ty + TY * b, kb]


@device
def _store_tile(acc, out, rows, o0, row0, t0, tx, ty, n_tokens, accumulate, softcap):
    for b in range(acc.shape[1]):
        t = t0 + ty + TY * b
        for a in range(ROWS_PER):
            r = row0 + tx + 16 * a
            if r < rows and t < n_tokens:
                v = acc[a, b]
                if accumulate:
                    v += out[t, o0 + r]
                if softcap > 0.0:
                    v = float32(softcap * math.tanh(v / softcap))
                out[t, o0 + r] = v


def _make(tokens_per: int):
    TOKENS_PER = tokens_per
    TILE_TOKENS = TY * tokens_per

    @cuda.jit
    def matmul_int(segs, u8, i8, u16, u32, f16, xq, xd, xs, n_tokens, out, accumulate, softcap):
        """out[t, oo + r] (+)= W_s[r] . x[t] for a prompt, x given as int8 blocks (quantize_rows); grid
        (token tiles, row tiles of every segment), THREADS threads."""
        ws = cuda.shared.array((TILE_ROWS, PAD_WORDS), int32)
        wa = cuda.shared.array((TILE_ROWS, HALVES), float32)
        wb = cuda.shared.array((TILE_ROWS, STEP_BLOCKS), float32)
        xsh = cuda.shared.array((TILE_TOKENS, PAD_WORDS), int32)
        xdsh = cuda.shared.array((TILE_TOKENS, STEP_BLOCKS), float32)
        xssh = cuda.shared.array((TILE_TOKENS, STEP_BLOCKS), float32)
        tx, ty = cuda.threadIdx.x % 16, cuda.threadIdx.x // 16
        s = _find_tile_segment(segs, cuda.blockIdx.y)
        row0 = (cuda.blockIdx.y - segs[s, 5]) * TILE_ROWS
        t0 = cuda.blockIdx.x * TILE_TOKENS
        nblk, has_min = segs[s, 2] // QBLOCK, segs[s, 3] == Q4_K
        # a block's products summed as one int where both halves share a scale (all but Q6_K): one float
        # conversion and update per block instead of two
        parts = 2 if segs[s, 3] == Q6_K else 1
        acc = cuda.local.array((ROWS_PER, TOKENS_PER), float32)
        isum = cuda.local.array((ROWS_PER, TOKENS_PER), int32)
        wr = cuda.local.array(ROWS_PER, int32)
        xr = cuda.local.array(TOKENS_PER, int32)
        for a in range(ROWS_PER):
            for b in range(TOKENS_PER):
                acc[a, b] = float32(0.0)
        for kb0 in range(0, nblk, STEP_BLOCKS):
            _load_weights(segs, s, u8, i8, u16, u32, f16, row0, kb0, ws, wa, wb)
            _load_activations(xq, xd, xs, n_tokens, t0, kb0, nblk, xsh, xdsh, xssh, TILE_TOKENS)
            cuda.syncthreads()
            _multiply_step(ws, wa, wb, xsh, xdsh, xssh, tx, ty, parts, 8 // parts, has_min, acc, isum, wr, xr)
            cuda.syncthreads()
        _store_tile(acc, out, segs[s, 1], segs[s, 4], row0, t0, tx, ty, n_tokens, accumulate, softcap)

    return matmul_int, TILE_TOKENS


_KERNELS = {n: _make(n) for n in (WIDE, NARROW)}


def kernel(n_tokens: int, tiles: int, sm_count: int, choice: str = "auto"):
    """(kernel, token tile) of a launch: the wide tile unless it would leave SMs idle (fewer blocks than
    2 an SM) and the narrow one would not; choice "8" or "4" (tokens a thread) forces one."""
    if choice != "auto":
        return _KERNELS[int(choice)]
    wide, narrow = _KERNELS[WIDE], _KERNELS[NARROW]
    if -(-n_tokens // wide[1]) * tiles < 2 * sm_count and -(-n_tokens // narrow[1]) > -(-n_tokens // wide[1]):
        return narrow
    return wide


def tiles(mats) -> int:
    """Row tiles of a launch over these matrices (the segment table's column 5 counts in TILE_ROWS)."""
    return sum(-(-m.rows // TILE_ROWS) for m in mats)
