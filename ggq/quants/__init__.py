"""Block formats: quantize float32 rows into ggml blocks and back, bit-exact with ggml.

    blocks = quantize(w, "Q4_K", importance=None)   # float32 [..., n] -> uint8 [..., n/256*144]
    w2 = dequantize(blocks, "Q4_K")                 # uint8 [..., nbytes] -> float32 [..., n]

Each format's kernels live in one module per family (floats, legacy, kquants); the table below says
where. Every kernel is a Numba function over 2-D arrays, parallel over rows:
    quantize_<name>(x: f32[rows, n], importance: f32[n] (or empty), out: u8[rows, nbytes])
    dequantize_<name>(blocks: u8[rows, nbytes], out: f32[rows, n])
`importance` weights the error that a format's scale search minimizes, as llama.cpp's `quant_weights`
(importance matrix) does; formats without such a search ignore it.
"""
from __future__ import annotations

import importlib

import numpy as np

from ggq.qtypes import QType, qtype

# type name -> module (under ggq.quants) holding quantize_<name> / dequantize_<name>
KERNEL_MODULE: dict[str, str] = {
    "F32": "floats", "F16": "floats", "BF16": "floats",
    "Q4_0": "legacy", "Q4_1": "legacy", "Q5_0": "legacy", "Q5_1": "legacy", "Q8_0": "legacy",
    "Q2_K": "kquants", "Q3_K": "kquants", "Q4_K": "kquants", "Q5_K": "kquants", "Q6_K": "kquants",
    "Q8_K": "kquants",
}


def _kernel(t: QType, verb: str):
    module = importlib.import_module(f"ggq.quants.{KERNEL_MODULE[t.name]}")
    return getattr(module, f"{verb}_{t.name.lower()}")


def quantize(x: np.ndarray, qt: str | int | QType, importance: np.ndarray | None = None) -> np.ndarray:
    """float32 values [..., n] -> uint8 blocks [..., n / block_size * type_size]."""
    t = qtype(qt)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if importance is None:
        weights = np.empty(0, dtype=np.float32)
    else:
        weights = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if weights.size != n:
            raise ValueError(f"importance has {weights.size} values for rows of {n}")
    out = np.empty((rows.shape[0], t.row_bytes(n)), dtype=np.uint8)
    _kernel(t, "quantize")(rows, weights, out)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def dequantize(blocks: np.ndarray, qt: str | int | QType) -> np.ndarray:
    """uint8 blocks [..., nbytes] -> float32 values [..., nbytes / type_size * block_size]."""
    t = qtype(qt)
    blocks = np.ascontiguousarray(blocks).view(np.uint8)
    nbytes = blocks.shape[-1]
    if nbytes % t.type_size:
        raise ValueError(f"{t.name}: row of {nbytes} bytes is not a whole number of blocks")
    rows = blocks.reshape(-1, nbytes)
    out = np.empty((rows.shape[0], nbytes // t.type_size * t.block_size), dtype=np.float32)
    _kernel(t, "dequantize")(rows, out)
    return out.reshape(*blocks.shape[:-1], out.shape[-1])
