"""Legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggq/quants/legacy.py).

Oracles: the `gguf` package's numpy quantizers (transcriptions of ggml's quantize_row_*_ref) and
dequantizers; llama.cpp's own bytes in the shared Q4_1 GGUF (made by llama-quantize, no imatrix);
for the importance path, the definition of what it optimizes (importance-weighted squared error).
Golden bytes of the importance path from llama.cpp are added separately.
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from ggq.quants import dequantize, quantize

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
N = 512


def _datasets() -> dict[str, np.ndarray]:
    """Rows of 512 (16 blocks) covering the cases where rounding and degenerate blocks differ."""
    rng = np.random.default_rng(0)
    normal = rng.standard_normal((24, N)).astype(np.float32)
    outliers = normal.copy()
    outliers[rng.integers(0, 24, 40), rng.integers(0, N, 40)] *= 100
    special = np.zeros((8, N), dtype=np.float32)
    special[1, 77] = 2.5        # single nonzero, positive
    special[2, 300] = -0.125    # single nonzero, negative
    special[3] = rng.standard_normal(N) * np.float32(1e-30)    # tiny but normal floats
    special[4] = 0.7            # constant blocks: d = 0 in the affine formats
    special[5] = np.abs(rng.standard_normal(N)) + 3           # all positive, offset
    special[6] = rng.standard_t(2, N)                         # heavy tails
    special[7] = np.round(rng.standard_normal(N) * 4) / 4     # exact ties of the rounding
    return {"normal": normal, "outliers": outliers, "special": special.astype(np.float32)}


DATASETS = _datasets()


def _gguf_type(name: str) -> gguf.GGMLQuantizationType:
    return getattr(gguf.GGMLQuantizationType, name)


@pytest.mark.parametrize("data", list(DATASETS))
@pytest.mark.parametrize("name", LEGACY)
def test_quantize_matches_gguf_reference(name, data):
    x = DATASETS[data]
    np.testing.assert_array_equal(quantize(x, name), gguf.quants.quantize(x, _gguf_type(name)))


@pytest.mark.parametrize("with_importance", [False, True])
@pytest.mark.parametrize("name", LEGACY)
def test_dequantize_matches_gguf_bit_for_bit(name, with_importance):
    x = np.concatenate(list(DATASETS.values()))
    importance = np.random.default_rng(1).random(N).astype(np.float32) if with_importance else None
    blocks = quantize(x, name, importance)
    ours = dequantize(blocks, name)
    oracle = gguf.quants.dequantize(blocks, _gguf_type(name))
    assert ours.shape == x.shape
    np.testing.assert_array_equal(ours.view(np.uint32), oracle.view(np.uint32))


def _llamacpp_tensors(path, every: int):
    """(name, type name, raw blocks) of the Q4_1 and Q8_0 tensors llama-quantize wrote."""
    reader = gguf.GGUFReader(path)
    picked = [t for t in reader.tensors if t.tensor_type.name in ("Q4_1", "Q8_0")]
    assert {t.tensor_type.name for t in picked} == {"Q4_1", "Q8_0"}
    picked = [t for i, t in enumerate(picked) if t.tensor_type.name == "Q8_0" or i % every == 0]
    return [(t.name, t.tensor_type.name, np.asarray(t.data)) for t in picked]


def test_llamacpp_blocks_dequantize_and_requantize_exactly(q4_1_gguf):
    """llama.cpp's Q4_1/Q8_0 blocks: our dequantize equals gguf's; quantizing those values again
    with the ref path reproduces llama.cpp's bytes (ggml's own ref does so: min and max of a
    decoded block are m and m + 15d, which round back to the same fp16 d and m)."""
    for name, tname, raw in _llamacpp_tensors(q4_1_gguf, every=5):
        ours = dequantize(raw, tname)
        oracle = gguf.quants.dequantize(raw, _gguf_type(tname)).reshape(ours.shape)
        np.testing.assert_array_equal(ours.view(np.uint32), oracle.view(np.uint32), err_msg=name)
        np.testing.assert_array_equal(quantize(ours, tname), raw, err_msg=name)


def _weighted_error(x, name, importance, use_importance):
    w = quantize(x, name, importance if use_importance else None)
    return float(np.sum(importance * (dequantize(w, name) - x).astype(np.float64) ** 2))


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_importance_path_lowers_importance_weighted_error(name):
    """Oracle: the definition. quantize_row_*_impl minimizes error weighted by importance, so with
    importance concentrated on a few columns its weighted error must beat the unweighted ref path."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, N)).astype(np.float32)
    importance = np.full(N, 1e-3, dtype=np.float32)
    importance[rng.choice(N, N // 8, replace=False)] = 1.0
    with_imp = _weighted_error(x, name, importance, True)
    without = _weighted_error(x, name, importance, False)
    assert with_imp < 0.9 * without, (with_imp, without)


def test_q8_0_ignores_importance():
    """ggml's quantize_q8_0 ignores quant_weights."""
    x = DATASETS["normal"]
    importance = np.random.default_rng(3).random(N).astype(np.float32)
    np.testing.assert_array_equal(quantize(x, "Q8_0", importance), quantize(x, "Q8_0"))


def test_importance_changes_the_search_for_searched_formats():
    """Guard against the importance argument being dropped on its way to the kernels."""
    x = DATASETS["normal"]
    importance = np.random.default_rng(4).random(N).astype(np.float32)
    for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]:
        assert not np.array_equal(quantize(x, name, importance), quantize(x, name)), name
