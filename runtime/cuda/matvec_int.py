"""The decode matvec's integer dots: activations rounded to int8 blocks of 32 (one float scale each, as
llama.cpp's q8_1 and the CPU runtime's default path), weights dotted 4 quants a word with `__dp4a`.

Why: the float row functions in matvec.py unpack, convert and multiply every weight on its own (about 5
instructions a weight, int-to-float conversions at a quarter of the FMA rate), which kept the 1.1B
model's matvecs instruction-bound at ~6 % of DRAM bandwidth. Here a 32-bit word of quants is masked
into 4 bytes and dotted with 4 int8 activations in one instruction. numba.cuda has no dp4a intrinsic, so
it comes from a one-line CUDA C++ shim (bench/cuda_dp4a_probe.py: exact and inlined); the simulator
gets a Python twin. Only the formats with a row function here (Q4_K, Q6_K, Q5_0, Q8_0) take this path;
the others dot the float activations that the block prepared beside the int8 ones.

Sums of the activations (for a format's offset: Q4_K's mins, Q5_0's 16, Q6_K's 32) are taken from the
int8 values too, with dp4a against 0x01010101, so the block needs no extra sums per group.
"""
from __future__ import annotations

from numba import cuda, float32, int8, int32, uint32

from ggq.runtime.cuda.kernels import PREP_COPY, PREP_GELU, PREP_SILU, SIMULATED, _activation, ix
from ggq.runtime.cuda.quant import Q4_K, Q5_0, Q6_K, Q8_0, _scale_min_k4

device = cuda.jit(device=True, inline=True)
ONES = 0x01010101
LOW = 0x0F0F0F0F
QBLOCK = 32                     # activations per int8 block (one scale)
_SHIM = 'extern "C" __device__ int ggq_dp4a(int *r, int a, int b, int c) { *r = __dp4a(a, b, c); return 0; }'

if SIMULATED:
    @device
    def dp4a(a, b, c):
        s = c
        for k in range(4):
            s += int32(int8((a >> (8 * k)) & 255)) * int32(int8((b >> (8 * k)) & 255))
        return int32(s)
else:
    dp4a = cuda.declare_device("ggq_dp4a", int32(int32, int32, int32), link=[cuda.CUSource(_SHIM)])

INT_KINDS = (Q4_K, Q6_K, Q5_0, Q8_0)


def int_shared_words(n: int) -> int:
    """Extra shared 4-byte words the integer path needs for n activations: n / 4 quant words, n / 32 scales."""
    return n // 4 + n // QBLOCK


@device
def _byte(q):
    return (q & 255)


if SIMULATED:
    @device
    def _group4_max(v, tmp):
        """max of v over the 4 threads tid - tid % 4 .. + 3 (the simulator has no shuffles: shared memory,
        every thread of the block taking part)."""
        tid = cuda.threadIdx.x
        tmp[tid] = v
        cuda.syncthreads()
        g = tid - tid % 4
        m = max(max(tmp[g], tmp[g + 1]), max(tmp[g + 2], tmp[g + 3]))
        cuda.syncthreads()
        return m
else:
    @device
    def _group4_max(v, tmp):
        """max of v over the 4 lanes lane - lane % 4 .. + 3: two butterfly shuffles, no barrier."""
        v = max(v, cuda.shfl_xor_sync(0xffffffff, v, 1))
        return max(v, cuda.shfl_xor_sync(0xffffffff, v, 2))


@device
def _pack4(a, b, c, d, inv):
    """4 values rounded to int8 by inv, little-endian in one word."""
    return int32(uint32(_byte(int32(round(a * inv))) | (_byte(int32(round(b * inv))) << 8)
                        | (_byte(int32(round(c * inv))) << 16) | (_byte(int32(round(d * inv))) << 24)))


@device
def prepare_quantized(x, up, norm_w, inv_rms, prep, xs, pos, xq, dx, tmp):
    """xs = prep(x[0]) (floats, padded layout: for formats without an integer row function) and, in the
    same pass, xq / dx = its int8 blocks of 32 and their scales (max |v| / 127, as ggml's q8_1).

    Why one pass: preparing into shared memory, a barrier, then reading back to round (two more
    barriers a round) cost ~1.4 us of dependent round trips in every matvec launch (bench/RESULTS.md,
    cuda_vs_llamacpp breakdown). Here a thread keeps its 8 consecutive values in registers, the 4
    threads of a block of 32 (adjacent lanes of one warp) share their max through shuffles, and each
    thread writes its 2 words; one barrier at the end. The float arithmetic is matvec._prepare's, so
    the bits are the same. Needs n % 32 == 0; the loop is block-uniform (lanes past the end clamp)."""
    tid, nt, n = cuda.threadIdx.x, cuda.blockDim.x, x.shape[1]
    a = cuda.local.array(8, float32)
    b = cuda.local.array(8, float32)
    base = 0
    while base < n // 8:
        c = min(base + tid, n // 8 - 1)
        for k in range(8):
            a[k] = x[0, ix(8 * c + k)]
            b[k] = float32(1.0) if prep == PREP_COPY else (up[0, ix(8 * c + k)] if prep == PREP_SILU or
                                                             prep == PREP_GELU else norm_w[ix(8 * c + k)])
        m = float32(0.0)
        for k in range(8):
            if prep == PREP_COPY:
                v = a[k]
            elif prep == PREP_SILU or prep == PREP_GELU:
                v = _activation(a[k], prep == PREP_GELU) * b[k]
            else:
                v = a[k] * inv_rms * b[k]
            a[k] = v
            m = max(m, abs(v))
        amax = _group4_max(m, tmp)
        inv = float32(127.0) / amax if amax > 0.0 else float32(0.0)
        if base + tid < n // 8:
            for k in range(8):
                xs[ix(pos(8 * c + k))] = a[k]
            xq[ix(2 * c)] = _pack4(a[0], a[1], a[2], a[3], inv)
            xq[ix(2 * c + 1)] = _pack4(a[4], a[5], a[6], a[7], inv)
            if c & 3 == 0:
                dx[ix(c >> 2)] = amax / float32(127.0)
        base += nt
    cuda.syncthreads()


@device
def _w32(u16, byte):
    """The 32-bit little-endian word at an even byte offset, as two 16-bit loads."""
    half = byte >> 1
    return uint32(u16[ix(half)]) | (uint32(u16[ix(half + 1)]) << 16)


@device
def _scale_min(u8, scales, s):
    """ggml's get_scale_min_k4 (quant._scale_min_k4) of sub-block s of a Q4_K/Q5_K super-block, as floats."""
    sc, m = _scale_min_k4(u8, scales, s)
    return float32(sc), float32(m)


@device
def _ipiece_q8_0(u8, i8, u16, u32, f16, rb, blk, xq, dx):
    """One 34-byte block: 8 words of signed quants (u16 pairs: blocks are 2-aligned) against 8 of x."""
    bb = rb + 34 * blk
    s = int32(0)
    for k in range(8):
        s = dp4a(int32(_w32(u16, bb + 2 + 4 * k)), xq[ix(8 * blk + k)], s)
    return float32(f16[ix(bb >> 1)]) * dx[ix(blk)] * float32(s)


@device
def _spread4(h):
    """Bits 0..3 of h to bit 4 of bytes 0..3 (Q5_0's fifth bits, as ggml's CUDA vec_dot_q5_0)."""
    return ((h << 4) & 0x10) | ((h << 11) & 0x1000) | ((h << 18) & 0x100000) | ((h << 25) & 0x10000000)


@device
def _ipiece_q5_0(u8, i8, u16, u32, f16, rb, blk, xq, dx):
    """One 22-byte block (d, qh, qs[16]): value j = low nibble of qs[j] | bit j of qh << 4, value 16 + j
    the high nibble with bit 16 + j; value = d * (q - 16)."""
    bb = rb + 22 * blk
    qh = _w32(u16, bb + 2)
    s = int32(0)
    ones = int32(0)
    for k in range(4):
        w = _w32(u16, bb + 6 + 4 * k)
        lo = (w & LOW) | _spread4(qh >> (4 * k))
        hi = ((w >> 4) & LOW) | _spread4(qh >> (16 + 4 * k))
        xa, xb = xq[ix(8 * blk + k)], xq[ix(8 * blk + 4 + k)]
        s = dp4a(int32(lo), xa, s)
        s = dp4a(int32(hi), xb, s)
        ones = dp4a(ONES, xa, ones)
        ones = dp4a(ONES, xb, ones)
    return float32(f16[ix(bb >> 1)]) * dx[ix(blk)] * float32(s - 16 * ones)


@device
def _ipiece_q4_k(u8, i8, u16, u32, f16, rb, it, xq, dx):
    """As matvec._piece_q4_k: 4 quant words, 16 values each of sub-blocks 2p (low nibbles) and 2p + 1."""
    sb, p, h = it >> 3, (it & 7) >> 1, it & 1
    bb = rb + 144 * sb
    sc0, m0 = _scale_min(u8, bb + 4, 2 * p)
    sc1, m1 = _scale_min(u8, bb + 4, 2 * p + 1)
    w0 = (bb + 16 + 32 * p + 16 * h) >> 2
    xa = (256 * sb + 64 * p + 16 * h) >> 2           # words of x: 16 values of sub-block 2p, then of 2p + 1
    s0 = int32(0)
    s1 = int32(0)
    t0 = int32(0)
    t1 = int32(0)
    for k in range(4):
        w = u32[ix(w0 + k)]
        a, b = xq[ix(xa + k)], xq[ix(xa + 8 + k)]
        s0 = dp4a(int32(w & LOW), a, s0)
        s1 = dp4a(int32((w >> 4) & LOW), b, s1)
        t0 = dp4a(ONES, a, t0)
        t1 = dp4a(ONES, b, t1)
    d, dmin = float32(f16[ix(bb >> 1)]), float32(f16[ix((bb >> 1) + 1)])
    da, db = dx[ix(8 * sb + 2 * p)], dx[ix(8 * sb + 2 * p + 1)]
    return (d * (sc0 * da * float32(s0) + sc1 * db * float32(s1))
            - dmin * (m0 * da * float32(t0) + m1 * db * float32(t1)))


@device
def _ipiece_q6_k(u8, i8, u16, u32, f16, rb, it, xq, dx):
    """As matvec._piece_q6_k: values l in 8q..8q+7 of the 4 groups of half n; per group two words of
    6-bit quants (0..63, so dp4a's signed bytes read them right) and q - 32 through the ones-dot."""
    sb, n, q = it >> 3, (it & 7) >> 2, it & 3
    bb = rb + 210 * sb
    la, hq = bb + 64 * n + 8 * q, bb + 128 + 32 * n + 8 * q
    xw = (256 * sb + 128 * n + 8 * q) >> 2           # group g's two words at xw + 8 g
    sc = bb + 192 + 8 * n + (q >> 1)
    part = float32(0.0)
    a0, b0, h0 = _w32(u16, la), _w32(u16, la + 32), _w32(u16, hq)
    a1, b1, h1 = _w32(u16, la + 4), _w32(u16, la + 36), _w32(u16, hq + 4)
    for g in range(4):
        if g == 0:
            v0, v1 = (a0 & LOW) | ((h0 << 4) & 0x30303030), (a1 & LOW) | ((h1 << 4) & 0x30303030)
        elif g == 1:
            v0, v1 = (b0 & LOW) | ((h0 << 2) & 0x30303030), (b1 & LOW) | ((h1 << 2) & 0x30303030)
        elif g == 2:
            v0, v1 = ((a0 >> 4) & LOW) | (h0 & 0x30303030), ((a1 >> 4) & LOW) | (h1 & 0x30303030)
        else:
            v0, v1 = ((b0 >> 4) & LOW) | ((h0 >> 2) & 0x30303030), ((b1 >> 4) & LOW) | ((h1 >> 2) & 0x30303030)
        x0, x1 = xq[ix(xw + 8 * g)], xq[ix(xw + 8 * g + 1)]
        s = dp4a(int32(v1), x1, dp4a(int32(v0), x0, int32(0)))
        t = dp4a(ONES, x1, dp4a(ONES, x0, int32(0)))
        part += float32(i8[ix(sc + 2 * g)]) * dx[ix(8 * sb + 4 * n + g)] * float32(s - 32 * t)
    return float32(f16[ix((bb + 208) >> 1)]) * part


def _irow(piece):
    @device
    def row(u8, i8, u16, u32, f16, rb, cols, lane, xq, dx):
        acc = float32(0.0)
        for it in range(lane, cols // 32, 32):
            acc += piece(u8, i8, u16, u32, f16, rb, it, xq, dx)
        return acc
    return row


_irow_q8_0, _irow_q5_0, _irow_q4_k, _irow_q6_k = (_irow(f) for f in (_ipiece_q8_0, _ipiece_q5_0, _ipiece_q4_k,
                                                                      _ipiece_q6_k))


@device
def int_row_dot(kind, u8, i8, u16, u32, f16, rb, cols, lane, xq, dx):
    """This lane's share of W[row] . x for a kind in INT_KINDS (warp-uniform)."""
    if kind == Q4_K:
        return _irow_q4_k(u8, i8, u16, u32, f16, rb, cols, lane, xq, dx)
    if kind == Q6_K:
        return _irow_q6_k(u8, i8, u16, u32, f16, rb, cols, lane, xq, dx)
    if kind == Q5_0:
        return _irow_q5_0(u8, i8, u16, u32, f16, rb, cols, lane, xq, dx)
    return _irow_q8_0(u8, i8, u16, u32, f16, rb, cols, lane, xq, dx)

