"""The value grid of a ggml block once its scales are fixed, and writing levels into the block.

GPTQ rounds a block's columns one at a time after the format's scale search has fixed the block's
scales. For these types every value is affine in its stored level q: v = a * q + b, with a and b set
per element by the block's scales (ggml-common.h layouts; offsets in bytes):

    Q4_0  d@0, qs@2[16]            a = d, b = -8d            element j<16: low nibble of qs[j], else high of qs[j-16]
    Q4_1  d@0, m@2, qs@4[16]       a = d, b = m
    Q5_0  d@0, qh@2[4], qs@6[16]   a = d, b = -16d           plus bit j of uint32 qh as 5th bit
    Q5_1  d@0, m@2, qh@4, qs@8     a = d, b = m
    Q8_0  d@0, qs@2[32] int8       a = d, b = 0              (q is the signed int8)
    Q4_K  d@0, dmin@2, scales@4[12], qs@16[128]            a = d*sc_s, b = -dmin*m_s per 32 values
    Q5_K  d@0, dmin@2, scales@4[12], qh@16[32], qs@48[128]
    Q6_K  ql@0[128], qh@128[64], scales@192[16] int8, d@208  a = d*sc_s per 16 values, b = -32a
    Q2_K  scales@0[16] (4-bit sc | 4-bit m << 4), qs@16[64], d@80, dmin@82   a = d*sc, b = -dmin*m per 16
    Q3_K  hmask@0[32], qs@32[64], scales@96[12] (6-bit, -32), d@108          a = d*sc per 16, b = -4a
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

f32 = np.float32


def _fp16(block: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(block[:, at:at + 2]).view(np.float16).astype(f32)[:, 0]


def _nibbles_32(low: np.ndarray) -> np.ndarray:
    """32 levels (0..15) -> 16 bytes: element j in the low nibble of byte j%16, j>=16 in the high one."""
    return (low[:, :16] | (low[:, 16:] << 4)).astype(np.uint8)


def _bits_u32(bits: np.ndarray) -> np.ndarray:
    """32 bits per row -> 4 little-endian bytes."""
    word = (bits.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1).astype("<u4")
    return word[:, None].view(np.uint8)


# ---- legacy types -----------------------------------------------------------------------------------

def _legacy(offset: int, has_min: bool):
    def affine(block):
        d = _fp16(block, 0)
        b = _fp16(block, 2) if has_min else -f32(offset) * d
        return np.repeat(d[:, None], 32, 1), np.repeat(b[:, None], 32, 1)
    return affine


def _write_q4(head: int):
    def write(block, q):
        block[:, head:head + 16] = _nibbles_32(q.astype(np.uint8) & 0xF)
    return write


def _write_q5(head: int):
    def write(block, q):
        block[:, head:head + 4] = _bits_u32((q >> 4) & 1)
        block[:, head + 4:head + 20] = _nibbles_32(q.astype(np.uint8) & 0xF)
    return write


def _write_q8(block, q):
    block[:, 2:34] = q.astype(np.int8).view(np.uint8)


# ---- Q4_K / Q5_K ------------------------------------------------------------------------------------

def _scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 (scale, min) 6-bit pairs of each row's 12 scale bytes (ggml get_scale_min_k4)."""
    s = scales.astype(np.int64)
    sc = np.empty((s.shape[0], 8), np.int64)
    mn = np.empty_like(sc)
    sc[:, :4], mn[:, :4] = s[:, 0:4] & 63, s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def _affine_k4(block):
    d, dmin = _fp16(block, 0), _fp16(block, 2)
    sc, mn = _scale_min_k4(block[:, 4:16])
    a = (d[:, None] * sc.astype(f32)).astype(f32)
    b = -(dmin[:, None] * mn.astype(f32)).astype(f32)
    return np.repeat(a, 32, 1), np.repeat(b, 32, 1)


def _pack_k4_nibbles(q: np.ndarray) -> np.ndarray:
    """256 levels -> 128 bytes: pair j of 32-value sub-blocks shares bytes 32j..32j+31, low nibble first."""
    low = (q & 0xF).astype(np.uint8).reshape(-1, 4, 2, 32)
    return (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)


def _write_q4_k(block, q):
    block[:, 16:144] = _pack_k4_nibbles(q)


def _write_q5_k(block, q):
    high = ((q >> 4) & 1).astype(np.uint8).reshape(-1, 8, 32)  # bit s of qh[l]: element 32s + l
    block[:, 16:48] = (high << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    block[:, 48:176] = _pack_k4_nibbles(q)


# ---- Q6_K -------------------------------------------------------------------------------------------

def _affine_q6_k(block):
    d = _fp16(block, 208)
    sc = block[:, 192:208].view(np.int8).astype(f32)
    a = np.repeat((d[:, None] * sc).astype(f32), 16, 1)
    return a, (-32 * a).astype(f32)


def _write_q6_k(block, q):
    q = q.astype(np.uint8).reshape(-1, 2, 4, 32)  # half, quarter (k // 32), position within quarter
    low, high = q & 0xF, q >> 4
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    block[:, 0:128] = ql.reshape(-1, 128)
    block[:, 128:192] = qh.reshape(-1, 64)


# ---- Q2_K / Q3_K ------------------------------------------------------------------------------------

def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """256 two-bit values -> 64 bytes: half h, quarter k: bits 2k of byte 32h + l hold element 128h + 32k + l."""
    q = (q & 3).astype(np.uint8).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _affine_q2_k(block):
    d, dmin = _fp16(block, 80), _fp16(block, 82)
    sc = block[:, 0:16].astype(np.int64)
    a = (d[:, None] * (sc & 0xF).astype(f32)).astype(f32)
    b = -(dmin[:, None] * (sc >> 4).astype(f32)).astype(f32)
    return np.repeat(a, 16, 1), np.repeat(b, 16, 1)


def _write_q2_k(block, q):
    block[:, 16:80] = _pack_2bit(q)


def _q3_scales(scales: np.ndarray) -> np.ndarray:
    """The 16 signed 6-bit scales of Q3_K's 12 scale bytes: low nibbles from bytes 0..7, the high two
    bits from bytes 8..11 (ggq.quants.q3_k.get_scale)."""
    s = scales.astype(np.int64)
    j = np.arange(16)
    low = np.where(j < 8, s[:, j % 8] & 0xF, s[:, j % 8] >> 4)
    high = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    return (low | (high << 4)) - 32


def _affine_q3_k(block):
    d = _fp16(block, 108)
    a = np.repeat((d[:, None] * _q3_scales(block[:, 96:108]).astype(f32)).astype(f32), 16, 1)
    return a, (-4 * a).astype(f32)


def _write_q3_k(block, q):
    """Stored level 0..7 = 2-bit qs + 4 * hmask bit (the value is d * scale * (level - 4))."""
    high = ((q >> 2) & 1).astype(np.uint8).reshape(-1, 8, 32)  # bit s of hmask[l]: element 32s + l
    block[:, 0:32] = (high << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    block[:, 32:96] = _pack_2bit(q)


@dataclass(frozen=True)
class Grid:
    affine: Callable      # blocks [rows, type_size] -> (a, b) float32 [rows, block_size]
    write: Callable       # (blocks, levels int [rows, block_size]) -> None, scales kept
    q_min: int
    q_max: int


GRIDS = {
    "Q4_0": Grid(_legacy(8, False), _write_q4(2), 0, 15),
    "Q4_1": Grid(_legacy(0, True), _write_q4(4), 0, 15),
    "Q5_0": Grid(_legacy(16, False), _write_q5(2), 0, 31),
    "Q5_1": Grid(_legacy(0, True), _write_q5(4), 0, 31),
    "Q8_0": Grid(_legacy(0, False), _write_q8, -128, 127),
    "Q4_K": Grid(_affine_k4, _write_q4_k, 0, 15),
    "Q5_K": Grid(_affine_k4, _write_q5_k, 0, 31),
    "Q6_K": Grid(_affine_q6_k, _write_q6_k, 0, 63),
    "Q2_K": Grid(_affine_q2_k, _write_q2_k, 0, 3),
    "Q3_K": Grid(_affine_q3_k, _write_q3_k, 0, 7),
}


def round_column(w: np.ndarray, a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(levels, their float32 values) nearest to the column values w [rows] on grids v = a*q + b."""
    g = GRIDS[name]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a != 0, (w.astype(f32) - b) / a, 0.0)
    q = np.clip(np.rint(t), g.q_min, g.q_max).astype(np.int32)
    return q, (a * q.astype(f32) + b).astype(f32)
