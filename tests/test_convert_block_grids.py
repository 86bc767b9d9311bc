"""convert/block_grids.py: the grid of a ggml block with its scales fixed, and packing levels into it.

ORACLE: ggq's quantizers and dequantizers (bit-exact with ggml: test_quants_legacy.py and
test_quants_kquants.py against gguf-py and llama.cpp). Values that already lie on a block's grid must
round back to exactly that block's levels, so rewriting the levels of a quantized block (level bits
cleared first) must give back its bytes; and the values round_column reports must be what dequantize
reads from the rewritten block.
"""
from __future__ import annotations

import numpy as np
import pytest

from ggq.convert.block_grids import GRIDS, round_column
from ggq.qtypes import qtype
from ggq.quants import dequantize, quantize

# bytes of each type that hold scales (kept when levels are rewritten)
SCALE_BYTES = {"Q4_0": slice(0, 2), "Q4_1": slice(0, 4), "Q5_0": slice(0, 2), "Q5_1": slice(0, 4),
               "Q8_0": slice(0, 2), "Q4_K": slice(0, 16), "Q5_K": slice(0, 16), "Q6_K": slice(192, 210),
               "Q2_K": np.r_[0:16, 80:84], "Q3_K": slice(96, 110)}


def _blocks(name, seed):
    n = qtype(name).block_size
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((48, n)).astype(np.float32) * rng.uniform(0.01, 3, (48, 1)).astype(np.float32)
    return w, quantize(w, name)


def _round_all(values, blocks, name):
    a, b = GRIDS[name].affine(blocks)
    out = [round_column(values[:, j], a[:, j], b[:, j], name) for j in range(values.shape[1])]
    return np.stack([q for q, _ in out], 1), np.stack([v for _, v in out], 1)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_levels_round_trip(name):
    _, blocks = _blocks(name, 1)
    levels, values = _round_all(dequantize(blocks, name), blocks, name)
    rewritten = np.zeros_like(blocks)
    rewritten[:, SCALE_BYTES[name]] = blocks[:, SCALE_BYTES[name]]
    GRIDS[name].write(rewritten, levels)
    assert np.array_equal(rewritten, blocks)
    np.testing.assert_allclose(dequantize(rewritten, name), values, rtol=0, atol=1e-5 * np.abs(values).max())


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_off_grid_values_take_the_nearest_level(name):
    w, blocks = _blocks(name, 2)
    g = GRIDS[name]
    a, b = g.affine(blocks)
    for j in (0, 17, w.shape[1] - 1):
        _, values = round_column(w[:, j], a[:, j], b[:, j], name)
        candidates = a[:, j:j + 1] * np.arange(g.q_min, g.q_max + 1)[None, :] + b[:, j:j + 1]
        best = np.abs(candidates - w[:, j:j + 1]).min(axis=1)
        np.testing.assert_allclose(np.abs(values - w[:, j]), best, atol=1e-5)
