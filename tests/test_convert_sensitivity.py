"""The budget allocator's predicted KL: per-tensor sensitivity (convert/sensitivity.py) times a fixed
per-type distortion table (convert/allocate.DISTORTION).

ORACLES: gguf-py's dequantizer (gguf.quants.dequantize) for the distortion table, recomputed on fresh
seeded Gaussian/Laplacian matrices; gguf-py's own Q4_1 quantizer (gguf.quants.quantize) to put weights
on a Q4_1 grid, which the prediction must not reward (issue 13, acceptance 5); a float64 numpy
log-softmax for the KL; the second-order law KL ∝ noise variance (the Fisher form of KL for small
perturbations) for the sensitivity's scale.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, dequantize as gguf_dequantize, quantize as gguf_quantize

from ggq.convert import sensitivity
from ggq.convert.allocate import DISTORTION, KURTOSIS, block_kurtosis, distortion, pick, predict
from ggq.convert.pipeline import open_checkpoint_source
from ggq.quants import quantize
import tiny_checkpoints as tiny

TEXT = "a calibration text about foxes, dogs and the weather in spring; " * 30


@pytest.mark.parametrize("column, kind", [(0, "gaussian"), (1, "laplace")])
def test_distortion_table_against_gguf_dequantize(column, kind):
    rng = np.random.default_rng(101 + column)
    shape = (48, 1536)
    w = (rng.standard_normal(shape) if kind == "gaussian" else rng.laplace(size=shape)).astype(np.float32)
    assert abs(block_kurtosis(w) / KURTOSIS[column] - 1) < 0.05
    for t, row in DISTORTION.items():
        if t == "F16":
            q = w.astype(np.float16).astype(np.float32)
        else:
            q = gguf_dequantize(quantize(w, t, None), GGMLQuantizationType[t]).reshape(shape)
        measured = np.sum(np.square(w - q, dtype=np.float64)) / np.sum(np.square(w, dtype=np.float64))
        assert abs(measured / row[column] - 1) < 0.06, (t, measured, row[column])


def test_table_orders_the_types_by_bits():
    for column in (0, 1):
        d = {t: row[column] for t, row in DISTORTION.items()}
        assert d["Q2_K"] > d["Q3_K"] > d["Q4_K"] > d["Q5_K"] > d["Q6_K"] > d["Q8_0"] > d["F16"]
        assert d["Q4_0"] > d["Q4_1"] > d["Q5_0"] > d["Q5_1"] > d["Q8_0"]
    assert distortion("Q4_0", 0.0) == DISTORTION["Q4_0"][0] and distortion("Q4_0", 99.0) == DISTORTION["Q4_0"][1]


def test_prediction_does_not_reward_a_q4_1_grid():
    """Weights that lie on a Q4_1 grid round to Q4_1 with no error; the prediction must not know it."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 512)).astype(np.float32)
    on_grid = gguf_dequantize(gguf_quantize(w, GGMLQuantizationType.Q4_1), GGMLQuantizationType.Q4_1)
    on_grid = on_grid.reshape(w.shape).astype(np.float32)
    assert np.max(np.abs(gguf_dequantize(quantize(on_grid, "Q4_1", None), GGMLQuantizationType.Q4_1)
                         .reshape(w.shape) - on_grid)) < 1e-6  # the grid is really there
    types = ["Q4_0", "Q4_1", "Q5_0", "Q4_K"]
    plain, grid = predict("blk.0.ffn_up.weight", w, 1.0, types), predict("blk.0.ffn_up.weight", on_grid, 1.0, types)
    for t in types:
        assert abs(grid[t] / plain[t] - 1) < 0.1, (t, grid[t], plain[t])
    assert grid["Q4_1"] > grid["Q5_0"]  # as on any weights: 4 bits stay worse than 5


def test_block_mean_square_and_probe_noise():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 80)).astype(np.float32) * np.arange(1, 81, dtype=np.float32)
    ms = sensitivity.block_mean_square(w)
    assert np.allclose(ms[3, 40], np.mean(w[3, 32:64].astype(np.float64) ** 2))
    assert np.allclose(ms[5, 70], np.mean(w[5, 64:].astype(np.float64) ** 2))  # the partial block
    big = rng.standard_normal((256, 256)).astype(np.float32)
    noise = sensitivity.probe_noise(big, 0.01, rng)
    assert abs(np.sum(noise.astype(np.float64) ** 2) / np.sum(big.astype(np.float64) ** 2) / 0.01 - 1) < 0.02


def test_kl_against_float64_log_softmax():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((16, 300)).astype(np.float32) * 4
    b = a + rng.standard_normal(a.shape).astype(np.float32)

    def log_softmax(x):
        x = x.astype(np.float64)
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    la, lb = log_softmax(a), log_softmax(b)
    oracle = np.mean(np.sum(np.exp(la) * (la - lb), axis=1))
    base = sensitivity.Base(a)
    assert abs(base.mean_kl(b) / oracle - 1) < 1e-4
    assert abs(base.mean_kl(a)) < 1e-6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("sensitivity")
    tiny.write_checkpoint(root / "ckpt", "llama", seed=5)
    return open_checkpoint_source(str(root / "ckpt"))


def test_sensitivity_is_second_order_in_the_noise(ckpt):
    """S = KL / delta is the same at two noise levels (KL quadratic in the noise), and positive."""
    names = ["blk.0.ffn_down.weight", "blk.1.attn_v.weight", "output.weight"]
    md = ckpt.metadata("f32")
    small = sensitivity.measure(md, ckpt.sources, TEXT, names, n_ctx=32, delta=1e-4)
    large = sensitivity.measure(md, ckpt.sources, TEXT, names, n_ctx=32, delta=4e-4)
    for n in names:
        assert small[n] > 0 and abs(large[n] / small[n] - 1) < 0.2, (n, small[n], large[n])


def test_standard_mix_is_kept_when_predicted_better():
    points = {"a": {"X": (10, 1.0), "Y": (20, 0.2)}, "b": {"X": (10, 1.0), "Y": (20, 0.5)}}
    assert pick({"a": "X", "b": "Y"}, {"a": "Y", "b": "X"}, points, 30) == {"a": "Y", "b": "X"}
    assert pick({"a": "Y", "b": "X"}, {"a": "X", "b": "Y"}, points, 30) == {"a": "Y", "b": "X"}
    assert pick({"a": "X", "b": "X"}, {"a": "Y", "b": "Y"}, points, 30) == {"a": "X", "b": "X"}  # does not fit


def test_feedback_gain_against_gptq_rounding():
    """The analytic gain Σ U_jj⁻² / tr(H) against GPTQ's real Q8_0 rounding error through H (gguf-py
    dequantizes), on random weights: the fine-grid limit the formula describes. A diagonal H leaves
    nothing to compensate: gain 1 (+ the damping)."""
    from ggq.convert.gptq import DAMP, gptq_quantize
    from ggq.qtypes import qtype
    rng = np.random.default_rng(4)
    cols = 96
    x = rng.standard_normal((400, cols)) @ (np.eye(cols) + 0.3 * rng.standard_normal((cols, cols)))
    h = x.T @ x
    w = rng.standard_normal((64, cols)).astype(np.float32)

    def energy(blocks):
        d = (w - gguf_dequantize(blocks, GGMLQuantizationType.Q8_0).reshape(w.shape)).astype(np.float64)
        return float(np.einsum("ij,ij->", d @ h, d))

    measured = energy(gptq_quantize(w, h, qtype("Q8_0"))) / energy(quantize(w, "Q8_0", None))
    gain = sensitivity.feedback_gain(h)
    assert gain < 0.8 and abs(gain / measured - 1) < 0.25, (gain, measured)
    assert abs(sensitivity.feedback_gain(np.diag(rng.random(cols) + 0.5)) - (1 + DAMP)) < 0.02
