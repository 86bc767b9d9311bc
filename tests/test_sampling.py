"""ggq.runtime.sampling. ORACLES: numpy argmax (greedy), the definitions of the samplers in llama.cpp's
src/llama-sampler.cpp (top-k/top-p/min-p/repeat-penalty semantics, checked on hand-computed small cases) and
a chi-square test of the drawn frequencies against softmax(logits) computed independently here."""
from __future__ import annotations

import numpy as np
import pytest

from ggq.errors import GGQError
from ggq.runtime.sampling import Sampler, SamplerSettings, apply_repeat_penalty, min_p, top_k, top_p

RNG = np.random.default_rng(1234)
LOGITS = [RNG.normal(size=1000).astype(np.float32) * 3 for _ in range(20)]


def test_greedy_is_argmax():
    s = Sampler(SamplerSettings(temperature=0.0))
    assert all(s.sample(x, []) == int(np.argmax(x)) for x in LOGITS)


def test_top_k_1_is_argmax():
    s = Sampler(SamplerSettings(temperature=1.5, top_k=1, top_p=1.0, min_p=0.0, seed=3))
    assert all(s.sample(x, []) == int(np.argmax(x)) for x in LOGITS)


def test_seed_reproducible():
    a = Sampler(SamplerSettings(seed=42))
    b = Sampler(SamplerSettings(seed=42))
    c = Sampler(SamplerSettings(seed=43))
    ra = [a.sample(x, []) for x in LOGITS * 5]
    assert ra == [b.sample(x, []) for x in LOGITS * 5]
    assert ra != [c.sample(x, []) for x in LOGITS * 5]


def test_distribution_chi_square():
    """temp 1, no truncation: frequencies follow softmax (chi-square, 9 dof, 0.1% critical value 27.9)."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2, -2.0, 0.8], dtype=np.float32)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum()
    s = Sampler(SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7))
    n = 20000
    counts = np.bincount([s.sample(logits, []) for _ in range(n)], minlength=10)
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 27.9, (chi2, counts, n * p)


def test_truncation_semantics():
    ids = np.arange(5)
    vals = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))
    k_ids, k_vals = top_k(ids, vals[::-1].copy(), 2)          # sorted descending on the way out
    assert k_ids.tolist() == [4, 3]
    assert top_p(ids, vals, 0.69)[0].tolist() == [0, 1]      # 0.5 + 0.2 reaches 0.69
    assert top_p(ids, vals, 0.71)[0].tolist() == [0, 1, 2]
    assert top_p(ids, vals, 0.3)[0].tolist() == [0]
    assert min_p(ids, vals, 0.35)[0].tolist() == [0, 1]      # p >= 0.35 * 0.5 = 0.175
    assert min_p(ids, vals, 0.25)[0].tolist() == [0, 1, 2]   # p >= 0.125


def test_repeat_penalty():
    logits = np.array([2.0, -2.0, 1.0, 0.0], dtype=np.float32)
    out = apply_repeat_penalty(logits, [0, 1, 1, 3], 2.0, 64)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.0]
    assert apply_repeat_penalty(logits, [0, 1], 2.0, 1).tolist() == [2.0, -4.0, 1.0, 0.0]   # only the last id
    s = Sampler(SamplerSettings(temperature=0.0, repeat_penalty=10.0))
    assert s.sample(np.array([3.0, 2.0], dtype=np.float32), [0]) == 1


def test_bad_settings():
    with pytest.raises(GGQError):
        Sampler(SamplerSettings(repeat_penalty=0.0))
