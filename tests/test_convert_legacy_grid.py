"""convert/legacy_grid.py: the grid of a legacy block with its scale fixed, and packing levels into it.

ORACLE: ggq's legacy quantizers and dequantizers (bit-exact with ggml, test_quants_legacy.py against
gguf-py): values that already lie on a block's grid must round back to exactly that block's levels, so
rewriting the levels of a quantized block must give back its bytes; and the values round_column
reports must be what dequantize reads from the rewritten block.
"""
from __future__ import annotations

import numpy as np
import pytest

from ggq.convert.legacy_grid import GRIDS, QK, round_column, scale_and_min, write_levels
from ggq.quants import dequantize, quantize


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_levels_round_trip(name):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, QK)).astype(np.float32) * rng.uniform(0.01, 3, (64, 1)).astype(np.float32)
    blocks = quantize(w, name)
    on_grid = dequantize(blocks, name)
    d, m = scale_and_min(blocks, name)
    levels = np.empty((64, QK), np.int32)
    values = np.empty((64, QK), np.float32)
    for j in range(QK):
        levels[:, j], values[:, j] = round_column(on_grid[:, j], d, m, name)
    rewritten = blocks.copy()
    rewritten[:, 4 if GRIDS[name].has_min else 2:] = 0  # keep d (and m), clear every level bit
    write_levels(rewritten, levels, name)
    assert np.array_equal(rewritten, blocks)
    np.testing.assert_allclose(dequantize(rewritten, name), values, rtol=0, atol=1e-6 * np.abs(values).max())


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_off_grid_values_take_the_nearest_level(name):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, QK)).astype(np.float32)
    blocks = quantize(w, name)
    d, m = scale_and_min(blocks, name)
    g = GRIDS[name]
    for j in (0, 17, 31):
        q, values = round_column(w[:, j], d, m, name)
        candidates = d[:, None] * (np.arange(g.q_min, g.q_max + 1) - g.offset)[None, :] + m[:, None]
        best = np.abs(candidates - w[:, j:j + 1]).min(axis=1)
        np.testing.assert_allclose(np.abs(values - w[:, j]), best, atol=1e-6)
