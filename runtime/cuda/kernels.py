"""The CUDA kernels of one transformer layer, for T tokens at once (T = 1 in decode).

Positions come from device memory (state[1] is the first token's position, state[0] the decode token's id)
so that a decode step captured once as a CUDA graph replays unchanged for every token.

Matrices are launched as a segment table, one row per matrix: (byte offset in the uploaded file, rows,
cols, kind, column offset in the output, first row/tile in the launch); q, k and v (or gate and up) are
one launch writing side by side into one buffer. The decode matvec (one token) is in matvec.py: it
prepares its input itself (RMSNorm of the residual, or act(gate) * up) into shared memory, so no separate
launch is needed for either.
"""
from __future__ import annotations

import math
import os

from numba import config, cuda, float32, float64

from ggq.runtime.cuda.quant import UNIT, ix, unit_dequant  # noqa: F401 - ix for the other modules

WARP = 32
# Numba's CUDA simulator runs a Python thread per GPU thread: there, blocks are made smaller (the kernels
# are written for any block size that is a multiple of 32)
SIMULATED = config.ENABLE_CUDASIM
MATVEC_WARPS = 2 if SIMULATED else int(os.environ.get("GGQ_CUDA_WARPS", 8))  # rows per matvec block (a warp a row)
THREADS = 32 if SIMULATED else 128      # threads of the per-head kernels
ROW_THREADS = 32 if SIMULATED else 256  # threads of the per-token kernels (norms, activations)
ARGMAX_THREADS = 32 if SIMULATED else 1024
PREP_NORM, PREP_SILU, PREP_GELU, PREP_COPY = 0, 1, 2, 3
# PREP_NORM with the sum of squares of x taken from sumsq[slot] (accumulated by the kernel that wrote x)
PREP_NORM_SS = 4
GELU_C = math.sqrt(2.0 / math.pi)
TILE_ROWS, TILE_TOKENS, TILE_K = 64, 64, 32   # the prompt matmul's block tile (TILE_K: two units)
TILE_K_PAD = 33                 # TILE_K + 1: a row's shared-memory stride (a constant, as shapes must be)

device = cuda.jit(device=True, inline=True)


def padded(n: int) -> int:
    """Shared-memory floats for n activations laid out with one pad per unit of 16 (bank-conflict free)."""
    return n + n // UNIT


# Warp reductions: shuffles on the GPU; Numba's CUDA simulator has none, so there the same reduction
# runs through shared memory (SCRATCH floats per block, block-wide barriers). Either way the result is
# valid in lane 0 of each warp, and every thread of the block must take part.
SCRATCH = 1024 if SIMULATED else 1

if SIMULATED:
    @device
    def _warp_reduce(value, scratch, is_max):
        tid = cuda.threadIdx.x
        lane = tid % WARP
        scratch[tid] = value
        cuda.syncthreads()
        for offset in (16, 8, 4, 2, 1):
            if lane < offset:
                other = scratch[tid + offset]
                scratch[tid] = max(scratch[tid], other) if is_max else scratch[tid] + other
            cuda.syncthreads()
        result = scratch[tid - lane]
        cuda.syncthreads()
        return result

    @device
    def _warp_allsum(value, scratch):
        return _warp_reduce(value, scratch, False)         # the simulated one gives every lane the result
else:
    @device
    def _warp_reduce(value, scratch, is_max):
        for offset in (16, 8, 4, 2, 1):
            other = cuda.shfl_down_sync(0xffffffff, value, offset)
            value = max(value, other) if is_max else value + other
        return value

    @device
    def _warp_allsum(value, scratch):
        """The warp's sum in every lane (a butterfly)."""
        for offset in (16, 8, 4, 2, 1):
            value += cuda.shfl_xor_sync(0xffffffff, value, offset)
        return value


@device
def _block_reduce(value, red, scratch, is_max):
    """Sum (or max) of `value` over the block; every thread gets it. red: shared [32] of value's type."""
    value = _warp_reduce(value, scratch, is_max)
    tid = cuda.threadIdx.x
    if tid % WARP == 0:
        red[tid // WARP] = value
    cuda.syncthreads()
    total = red[0]
    for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
        total = max(total, red[w]) if is_max else total + red[w]
    cuda.syncthreads()
    return total


@device
def _block_sum(value, red):
    return _block_reduce(value, red, cuda.shared.array(SCRATCH, float64), False)


@device
def _block_max(value, red):
    return _block_reduce(value, red, cuda.shared.array(SCRATCH, float32), True)


@device
def _inv_rms(x, t, eps, red):
    """1 / sqrt(mean(x[t]^2) + eps), summed in float64 as the CPU runtime does."""
    n = x.shape[1]
    ss = float64(0.0)
    for i in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        ss += float64(x[t, i]) * float64(x[t, i])
    ss = _block_sum(ss, red)
    return float32(1.0 / math.sqrt(ss / n + eps))


@device
def _activation(g, gelu):
    if gelu:
        g64 = float64(g)
        return float32(0.5 * g64 * (1.0 + math.tanh(GELU_C * (g64 + 0.044715 * g64 * g64 * g64))))
    return g / (float32(1.0) + float32(math.exp(-g)))


@device
def _find_segment(segs, index, column):
    """The segment holding launch-wide row/tile `index` (segs[:, column] holds each one's first)."""
    s = 0
    while s + 1 < segs.shape[0] and index >= segs[s + 1, column]:
        s += 1
    return s


@cuda.jit
def matmul(segs, u8, i8, f16, f32, x, n_tokens, out, accumulate, softcap):
    """out[t, oo + r] (+)= W_s[r] . x[t] for the prompt: a block computes a 64-row x 64-token tile,
    dequantizing 32 columns of its rows into shared memory per step; each thread sums 4 x 4 outputs."""
    ws = cuda.shared.array((TILE_ROWS, TILE_K_PAD), float32)
    xs = cuda.shared.array((TILE_TOKENS, TILE_K_PAD), float32)
    tid = cuda.threadIdx.x
    tx, ty = tid % 16, tid // 16
    s = _find_segment(segs, cuda.blockIdx.y, 5)
    row0 = (cuda.blockIdx.y - segs[s, 5]) * TILE_ROWS
    t0 = cuda.blockIdx.x * TILE_TOKENS
    rows, cols, kind, row_bytes = segs[s, 1], segs[s, 2], segs[s, 3], segs[s, 6]
    acc = cuda.local.array((4, 4), float32)
    for a in range(4):
        for b in range(4):
            acc[a, b] = 0.0
    for k0 in range(0, cols, TILE_K):
        if tid < TILE_ROWS * 2:                       # 64 rows x 2 units of 16 columns
            r, half = tid // 2, tid % 2
            if row0 + r < rows and k0 + half * UNIT < cols:
                rb = segs[s, 0] + (row0 + r) * row_bytes
                unit_dequant(kind, u8, i8, f16, f32, rb, k0 // UNIT + half, ws, r, half * UNIT, float32(1.0))
            else:                                     # past the last row or column: zeros, never garbage
                for j in range(UNIT):
                    ws[r, half * UNIT + j] = 0.0
        for e in range(tid, TILE_TOKENS * TILE_K, cuda.blockDim.x):
            t, c = e // TILE_K, e % TILE_K
            xs[t, c] = x[t0 + t, k0 + c] if t0 + t < n_tokens and k0 + c < cols else float32(0.0)
        cuda.syncthreads()
        for c in range(TILE_K):
            for a in range(4):
                w = ws[ty + 16 * a, c]
                for b in range(4):
                    acc[a, b] += w * xs[tx + 16 * b, c]
        cuda.syncthreads()
    for a in range(4):
        r = row0 + ty + 16 * a
        for b in range(4):
            t = t0 + tx + 16 * b
            if r < rows and t < n_tokens:
                v = acc[a, b]
                o = segs[s, 4] + r
                if accumulate:
                    v += out[t, o]
                if softcap > 0.0:
                    v = float32(softcap * math.tanh(v / softcap))
                out[t, o] = v


@cuda.jit
def embed(ids, emb, u8, i8, f16, f32, scale, x, sumsq):
    """x[t] = row ids[t] of the token embedding (segment table row emb[0]) times scale; one block a token.
    Block 0 also starts the step's sums of squares (matvec's PREP_NORM_SS): sumsq[0] = sum(x[0]^2), the
    other slots 0 (decode's first launch, so every later one sees them)."""
    red = cuda.shared.array(WARP, float64)
    t = cuda.blockIdx.x
    rb = emb[0, 0] + ids[t] * emb[0, 6]
    for u in range(cuda.threadIdx.x, emb[0, 2] // UNIT, cuda.blockDim.x):
        unit_dequant(emb[0, 3], u8, i8, f16, f32, rb, u, x, t, u * UNIT, scale)
    if t == 0:
        cuda.syncthreads()                  # the block's own writes of x[0] are visible to it after this
        for k in range(1 + cuda.threadIdx.x, sumsq.shape[0], cuda.blockDim.x):
            sumsq[k] = 0.0
        ss = float64(0.0)
        for i in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            ss += float64(x[0, i]) * float64(x[0, i])
        ss = _block_sum(ss, red)
        if cuda.threadIdx.x == 0:
            sumsq[0] = ss


@cuda.jit
def rmsnorm_rows(x, w, eps, out):
    """out[t] = rmsnorm(x[t]) * w; one block a token."""
    red = cuda.shared.array(WARP, float64)
    t = cuda.blockIdx.x
    inv = _inv_rms(x, t, eps, red)
    for i in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
        out[t, i] = x[t, i] * inv * w[i]


@cuda.jit
def add_rmsnorm(x, h, w, eps):
    """x[t] += rmsnorm(h[t]) * w (gemma3's post-attention and post-FFN norms)."""
    red = cuda.shared.array(WARP, float64)
    t = cuda.blockIdx.x
    inv = _inv_rms(h, t, eps, red)
    for i in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
        x[t, i] += h[t, i] * inv * w[i]


@cuda.jit
def gate_act(gu, n_ff, gelu):
    """gu[t, :n_ff] = act(gu[t, :n_ff]) * gu[t, n_ff:] (the prompt path; decode fuses this into matvec)."""
    t = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i < n_ff:
        gu[t, i] = _activation(gu[t, i], gelu) * gu[t, n_ff + i]
