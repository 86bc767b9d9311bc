"""Every tensor type ggq reads or writes, described once as data.

A type stores `block_size` consecutive values of a row in one block of `type_size` bytes; the fields
below are the block's layout in order, as ggml's `block_*` structs declare them (sizes in bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

QK_K = 256  # super-block size of the k-quants
K_SCALE_SIZE = 12  # packed 6-bit scales and mins of Q4_K / Q5_K


@dataclass(frozen=True)
class QType:
    name: str
    ggml_id: int
    block_size: int
    fields: tuple[tuple[str, int], ...]

    @property
    def type_size(self) -> int:
        return sum(size for _, size in self.fields)

    @property
    def is_quantized(self) -> bool:
        return self.block_size > 1

    def row_bytes(self, n_per_row: int) -> int:
        if n_per_row % self.block_size:
            raise ValueError(f"{self.name}: row of {n_per_row} is not a multiple of {self.block_size}")
        return n_per_row // self.block_size * self.type_size

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block_size


_TABLE = [
    QType("F32", 0, 1, (("f32", 4),)),
    QType("F16", 1, 1, (("f16", 2),)),
    QType("BF16", 30, 1, (("bf16", 2),)),
    QType("Q4_0", 2, 32, (("d", 2), ("qs", 16))),
    QType("Q4_1", 3, 32, (("d", 2), ("m", 2), ("qs", 16))),
    QType("Q5_0", 6, 32, (("d", 2), ("qh", 4), ("qs", 16))),
    QType("Q5_1", 7, 32, (("d", 2), ("m", 2), ("qh", 4), ("qs", 16))),
    QType("Q8_0", 8, 32, (("d", 2), ("qs", 32))),
    QType("Q2_K", 10, QK_K, (("scales", QK_K // 16), ("qs", QK_K // 4), ("d", 2), ("dmin", 2))),
    QType("Q3_K", 11, QK_K, (("hmask", QK_K // 8), ("qs", QK_K // 4), ("scales", 12), ("d", 2))),
    QType("Q4_K", 12, QK_K, (("d", 2), ("dmin", 2), ("scales", K_SCALE_SIZE), ("qs", QK_K // 2))),
    QType("Q5_K", 13, QK_K, (("d", 2), ("dmin", 2), ("scales", K_SCALE_SIZE), ("qh", QK_K // 8),
                             ("qs", QK_K // 2))),
    QType("Q6_K", 14, QK_K, (("ql", QK_K // 2), ("qh", QK_K // 4), ("scales", QK_K // 16), ("d", 2))),
    QType("Q8_K", 15, QK_K, (("d", 4), ("qs", QK_K), ("bsums", QK_K // 16 * 2))),
]

QTYPES: dict[str, QType] = {t.name: t for t in _TABLE}
BY_ID: dict[int, QType] = {t.ggml_id: t for t in _TABLE}


def qtype(t: str | int | QType) -> QType:
    """Look a type up by name (any case), ggml id, or pass a QType through."""
    if isinstance(t, QType):
        return t
    if isinstance(t, str) and t.upper() in QTYPES:
        return QTYPES[t.upper()]
    if isinstance(t, int) and t in BY_ID:
        return BY_ID[t]
    raise KeyError(f"unknown tensor type {t!r}")
