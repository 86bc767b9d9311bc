"""A prompt's attention: kernels/attention_tile.py (softmax_row, prompt_attention) and nn.exp_f32.

Oracles: numpy's float64 exp, and softmax attention written out in float64 numpy (scores, the causal and
sliding-window mask as -inf, exp of scores minus the row max, normalised, times V).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from ggq.runtime.kernels.attention_tile import prompt_attention, softmax_row
from ggq.runtime.kernels.nn import exp_f32

RNG = np.random.default_rng(7)


@njit(cache=False)
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


def test_exp_f32_within_a_few_ulp_of_float64_exp():
    x = np.concatenate([-np.linspace(0, 87, 200001), [-1e-30, -0.0, -0.5 * np.log(2)]]).astype(np.float32)
    got = np.empty_like(x)
    _exp_all(x, got)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - exact) / exact) < 3e-7


def _float64_attention(q, k, v, pos0, window):
    n_q, n_head, _ = q.shape
    group = n_head // k.shape[0]
    out = np.empty(q.shape, np.float64)
    query = np.arange(pos0, pos0 + n_q)[:, None]
    key = np.arange(pos0 + n_q)[None, :]
    hidden = (key > query) | ((key <= query - window) if window else False)
    for h in range(n_head):
        s = q[:, h].astype(np.float64) @ k[h // group, :pos0 + n_q].T.astype(np.float64)
        s[hidden] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[h // group, :pos0 + n_q]
    return out


# head dims on and off the 16-lane panels; grouped and plain heads; runs of 8 queries with short tails
@pytest.mark.parametrize("n_q, pos0, window, n_head, n_kv, dim", [
    (37, 0, 0, 6, 2, 32), (9, 20, 0, 6, 2, 32), (40, 5, 16, 6, 2, 24), (2, 0, 0, 4, 4, 16), (1, 7, 0, 2, 1, 8),
    (70, 30, 33, 3, 1, 40)])
def test_prompt_attention_is_float64_softmax_attention(n_q, pos0, window, n_head, n_kv, dim):
    ctx = pos0 + n_q + 5
    q = (RNG.standard_normal((n_q, n_head, dim)) * 0.7).astype(np.float32)
    k = RNG.standard_normal((n_kv, ctx, dim)).astype(np.float32)
    v = RNG.standard_normal((n_kv, ctx, dim)).astype(np.float32)
    out = np.full((n_q, n_head, dim), np.nan, np.float32)
    k[:, pos0 + n_q:] = np.nan  # positions past the prompt are never read
    v[:, pos0 + n_q:] = np.nan
    prompt_attention(q, k, v, pos0, window, out)
    np.testing.assert_allclose(out, _float64_attention(q, k, v, pos0, window), atol=2e-5)


def test_softmax_row_sums_to_one_over_the_keys_it_may_see():
    row = RNG.standard_normal(12).astype(np.float32) * 10
    expect = np.exp(row[2:7].astype(np.float64) - row[2:7].max())
    softmax_row(row, 2, 7)
    # float32 (x - max) of scores up to ~30 apart carries 2e-6 relative error into exp
    np.testing.assert_allclose(row[2:7], expect / expect.sum(), rtol=1e-5)
    assert np.all(row[:2] == 0) and np.all(row[7:] == 0)


_OTHER_SHAPE = """
import numpy as np, sys
sys.path.insert(0, sys.argv[1])
from test_runtime_attention_tile import _float64_attention
from ggq.runtime.kernels import float_tile
from ggq.runtime.kernels.attention_tile import prompt_attention
assert (float_tile.LANES, float_tile.TOKENS) == (16, 6)
rng = np.random.default_rng(3)
q = rng.standard_normal((23, 4, 20)).astype(np.float32) * 0.5
k, v = rng.standard_normal((2, 2, 40, 20)).astype(np.float32)
out = np.empty_like(q)
prompt_attention(q, k, v, 9, 0, out)
assert np.max(np.abs(out - _float64_attention(q, k, v, 9, 0))) < 2e-5
w = rng.standard_normal((37, 64)).astype(np.float32)
x = rng.standard_normal((13, 64)).astype(np.float32)
got = np.empty((13, 37), np.float32)
float_tile.FLOAT_MATMAT["F32"](w, x, got)
assert np.max(np.abs(got - x.astype(np.float64) @ w.T.astype(np.float64))) < 1e-4
"""


def test_the_other_register_shape_computes_the_same(tmp_path):
    """The 16 x 6 panels that CPUs without AVX-512 get (AVX2, NEON), forced here by GGQ_FLOAT_TILE in
    a process with its own Numba cache: the same float64 oracles as above."""
    env = dict(os.environ, GGQ_FLOAT_TILE="16x6", NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-P", "-c", _OTHER_SHAPE, os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
