"""K-quant kernels (ggq/quants/kquants.py and the per-format modules).

Oracles:
- llama.cpp: tests/fixtures/kquant_golden.npz holds llama-quantize's bytes (--pure, with and without
  an imatrix) for awkward rows; made by tests/fixtures/make_kquant_golden.py.
- the gguf package: gguf.quants.dequantize for Q2_K..Q6_K.
- Q8_K (which neither llama-quantize nor gguf-py produce): a direct numpy transcription of ggml's
  quantize_row_q8_K_ref / dequantize_row_q8_K.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from ggq.qtypes import QTYPES
from ggq.quants import dequantize, quantize

GOLDEN = Path(__file__).parent / "fixtures" / "kquant_golden.npz"
KTYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["ref", "imatrix"])
@pytest.mark.parametrize("name", KTYPES)
def test_quantize_matches_llama_quantize(golden, name, with_imatrix):
    importance = golden["importance"] if with_imatrix else None
    expected = golden[name + ("_imatrix" if with_imatrix else "")]
    ours = quantize(golden["source"], name, importance)
    bad_rows = np.nonzero((ours != expected).any(axis=1))[0]
    assert bad_rows.size == 0, f"{name}: rows {bad_rows.tolist()} differ from llama-quantize"


def _awkward_rows(rng: np.random.Generator) -> np.ndarray:
    rows = rng.standard_normal((8, 512)).astype(np.float32)
    rows[1, rng.choice(512, 5, replace=False)] *= 80  # outliers
    rows[2] = 0
    rows[3] *= np.float32(1e-30)
    rows[4] = 0
    rows[4, [3, 300]] = [1.5, -4.0]  # one nonzero per block
    rows[5] = np.abs(rows[5])
    return rows


@pytest.mark.parametrize("name", KTYPES)
def test_dequantize_matches_gguf_on_quantized_rows(golden, name):
    rng = np.random.default_rng(1)
    importance = rng.random(512).astype(np.float32)
    for blocks in (quantize(_awkward_rows(rng), name), quantize(_awkward_rows(rng), name, importance),
                   golden[name], golden[name + "_imatrix"]):
        expected = gguf_dequantize(blocks, getattr(GGMLQuantizationType, name))
        np.testing.assert_array_equal(dequantize(blocks, name).view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", KTYPES)
def test_dequantize_matches_gguf_on_random_bytes(name):
    """Arbitrary bit patterns reach every packed field; fp16 scales are kept finite (NaN payloads
    are not part of the contract)."""
    t = QTYPES[name]
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (16, t.type_size), dtype=np.uint8)
    offset = 0
    for field, size in t.fields:
        if field in ("d", "dmin"):
            halves = (rng.standard_normal(16) * 0.01).astype(np.float16)
            blocks[:, offset:offset + 2] = halves.view(np.uint8).reshape(16, 2)
        offset += size
    rows = blocks.reshape(4, -1)
    expected = gguf_dequantize(rows, getattr(GGMLQuantizationType, name))
    np.testing.assert_array_equal(dequantize(rows, name).view(np.uint32), expected.view(np.uint32))


def _q8_k_reference(x: np.ndarray) -> np.ndarray:
    """ggml quantize_row_q8_K_ref for one row, in numpy float32."""
    out = []
    for block in x.reshape(-1, 256):
        amax_at = int(np.argmax(np.abs(block)))  # first index of the largest |x|, as ggml's strict >
        d = np.zeros(1, np.float32)
        qs = np.zeros(256, np.int8)
        if block[amax_at] != 0:
            iscale = np.float32(-127.0) / block[amax_at]
            qs = np.minimum(127, np.rint(iscale * block)).astype(np.int8)
            d[0] = np.float32(1.0) / iscale
        bsums = qs.reshape(16, 16).astype(np.int16).sum(axis=1, dtype=np.int16)
        out.append(np.concatenate([d.view(np.uint8), qs.view(np.uint8), bsums.view(np.uint8)]))
    return np.concatenate(out)


def test_q8_k_against_numpy_reference():
    rows = _awkward_rows(np.random.default_rng(3))
    blocks = quantize(rows, "Q8_K")
    assert blocks.shape == (8, 2 * 292)
    for r in range(rows.shape[0]):
        np.testing.assert_array_equal(blocks[r], _q8_k_reference(rows[r]))
    d = blocks.reshape(-1, 292)[:, :4].copy().view(np.float32)
    qs = blocks.reshape(-1, 292)[:, 4:260].view(np.int8).astype(np.float32)
    expected = (d * qs).reshape(rows.shape)
    np.testing.assert_array_equal(dequantize(blocks, "Q8_K").view(np.uint32), expected.view(np.uint32))


def test_kquants_keep_leading_shape_and_reject_partial_blocks():
    x = np.random.default_rng(4).standard_normal((2, 3, 256)).astype(np.float32)
    blocks = quantize(x, "Q4_K")
    assert blocks.shape == (2, 3, 144)
    assert dequantize(blocks, "Q4_K").shape == (2, 3, 256)
    with pytest.raises(ValueError):
        quantize(np.zeros((1, 320), np.float32), "Q6_K")
