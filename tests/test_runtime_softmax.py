"""A prompt's attention: kernels/softmax.py (exp_f32, causal_softmax) and runtime/blas.attention_split.

Oracles: numpy's float64 exp, and softmax attention written out in float64 numpy (scores, the causal and
sliding-window mask as -inf, exp of scores minus the row max, normalised, times V).
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from ggq.runtime.blas import attention_split
from ggq.runtime.kernels.nn import exp_f32
from ggq.runtime.kernels.softmax import causal_softmax

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


@pytest.mark.parametrize("n_q, pos0, window", [(37, 0, 0), (9, 20, 0), (40, 5, 16), (2, 0, 0)])
def test_attention_split_is_float64_softmax_attention(n_q, pos0, window):
    n_head, n_kv, dim, ctx = 6, 2, 32, 64
    q = (RNG.standard_normal((n_q, n_head, dim)) * 0.7).astype(np.float32)
    k = RNG.standard_normal((n_kv, ctx, dim)).astype(np.float32)
    v = RNG.standard_normal((n_kv, ctx, dim)).astype(np.float32)
    out = np.full((n_q, n_head, dim), np.nan, np.float32)
    attention_split(q, k, v, pos0, window, out)
    np.testing.assert_allclose(out, _float64_attention(q, k, v, pos0, window), atol=2e-5)


def test_causal_softmax_rows_sum_to_one_over_the_keys_they_may_see():
    scores = RNG.standard_normal((3, 5, 12)).astype(np.float32) * 10
    causal_softmax(scores, 4, 3)  # row i is query position 4 + i; it sees keys 2 + i .. 4 + i
    for i in range(5):
        seen = slice(max(0, 4 + i - 2), 4 + i + 1)
        np.testing.assert_allclose(scores[:, i, seen].sum(axis=1), 1.0, rtol=1e-6)
        assert np.all(scores[:, i, :seen.start] == 0) and np.all(scores[:, i, seen.stop:] == 0)
