"""The value grid of one legacy ggml block (32 values) once its scale is fixed, and writing levels into it.

GPTQ rounds the columns of a block one at a time after the block's scale is chosen; for the legacy
types a block's values are v = d * (q - offset) (Q4_0, Q5_0, Q8_0) or v = d * q + m (Q4_1, Q5_1), with
d and m float16 at the start of the block and q packed as ggml lays it out (ggml-common.h):

    Q4_0  d,    qs[16]            element j < 16 in the low nibble of qs[j], j >= 16 in the high one of qs[j-16]
    Q4_1  d, m, qs[16]
    Q5_0  d,    qh[4], qs[16]     plus bit j of the little-endian uint32 qh as the fifth bit of element j
    Q5_1  d, m, qh[4], qs[16]
    Q8_0  d,    qs[32] int8
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QK = 32


@dataclass(frozen=True)
class Grid:
    has_min: bool    # v = d*q + m instead of d*(q - offset)
    offset: int      # subtracted from the stored level
    q_max: int       # stored levels are 0..q_max (Q8_0: -128..127 stored as int8, offset 0)
    q_min: int = 0
    bits5: bool = False


GRIDS = {
    "Q4_0": Grid(False, 8, 15), "Q4_1": Grid(True, 0, 15),
    "Q5_0": Grid(False, 16, 31, bits5=True), "Q5_1": Grid(True, 0, 31, bits5=True),
    "Q8_0": Grid(False, 0, 127, q_min=-128),
}


def scale_and_min(block: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """d and m (zeros where the type has no min) of one block per row: block uint8 [rows, type_size]."""
    halves = np.ascontiguousarray(block[:, :4]).view(np.float16).astype(np.float32)
    d = halves[:, 0]
    m = halves[:, 1] if GRIDS[name].has_min else np.zeros_like(d)
    return d, m


def round_column(w: np.ndarray, d: np.ndarray, m: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored levels, their float32 values) nearest to the column values w [rows] on each row's grid."""
    g = GRIDS[name]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d != 0, (w.astype(np.float32) - m) / d, 0.0)
    q = np.clip(np.rint(t) + g.offset, g.q_min, g.q_max).astype(np.int32)
    values = (d * (q - g.offset).astype(np.float32) + m).astype(np.float32)
    return q, values


def write_levels(block: np.ndarray, q: np.ndarray, name: str) -> None:
    """Store levels q [rows, 32] into the blocks [rows, type_size] (scale bytes kept)."""
    g = GRIDS[name]
    if name == "Q8_0":
        block[:, 2:] = q.astype(np.int8).view(np.uint8)
        return
    head = 4 if g.has_min else 2
    if g.bits5:
        high = ((q >> 4) & 1).astype(np.uint32) << np.arange(QK, dtype=np.uint32)
        block[:, head:head + 4] = high.sum(axis=1, dtype=np.uint32).astype("<u4")[:, None].view(np.uint8)
        head += 4
    low = (q & 0xF).astype(np.uint8)
    block[:, head:head + 16] = low[:, :16] | (low[:, 16:] << 4)
