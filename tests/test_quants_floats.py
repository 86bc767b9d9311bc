"""F32 / F16 / BF16 kernels (ggq/quants/floats.py).

Oracles: numpy's IEEE float16 conversion (round to nearest even, the same as ggml's
GGML_FP32_TO_FP16 for every non-NaN value); ggml-impl.h's definitions, written out below in plain
Python for the NaN cases numpy does not define the same way; the `gguf` package's BF16 quantizer,
which is a transcription of ggml_compute_fp32_to_bf16.
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from ggq.quants import dequantize, quantize


def _random_bit_patterns(n: int, seed: int = 0) -> np.ndarray:
    """Every kind of float32: normals of all magnitudes, subnormals, zeros, infs and NaNs."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    edges = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF,
                      0x00000001, 0x807FFFFF, 0x7F7FFFFF], dtype=np.uint32)
    return np.concatenate([edges, bits]).view(np.float32)


# values around fp16's rounding boundaries: subnormal ties, the largest finite, overflow
F16_EDGES = np.array([
    2.0**-25, np.nextafter(np.float32(2.0**-25), np.float32(1)), 3 * 2.0**-25, 5 * 2.0**-25,
    2.0**-24, 2.0**-14, np.nextafter(np.float32(2.0**-14), np.float32(0)), 65504.0, 65519.99,
    65520.0, 1e9, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, -2.0**-25, -65520.0, 1e-30, -1e-40,
], dtype=np.float32)


def _ggml_fp16_nan_bits(x: np.ndarray) -> np.ndarray:
    """ggml-impl.h ggml_compute_fp32_to_fp16 for NaN input: sign | 0x7E00 (one canonical NaN)."""
    return ((x.view(np.uint32) >> 16) & 0x8000 | 0x7E00).astype(np.uint16)


def test_f16_quantize_matches_numpy_rounding_and_ggml_nan():
    x = np.concatenate([_random_bit_patterns(1 << 16), F16_EDGES]).reshape(1, -1)
    ours = quantize(x, "F16").view(np.uint16)
    nan = np.isnan(x)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    expected[nan] = _ggml_fp16_nan_bits(x[nan])
    assert nan.sum() > 10 and np.isinf(x).any()
    np.testing.assert_array_equal(ours, expected)


def test_f16_dequantize_every_half_exactly():
    halves = np.arange(1 << 16, dtype=np.uint16).reshape(4, -1)
    ours = dequantize(halves.view(np.uint8), "F16")
    expected = halves.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32))


def test_bf16_quantize_matches_gguf_and_ggml_definition():
    x = _random_bit_patterns(1 << 16, seed=1).reshape(2, -1)
    ours = quantize(x, "BF16").view(np.uint16)
    oracle = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16)
    np.testing.assert_array_equal(ours, oracle)
    # ggml_compute_fp32_to_bf16 by hand on a few values: RNE ties, NaN quieting, overflow to inf
    cases = {0x3F808000: 0x3F80, 0x3F818000: 0x3F82, 0x3F808001: 0x3F81, 0x7F800001: 0x7FC0,
             0xFF810000: 0xFFC1, 0x7F7FFFFF: 0x7F80, 0x00008000: 0x0000, 0x80018000: 0x8002}
    bits = np.array(list(cases), dtype=np.uint32).reshape(1, -1)
    got = quantize(bits.view(np.float32), "BF16").view(np.uint16).ravel()
    assert [hex(v) for v in got] == [hex(v) for v in cases.values()]


def test_bf16_dequantize_every_value_exactly():
    halves = np.arange(1 << 16, dtype=np.uint16).reshape(2, -1)
    ours = dequantize(halves.view(np.uint8), "BF16")
    np.testing.assert_array_equal(ours.view(np.uint32), halves.astype(np.uint32) << 16)


def test_f32_round_trip_keeps_every_bit_including_nan_payloads():
    x = _random_bit_patterns(1 << 12, seed=2).reshape(2, -1)
    blocks = quantize(x, "F32")
    assert blocks.dtype == np.uint8 and blocks.shape == (2, x.shape[1] * 4)
    np.testing.assert_array_equal(blocks.view(np.uint32), x.view(np.uint32))
    np.testing.assert_array_equal(dequantize(blocks, "F32").view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("name", ["F16", "BF16"])
def test_half_formats_match_gguf_dequantize(name):
    """gguf.quants.dequantize is the oracle for reading files; finite values only (its F16 path is numpy's)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 256)) * np.array([[1e-6], [1.0], [3e4]])).astype(np.float32)
    blocks = quantize(x, name)
    oracle = gguf.quants.dequantize(blocks, getattr(gguf.GGMLQuantizationType, name))
    np.testing.assert_array_equal(dequantize(blocks, name).view(np.uint32), oracle.view(np.uint32))
