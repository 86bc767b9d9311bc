"""Matvec, tile-decode and float prompt kernels of the runtime, for every weight type.

Oracle: the `gguf` package's numpy dequantizer (gguf.quants.dequantize, independent of ggq), then a
float64 matrix-vector product.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from ggq.qtypes import QTYPES
from ggq.runtime.kernels import WEIGHT_KERNELS, weight_kernels
from ggq.runtime.kernels.float_tile import FLOAT_MATMAT

ROWS, N = 7, 512
F16_FIELDS = {"d", "m", "dmin"}


def random_blocks(type_name: str, rng: np.random.Generator) -> np.ndarray:
    """Random bytes for every field, except that f16 scales hold small finite values."""
    t = QTYPES[type_name]
    if not t.is_quantized:
        values = rng.standard_normal((ROWS, N)).astype(np.float32)
        if type_name == "F16":
            return values.astype(np.float16).view(np.uint8)
        if type_name == "BF16":
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return values.view(np.uint8)
    nb = N // t.block_size
    blocks = rng.integers(0, 256, (ROWS, nb, t.type_size), dtype=np.uint8)
    offset = 0
    for name, size in t.fields:
        if name in F16_FIELDS:
            scales = (rng.uniform(-1, 1, (ROWS, nb)) * 0.05).astype(np.float16)
            blocks[:, :, offset:offset + 2] = scales.view(np.uint8).reshape(ROWS, nb, 2)
        offset += size
    return blocks.reshape(ROWS, nb * t.type_size)


def oracle_dequantize(blocks: np.ndarray, type_name: str) -> np.ndarray:
    return np.asarray(gguf_dequantize(blocks, GGMLQuantizationType[type_name]), dtype=np.float64)


@pytest.mark.parametrize("type_name", list(WEIGHT_KERNELS))
def test_matvec_matches_dequantize_then_dot(type_name):
    rng = np.random.default_rng(sum(map(ord, type_name)))
    blocks = random_blocks(type_name, rng)
    x = rng.standard_normal(N).astype(np.float32)
    matvec, _, view = weight_kernels(type_name)
    out = np.empty(ROWS, dtype=np.float32)
    matvec(blocks.view(view), x, out)
    dense = oracle_dequantize(blocks, type_name)
    expected = dense @ x.astype(np.float64)
    # float32 accumulation over N terms: error relative to the size of the terms, not of the sum
    scale = np.abs(dense) @ np.abs(x.astype(np.float64))
    assert np.all(np.abs(out - expected) <= 1e-5 * scale + 1e-6), type_name


@pytest.mark.parametrize("type_name", list(WEIGHT_KERNELS))
def test_decode_rows_matches_dequantize(type_name):
    rng = np.random.default_rng(1 + sum(map(ord, type_name)))
    blocks = random_blocks(type_name, rng)
    _, decode_rows, view = weight_kernels(type_name)
    out = np.empty((3, N), dtype=np.float32)
    decode_rows(blocks.view(view), 2, out)
    expected = oracle_dequantize(blocks, type_name)[2:5]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_half_to_float_is_exact_for_every_bit_pattern():
    """Oracle: numpy's float16 -> float32 widening, over all 65536 encodings (inf and NaN included)."""
    from numba import njit

    from ggq.runtime.kernels.floats import half_to_float

    @njit
    def widen(h, out):
        for i in range(h.shape[0]):
            out[i] = half_to_float(h[i])

    bits = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536, np.float32)
    widen(bits, out)
    np.testing.assert_array_equal(out.view(np.uint32), bits.view(np.float16).astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("type_name", ["F16", "BF16"])
@pytest.mark.parametrize("n", [1, 15, 100, 576])
def test_float_matvec_rows_of_any_length(type_name, n):
    """The vector-IR rows take 16 values at a time; the rest of the row (n % 16) goes through the scalar
    tail. Oracle: gguf's dequantize, then a float64 dot."""
    rng = np.random.default_rng(n)
    values = rng.standard_normal((7, n)).astype(np.float32)
    stored = gguf_quantize(values, GGMLQuantizationType[type_name])
    x = rng.standard_normal(n).astype(np.float32)
    matvec, _, view = weight_kernels(type_name)
    out = np.empty(7, dtype=np.float32)
    matvec(np.ascontiguousarray(stored).view(np.uint8).view(view).reshape(7, n), x, out)
    dense = oracle_dequantize(np.ascontiguousarray(stored).view(np.uint8).reshape(7, -1), type_name)
    scale = np.abs(dense) @ np.abs(x.astype(np.float64))
    assert np.all(np.abs(out - dense @ x.astype(np.float64)) <= 1e-5 * scale + 1e-6)
    prefetched = np.empty(7, dtype=np.float32)  # the tuned prefetch distance changes no bits
    matvec(np.ascontiguousarray(stored).view(np.uint8).view(view).reshape(7, n), x, prefetched, 4096)
    assert np.array_equal(prefetched, out)


@pytest.mark.parametrize("type_name", list(FLOAT_MATMAT))
@pytest.mark.parametrize("rows, tokens", [(37, 11), (16, 1), (5, 3), (70, 17)])
def test_float_prompt_kernel_matches_dequantize_then_matmul(type_name, rows, tokens):
    """kernels/float_tile: panels of LANES rows and a remainder, runs of TOKENS tokens and a rest."""
    rng = np.random.default_rng(rows + sum(map(ord, type_name)))
    values = rng.standard_normal((rows, N)).astype(np.float32)
    blocks = {"F32": values.view(np.uint8), "F16": values.astype(np.float16).view(np.uint8),
              "BF16": (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)}[type_name]
    _, _, view = weight_kernels(type_name)
    x = rng.standard_normal((tokens, N)).astype(np.float32)
    out = np.full((tokens, rows), np.nan, np.float32)
    FLOAT_MATMAT[type_name](blocks.view(view), x, out)
    dense = oracle_dequantize(blocks, type_name)
    expected = x.astype(np.float64) @ dense.T
    scale = np.abs(x.astype(np.float64)) @ np.abs(dense).T
    assert np.all(np.abs(out - expected) <= 1e-5 * scale + 1e-6), type_name
