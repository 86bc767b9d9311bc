"""Float formats F32, F16, BF16, and the fp16 helpers every block format uses for its scales.

Rounding follows ggml-base (ggml-impl.h), which is what llama-quantize writes:
- fp32 -> fp16: round to nearest even; overflow -> inf; NaN -> sign | 0x7E00 (ggml's software
  conversion returns one canonical quiet NaN; numpy keeps the payload instead).
- fp32 -> bf16: NaN -> (bits >> 16) | 0x40 (forced quiet); else round to nearest even on the top half.
- fp16/bf16 -> fp32 are exact widenings (fp16 NaN payloads are kept, as numpy does).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def f32_as_u32(typingctx, x):
    """Reinterpret a float32 scalar's bits as uint32 (an LLVM bitcast, no memory round trip)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


@intrinsic
def u32_as_f32(typingctx, x):
    """Reinterpret the low 32 bits of an integer scalar as float32 (Numba widens uint32 arithmetic
    to 64 bits, so any integer width is accepted and truncated)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], context.get_value_type(types.uint32)) if x.bitwidth > 32 else args[0]
        if x.bitwidth < 32:
            low = builder.zext(args[0], context.get_value_type(types.uint32))
        return builder.bitcast(low, context.get_value_type(types.float32))

    return types.float32(x), codegen


@njit(inline="always", cache=True)
def fp32_to_fp16_bits(x):
    """float32 -> IEEE half bits (uint16), as ggml's GGML_FP32_TO_FP16."""
    w = f32_as_u32(np.float32(x))
    sign = np.uint16((w >> np.uint32(16)) & np.uint32(0x8000))
    a = w & np.uint32(0x7FFFFFFF)
    if a > np.uint32(0x7F800000):
        return np.uint16(sign | np.uint16(0x7E00))
    if a < np.uint32(0x38800000):
        # below the smallest normal half: count units of 2^-24; the scaling is exact, rint is RNE
        # (a result of 1024 is exactly the smallest normal's encoding)
        units = np.rint(u32_as_f32(a) * np.float32(16777216.0))
        return np.uint16(sign | np.uint16(units))
    # normal: round the mantissa to 10 bits (nearest even), carry may bump the exponent
    rounded = a + np.uint32(0xFFF) + ((a >> np.uint32(13)) & np.uint32(1))
    h = (rounded - np.uint32(112 << 23)) >> np.uint32(13)
    if h > np.uint32(0x7C00):
        h = np.uint32(0x7C00)
    return np.uint16(sign | np.uint16(h))


@njit(inline="always", cache=True)
def fp16_bits_to_fp32(h):
    """IEEE half bits -> float32 (exact)."""
    h32 = np.uint32(h)
    sign = (h32 & np.uint32(0x8000)) << np.uint32(16)
    exponent = (h32 >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = h32 & np.uint32(0x3FF)
    if exponent == 0:
        # subnormal or zero: mantissa * 2^-24, exact in float32
        value = np.float32(mantissa) * np.float32(5.9604644775390625e-08)
        return u32_as_f32(f32_as_u32(value) | sign)
    if exponent == 31:
        return u32_as_f32(sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13)))
    return u32_as_f32(sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13)))


@njit(inline="always", cache=True)
def fp32_to_bf16_bits(x):
    """float32 -> bfloat16 bits, as ggml_compute_fp32_to_bf16."""
    w = f32_as_u32(np.float32(x))
    if (w & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16((w >> np.uint32(16)) | np.uint32(64))
    return np.uint16((w + (np.uint32(0x7FFF) + ((w >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16))


@njit(inline="always", cache=True)
def bf16_bits_to_fp32(h):
    return u32_as_f32(np.uint32(h) << np.uint32(16))


@njit(inline="always", cache=True)
def put_u16(out, r, j, h):
    """Store h little-endian at out[r, j:j+2] (explicit bytes: see quantize_f32 on views)."""
    out[r, j] = np.uint8(h & 0xFF)
    out[r, j + 1] = np.uint8(h >> 8)


@njit(inline="always", cache=True)
def get_u16(blocks, r, j):
    return np.uint16(blocks[r, j]) | (np.uint16(blocks[r, j + 1]) << np.uint16(8))


@njit(parallel=True, cache=True)
def quantize_f32(x, importance, out):
    for r in prange(x.shape[0]):
        # write through out[r, :]: writes through a view of out are lost inside prange (Numba 0.68)
        out[r, :] = x[r].view(np.uint8)


@njit(parallel=True, cache=True)
def dequantize_f32(blocks, out):
    for r in prange(blocks.shape[0]):
        out[r, :] = blocks[r].view(np.float32)


@njit(parallel=True, cache=True)
def quantize_f16(x, importance, out):
    for r in prange(x.shape[0]):
        for i in range(x.shape[1]):
            put_u16(out, r, 2 * i, fp32_to_fp16_bits(x[r, i]))


@njit(parallel=True, cache=True)
def dequantize_f16(blocks, out):
    for r in prange(blocks.shape[0]):
        for i in range(out.shape[1]):
            out[r, i] = fp16_bits_to_fp32(get_u16(blocks, r, 2 * i))


@njit(parallel=True, cache=True)
def quantize_bf16(x, importance, out):
    for r in prange(x.shape[0]):
        for i in range(x.shape[1]):
            put_u16(out, r, 2 * i, fp32_to_bf16_bits(x[r, i]))


@njit(parallel=True, cache=True)
def dequantize_bf16(blocks, out):
    for r in prange(blocks.shape[0]):
        for i in range(out.shape[1]):
            out[r, i] = bf16_bits_to_fp32(get_u16(blocks, r, 2 * i))
