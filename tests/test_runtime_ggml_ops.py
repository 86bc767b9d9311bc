"""The match_llamacpp kernels (runtime/kernels/ggml_ops, dot_ggml_x86, ggml_step).

Oracles: tensors dumped from llama.cpp itself (tests/fixtures/ggml_golden.npz, made by
make_ggml_golden.py: the same inputs must give the same bits), llama.cpp's greedy tokens on the test
data's Q4_1 file, the C library's cosf/sinf/powf (ctypes), numpy's float16 conversion, and float64
references of the math (close, not equal).

The llama.cpp fixtures come from its x86 AVX-512 build: on other CPUs its arithmetic differs, so those
tests compare bits only on x86 hosts with AVX-512 (the reference tests run everywhere).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from ggq.runtime.kernels import ggml_ops as go
from ggq.runtime.kernels.actquant import quantize_q8_k
from ggq.runtime.kernels.ggml_step import matvec
from ggq.runtime.kernels.step import KINDS
from ggq.runtime.tune import untuned_shapes

GOLDEN = np.load(Path(__file__).parent / "fixtures" / "ggml_golden.npz")
F32 = np.float32
LIBM = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
for _name in ("cosf", "sinf"):
    getattr(LIBM, _name).restype, getattr(LIBM, _name).argtypes = ctypes.c_float, [ctypes.c_float]


def _avx512_x86() -> bool:
    from llvmlite import binding as llvm
    return platform.machine().lower() in ("x86_64", "amd64") and "+avx512f" in llvm.get_host_cpu_features().flatten()


llamacpp_bits = pytest.mark.skipif(not _avx512_x86(), reason="fixtures hold llama.cpp's x86 AVX-512 arithmetic")


# ---- against llama.cpp's own tensors ------------------------------------------------------------
@llamacpp_bits
def test_rmsnorm_equals_llamacpp():
    out = np.empty((1, 576), F32)
    go.rmsnorm(GOLDEN["rms_x"][None], GOLDEN["rms_w"], float(GOLDEN["rms_eps"]), out)
    np.testing.assert_array_equal(out[0], GOLDEN["rms_out"])


@llamacpp_bits
def test_rope_equals_llamacpp():
    x = GOLDEN["rope_in"].copy()
    table = np.empty((x.shape[1] // 2, 2), F32)
    scale = go.rope_theta_scale(float(GOLDEN["rope_base"]), x.shape[1])
    go.rope_table(int(GOLDEN["rope_pos"]), scale, F32(1.0), np.ones(table.shape[0], F32), table)
    go.rope(x, table, False)
    np.testing.assert_array_equal(x, GOLDEN["rope_out"])


@llamacpp_bits
def test_flash_attention_equals_llamacpp():
    k, v = GOLDEN["fa_k"], GOLDEN["fa_v"]
    for q, expected, row in zip(GOLDEN["fa_q"], GOLDEN["fa_out"], GOLDEN["fa_rows"]):
        out = np.empty_like(q)
        _attend(q, k, v, int(row) + 1, 0, out)
        np.testing.assert_array_equal(out, expected)


@llamacpp_bits
def test_swiglu_equals_llamacpp():
    gate = GOLDEN["swiglu_gate"][None].copy()
    go.swiglu(gate, GOLDEN["swiglu_up"][None])
    np.testing.assert_array_equal(gate[0], GOLDEN["swiglu_out"])


CASES = ("q6_k_tiled", "q6_k_vecdot", "q4_k_gemm", "q4_k_gemv", "q5_0", "q8_0", "f16_tinyblas", "f16_vecdot",
         "q4_0_gemm", "q4_0_gemv")


@llamacpp_bits
@pytest.mark.parametrize("case", CASES)
def test_matvec_equals_llamacpp(case):
    w, x = GOLDEN[f"mv_{case}_w"], GOLDEN[f"mv_{case}_x"]
    out = _matvec(str(GOLDEN[f"mv_{case}_kind"]), w, x, int(GOLDEN[f"mv_{case}_form"]))
    np.testing.assert_array_equal(out, GOLDEN[f"mv_{case}_y"])


@llamacpp_bits
def test_greedy_tokens_equal_llamacpp_on_the_q4_1_file(q4_1_gguf):
    import ggq
    from ggq.runtime.generate import generate_ids
    from ggq.runtime.sampling import Sampler, SamplerSettings
    expected = [int(t) for t in GOLDEN["greedy_q4_1_ids"]]
    m = ggq.load(q4_1_gguf, threads=2, ctx_size=128, match_llamacpp=True)
    try:
        ids = m.tokenize(str(GOLDEN["greedy_q4_1_prompt"]), add_special=True, parse_special=True)
        out = list(generate_ids(m.transformer, m.tokenizer, ids, len(expected), Sampler(SamplerSettings(temperature=0))))
    finally:
        m.close()
    assert out == expected


# ---- against independent references --------------------------------------------------------
def test_f16_conversions_equal_numpy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(5000).astype(F32) * F32(100), rng.standard_normal(2000).astype(F32) * F32(1e-6),
                        np.array([0.0, -0.0, 65504.0, 65520.0, 1e9, -1e9, 5.96e-8, 2.98e-8], F32)])
    bits, back = _f16_round_trip(x)
    with np.errstate(over="ignore"):  # the values past 65504 become inf on both sides
        half = x.astype(np.float16)
    np.testing.assert_array_equal(bits, half.view(np.uint16))
    np.testing.assert_array_equal(back, half.astype(F32))


def test_v_expf_is_exp_within_its_documented_error():
    """ggml's comment on the polynomial: at most 1.45358 ulp, plus 0.5 ulp of rounding."""
    x = np.linspace(-87, 88, 20001, dtype=F32)
    got = np.array([go.v_expf(v) for v in x], F32)
    ref = np.exp(x.astype(np.float64))
    ulp = np.spacing(ref.astype(F32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) <= 1.46 + 0.5 + 0.25  # + the scaling's rounding near underflow
    assert go.v_expf(F32(-200.0)) == 0.0 and go.v_expf(F32(200.0)) == np.inf


def test_rope_table_is_libm_on_ggml_theta_recursion():
    scale = go.rope_theta_scale(100000.0, 64)
    table = np.empty((32, 2), F32)
    go.rope_table(777, scale, F32(1.0), np.ones(32, F32), table)
    theta = F32(777)
    for i in range(32):
        assert (table[i, 0], table[i, 1]) == (F32(LIBM.cosf(theta)), F32(LIBM.sinf(theta)))
        theta = F32(theta * scale)
    assert abs(float(scale) - 100000.0 ** (-2 / 64)) < 1e-7


def test_flash_attention_is_softmax_attention_within_f16_error():
    rng = np.random.default_rng(1)
    n_head, n_kv, dim, n_pos = 4, 2, 64, 37
    q = rng.standard_normal((n_head, dim)).astype(F32)
    k = rng.standard_normal((n_kv, n_pos, dim)).astype(np.float16)
    v = rng.standard_normal((n_kv, n_pos, dim)).astype(np.float16)
    for window in (0, 9):
        out = np.empty_like(q)
        _attend(q, k.view(np.uint16), v.view(np.uint16), n_pos, window, out)
        lo = n_pos - window if window else 0
        for h in range(n_head):
            kk, vv = k[h // 2, lo:].astype(np.float64), v[h // 2, lo:].astype(np.float64)
            s = kk @ q[h].astype(np.float16).astype(np.float64) * 0.125
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[h], p @ vv / p.sum(), atol=5e-3)


@pytest.mark.parametrize("kind,form", [("Q6_K", 0), ("Q6_K", 2), ("Q4_K", 0), ("Q4_K", 1)])
def test_kquant_matvec_is_the_float64_dot_of_dequantized_values(kind, form):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from ggq.quants import quantize
    rng = np.random.default_rng(2)
    qtype = GGMLQuantizationType[kind]
    w = quantize(rng.standard_normal((12, 512)).astype(F32), kind)
    x = rng.standard_normal(512).astype(F32)
    out = _matvec(kind, w, x, form)
    xq = np.zeros(2 * 292, np.uint8)
    quantize_q8_k(x[None], xq[None])
    blocks = xq.reshape(2, 292)  # Q8_K: float32 d, then 256 int8 (gguf-py has no Q8_K dequantizer)
    d = blocks[:, :4].copy().view(F32).astype(np.float64)
    xdq = (d * blocks[:, 4:260].view(np.int8)).reshape(-1)
    ref = dequantize(w, qtype).astype(np.float64) @ xdq
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_match_llamacpp_refuses_exact_too(q4_1_gguf):
    from ggq.errors import GGQError
    from ggq.runtime.model import open_model
    with pytest.raises(GGQError, match="exclude"):
        open_model(q4_1_gguf, ctx_size=16, exact=True, match_llamacpp=True)


# ---- helpers ------------------------------------------------------------------------------------
@njit
def _f16_round_trip(x):
    bits = np.empty(x.shape[0], np.uint16)
    back = np.empty(x.shape[0], np.float32)
    for i in range(x.shape[0]):
        bits[i] = go.f16_bits(x[i])
        back[i] = go.f16_value(bits[i])
    return bits, back


def _attend(q, k, v, n_kv, window, out):
    go.flash_attention(q, k, v, n_kv, window, F32(1 / 8), np.empty(q.shape[1], np.uint16),
                       np.empty(q.shape[1], np.uint16), np.empty(64, F32), out)


def _matvec(kind: str, w: np.ndarray, x: np.ndarray, form: int) -> np.ndarray:
    """ggml_step.matvec over a one-matrix table whose blob is w's bytes (Q4_0, Q4_K: repacked, as
    llama.cpp's layer weights are)."""
    w = np.ascontiguousarray(w).view(np.uint8)
    # all of decode's columns (offset, rows, row bytes, kind, shape, prefetch, repacked): the kernels
    # do not bounds-check, and a short row once left "repacked" to whatever memory followed it
    mats = np.array([[0, w.shape[0], w.shape[1], KINDS.index(kind), 0, 0, kind in ("Q4_0", "Q4_K")]], np.int64)
    mats[:, 4] = untuned_shapes(mats)
    out = np.empty(w.shape[0], F32)
    xq = np.empty(8192, np.uint8)
    matvec(w.reshape(-1), mats, 0, x.astype(F32), out, xq, form)
    return out
