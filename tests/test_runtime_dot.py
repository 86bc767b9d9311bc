"""Integer-dot runtime kernels: activation quantizers (actquant) and matvec/matmat (dot_legacy, dot_kquants).

Oracles: the gguf package (Q8_0 reference quantizer; dequantize of every weight type and of Q8_0), and
plain numpy transcriptions of ggml's formulas written here (the x86 Q8_0/Q8_1 quantizers, Q8_1, Q8_K,
and ggml-cpu's x86 vec_dot float order for the legacy types).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from ggq.quants import quantize
from ggq.runtime.kernels.actquant import quantize_activations
from ggq.runtime.kernels.dot_table import DOT_TYPES, PROMPT_TYPES, dot_kernels
from ggq.runtime.kernels.shapes import KQUANT_CHUNKS, LEGACY_PAIRED_STEPS, LEGACY_ROW_STEPS

RNG = np.random.default_rng(1234)
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def _activations(n, tokens=None):
    shape = (n,) if tokens is None else (tokens, n)
    x = RNG.standard_normal(shape).astype(np.float32) * np.float32(3.0)
    x[..., :32] = 0.0  # an all-zero block
    x[..., 40] = 1e-30  # a tiny value next to normal ones
    return x


def _f16(values):
    return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint8).reshape(-1, 2)


# ---- (1) activation quantizers ------------------------------------------------------------------
def _q8_numpy(x, x86, with_sum):
    """ggml's Q8_0/Q8_1 block quantizer in numpy: x86 = 127/amax and round-half-even (arch/x86 AVX path),
    else quantize_row_q8_x_ref (id = 1/d, roundf)."""
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    d = amax / np.float32(127.0)
    with np.errstate(divide="ignore"):
        if x86:
            inv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
            q = np.rint(blocks * inv[:, None])
        else:
            inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
            v = blocks * inv[:, None]
            q = np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5)
    q = q.astype(np.int8)
    parts = [_f16(d)]
    if with_sum:
        parts.append(_f16(d * q.astype(np.int32).sum(axis=1).astype(np.float32)))
    parts.append(q.view(np.uint8))
    return np.concatenate(parts, axis=1).reshape(-1)


def _q8_k_numpy(x):
    """quantize_row_q8_K_ref: iscale = -127/x[argmax |x|], q = min(127, nearest_int), bsums, d = 1/iscale."""
    out = []
    for block in x.reshape(-1, 256):
        j = np.argmax(np.abs(block))  # first index of the largest |x|, as ggml's strict '>' scan
        if block[j] == 0:
            out.append(np.zeros(292, np.uint8))
            continue
        iscale = np.float32(-127.0) / block[j]
        q = np.minimum(127, np.rint(iscale * block)).astype(np.int8)
        bsums = q.astype(np.int16).reshape(16, 16).sum(axis=1).astype(np.int16)
        d = np.array([np.float32(1.0) / iscale], np.float32)
        out.append(np.concatenate([d.view(np.uint8), q.view(np.uint8), bsums.view(np.uint8)]))
    return np.concatenate(out)


def test_q8_0_generic_equals_gguf_reference_quantizer():
    x = _activations(1024)
    got = quantize_activations(x, "Q8_0", variant="generic")
    assert np.array_equal(got, gguf_quantize(x[None], GT.Q8_0)[0])


@pytest.mark.parametrize("fmt,x86", [("Q8_0", True), ("Q8_1", True), ("Q8_0", False), ("Q8_1", False)])
def test_q8_0_q8_1_equal_numpy_formula(fmt, x86):
    x = _activations(1024)
    got = quantize_activations(x, fmt, variant="x86" if x86 else "generic")
    assert np.array_equal(got, _q8_numpy(x, x86, fmt == "Q8_1"))


def test_x86_and_generic_q8_0_differ_on_ties():
    """amax = 127 gives id = 1 in both variants; 2.5 rounds to 2 (x86, half to even) vs 3 (roundf)."""
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2] = 127.0, 2.5, -3.5
    x86 = quantize_activations(x, "Q8_0").view(np.int8)[2:5]
    generic = quantize_activations(x, "Q8_0", variant="generic").view(np.int8)[2:5]
    assert list(x86) == [127, 2, -4] and list(generic) == [127, 3, -4]


def test_q8_k_equals_numpy_formula():
    x = _activations(1536)
    x[300] = -50.0  # the negative extreme decides the sign of iscale
    assert np.array_equal(quantize_activations(x, "Q8_K"), _q8_k_numpy(x))


# ---- (2) matvec against float64 dequantized products ----------------------------------------------
def _dequantized_activations(xq, fmt):
    """float64 values of a quantized activation row, plus the per-block correction that Q8_1's rounded
    s = fp16(d * sum(qs)) brings into the m * s term of Q4_1/Q5_1 (zero for the other formats)."""
    if fmt == "Q8_0":
        return gguf_dequantize(xq, GT.Q8_0).astype(np.float64), None
    if fmt == "Q8_K":
        b = xq.reshape(-1, 292)
        d = b[:, :4].copy().view(np.float32).astype(np.float64)
        return (b[:, 4:260].view(np.int8) * d).reshape(-1), None
    b = xq.reshape(-1, 36)
    d = b[:, :2].copy().view(np.float16).astype(np.float64)[:, 0]
    s = b[:, 2:4].copy().view(np.float16).astype(np.float64)[:, 0]
    qs = b[:, 4:].view(np.int8).astype(np.float64)
    return (qs * d[:, None]).reshape(-1), s - d * qs.sum(axis=1)


def _weights(wtype, rows, n):
    w = RNG.standard_normal((rows, n)).astype(np.float32)
    w[0] = 0.0  # an all-zero row
    if wtype in LEGACY:
        return gguf_quantize(w, GT[wtype])
    return quantize(w, wtype)


def _float64_product(w, wtype, xq, fmt):
    """(expected, scale): the float64 product of the dequantized weights and one activation row, and
    sum |w| |x| per row (the size a float32 rounding error is measured against)."""
    wf = gguf_dequantize(w, GT[wtype]).astype(np.float64)
    xf, s_correction = _dequantized_activations(xq, fmt)
    expected = wf @ xf
    if s_correction is not None:
        block_m = w.reshape(w.shape[0], -1, 20 if wtype == "Q4_1" else 24)[:, :, 2:4].copy()
        m = block_m.view(np.float16).astype(np.float64)[:, :, 0]
        expected += m @ s_correction
    return expected, np.abs(wf) @ np.abs(xf) + 1e-30


@pytest.mark.parametrize("wtype", LEGACY + KQUANTS)
def test_matvec_equals_float64_dequantized_product(wtype):
    fmt, matvec, _ = dot_kernels(wtype)
    n = 576 if wtype in LEGACY else 1536
    w = _weights(wtype, 37, n)
    xq = quantize_activations(_activations(n), fmt)
    out = np.full(w.shape[0], np.nan, np.float32)
    matvec(w, xq, out)
    expected, scale = _float64_product(w, wtype, xq, fmt)
    assert np.all(np.abs(out - expected) <= 1e-5 * scale), np.max(np.abs(out - expected) / scale)
    assert out[0] == 0.0


# ---- ggml's generic float order, exactly (legacy types) -------------------------------------------
def _legacy_ints(w, wtype):
    """Integer quants [rows, blocks, 32] and the block's d (and m) as float32, from the raw bytes."""
    size = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}[wtype]
    b = w.reshape(w.shape[0], -1, size)
    d = b[:, :, 0:2].copy().view(np.float16).astype(np.float32)[:, :, 0]
    m = b[:, :, 2:4].copy().view(np.float16).astype(np.float32)[:, :, 0] if wtype in ("Q4_1", "Q5_1") else None
    if wtype == "Q8_0":
        return b[:, :, 2:].view(np.int8).astype(np.int64), d, m
    qs = b[:, :, size - 16:].astype(np.int64)
    q = np.concatenate([qs & 15, qs >> 4], axis=2)
    if wtype in ("Q5_0", "Q5_1"):
        at = 2 if wtype == "Q5_0" else 4
        qh = b[:, :, at:at + 4].copy().view(np.uint32)[:, :, 0].astype(np.int64)
        q |= ((qh[:, :, None] >> np.arange(32)) & 1) << 4
    offset = {"Q4_0": 8, "Q5_0": 16}.get(wtype, 0)
    return q - offset, d, m


def _fma32(a, b, c):
    """float32 fused multiply-add: the exact product in float64, one rounding of the sum (a double
    rounding could differ from hardware FMA only on an exact float64 tie, which these data do not hit)."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


@pytest.mark.parametrize("pf", [0, 4096])
@pytest.mark.parametrize("step", LEGACY_ROW_STEPS + LEGACY_PAIRED_STEPS + (7,))
@pytest.mark.parametrize("wtype", LEGACY)
def test_legacy_matvec_follows_ggml_x86_float_order(wtype, step, pf):
    """Bit-exact against a numpy transcription of ggml-cpu/arch/x86/quants.c ggml_vec_dot_<t>_q8_<k>
    (AVX2 path): lane l of a block = integer sum over bytes 4l..4l+3; acc = fma(d_w * d_x, lane, acc);
    hsum_float_8(acc) = ((a4+a0) + (a6+a2)) + ((a5+a1) + (a7+a3)); plus summs = fma(m, s, summs).
    For every kernel shape the tuner may pick (rows per step; 2 and 8 two rows a 512-bit vector where
    the CPU has AVX512-VNNI, else 256-bit rows; 7 is not compiled: one row at a time),
    with and without software prefetch, so that tuning changes speed only."""
    fmt, matvec, _ = dot_kernels(wtype)
    w = _weights(wtype, 2 * max(LEGACY_ROW_STEPS) + 5, 576)  # multi-row steps, then single rows
    xq = quantize_activations(_activations(576), fmt)
    q, d, m = _legacy_ints(w, wtype)
    xb = xq.reshape(-1, 36 if fmt == "Q8_1" else 34)
    yd = xb[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    ys = xb[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
    yq = xb[:, -32:].view(np.int8).astype(np.int64)
    lanes = (q * yq[None]).reshape(w.shape[0], -1, 8, 4).sum(axis=3).astype(np.float32)
    acc = np.zeros((w.shape[0], 8), np.float32)
    summs = np.zeros(w.shape[0], np.float32)
    for ib in range(q.shape[1]):
        acc = _fma32((d[:, ib] * yd[ib])[:, None], lanes[:, ib], acc)
        if m is not None:
            summs = _fma32(m[:, ib], ys[ib], summs)
    r = acc[:, 4:] + acc[:, :4]
    expected = (r[:, 0] + r[:, 2]) + (r[:, 1] + r[:, 3])
    if m is not None:
        expected = expected + summs
    out = np.full(w.shape[0], np.nan, np.float32)
    matvec(w, xq, out, step, pf)
    assert np.array_equal(out, expected)


# ---- (3) matmat: the prompt kernels ------------------------------------------------------------
@pytest.mark.parametrize("wtype", LEGACY + KQUANTS)
@pytest.mark.parametrize("rows, tokens", [(21, 5), (64, 9), (8, 1)])
def test_matmat_equals_float64_dequantized_product(wtype, rows, tokens):
    """Every (row, token) of matmat within float32 rounding of the float64 product of gguf's
    dequantized weights and activations: row groups of 8 and a remainder, token runs of 4 and a rest."""
    fmt, _, matmat = dot_kernels(wtype)
    n = 576 if wtype in LEGACY else 512
    w = _weights(wtype, rows, n)
    xq = quantize_activations(_activations(n, tokens=tokens), fmt)
    out = np.full((tokens, rows), np.nan, np.float32)
    matmat(w, xq, out)
    for t in range(tokens):
        expected, scale = _float64_product(w, wtype, xq[t], fmt)
        assert np.all(np.abs(out[t] - expected) <= 1e-5 * scale), (t, np.max(np.abs(out[t] - expected) / scale))
    assert np.all(out[:, 0] == 0.0)


@pytest.mark.parametrize("wtype", LEGACY + KQUANTS)
def test_matmat_is_matvec_per_token_or_within_rounding(wtype):
    """Prompt kernels (PROMPT_TYPES) sum each row's blocks in their own float order, so they agree with
    decode's matvec to float32 rounding; the others run matvec's rows and agree bit for bit."""
    fmt, matvec, matmat = dot_kernels(wtype)
    n = 576 if wtype in LEGACY else 512
    w = _weights(wtype, 21, n)
    xq = quantize_activations(_activations(n, tokens=5), fmt)
    out = np.empty((5, w.shape[0]), np.float32)
    matmat(w, xq, out)
    for t in range(5):
        one = np.empty(w.shape[0], np.float32)
        matvec(w, xq[t], one)
        if wtype in PROMPT_TYPES:
            np.testing.assert_allclose(out[t], one, rtol=1e-5, atol=1e-5 * np.abs(one).max())
        else:
            assert np.array_equal(out[t], one)


def test_table_pairs_as_ggml_vec_dot_type():
    """ggml-cpu.c type_traits_cpu: Q4_1/Q5_1 use Q8_1, the other legacy types Q8_0, k-quants Q8_K."""
    assert {t: fmt for t, (fmt, _) in DOT_TYPES.items()} == {
        "Q4_0": "Q8_0", "Q4_1": "Q8_1", "Q5_0": "Q8_0", "Q5_1": "Q8_1", "Q8_0": "Q8_0",
        "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K"}


# ---- ggml's generic float order, exactly (Q4_K, Q6_K) ---------------------------------------------
def _q4_k_ints(w):
    """Per super-block: values a[256] (0..15), scale and min per 32 values, d, dmin (get_scale_min_k4)."""
    b = w.reshape(w.shape[0], -1, 144)
    d = b[..., 0:2].copy().view(np.float16).astype(np.float32)[..., 0]
    dmin = b[..., 2:4].copy().view(np.float16).astype(np.float32)[..., 0]
    q = b[..., 4:16].astype(np.int64)
    sc = np.concatenate([q[..., 0:4] & 63, (q[..., 8:12] & 15) | ((q[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([q[..., 4:8] & 63, (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)], axis=-1)
    qs = b[..., 16:].astype(np.int64).reshape(*b.shape[:2], 4, 32)
    a = np.stack([qs & 15, qs >> 4], axis=3).reshape(*b.shape[:2], 256)
    return a, np.repeat(sc, 32, axis=-1), mn, d, dmin


def _q6_k_ints(w):
    """Per super-block: values a[256] (-32..31), int8 scale per 16 values, d."""
    b = w.reshape(w.shape[0], -1, 210)
    ql = b[..., :128].astype(np.int64).reshape(*b.shape[:2], 2, 64)
    qh = b[..., 128:192].astype(np.int64).reshape(*b.shape[:2], 2, 32)
    parts = [(ql[..., :32] & 15) | ((qh >> 0) & 3) << 4, (ql[..., 32:] & 15) | ((qh >> 2) & 3) << 4,
             (ql[..., :32] >> 4) | ((qh >> 4) & 3) << 4, (ql[..., 32:] >> 4) | ((qh >> 6) & 3) << 4]
    a = np.stack(parts, axis=3).reshape(*b.shape[:2], 256) - 32
    scales = b[..., 192:208].view(np.int8).astype(np.int64)
    d = b[..., 208:210].copy().view(np.float16).astype(np.float32)[..., 0]
    return a, np.repeat(scales, 16, axis=-1), d


@pytest.mark.parametrize("pf", [0, 1024])
@pytest.mark.parametrize("chunk", KQUANT_CHUNKS)
@pytest.mark.parametrize("wtype", ["Q4_K", "Q6_K"])
def test_kquant_matvec_follows_ggml_generic_float_order(wtype, chunk, pf):
    """Bit-exact against a float32 numpy transcription of ggml_vec_dot_<t>_q8_K_generic (8 float lane
    sums, lane = value index mod 8). The integer unpacking here is checked against gguf's dequantize.
    For every kernel shape the tuner may pick (rows per work item), with and without software prefetch:
    tuning changes speed only."""
    _, matvec, _ = dot_kernels(wtype)
    w = _weights(wtype, 19, 768)
    xq = quantize_activations(_activations(768), "Q8_K").reshape(-1, 292)
    if wtype == "Q4_K":
        a, scale, mins, d, dmin = _q4_k_ints(w)
        values = d[..., None] * scale * a - (dmin[..., None] * np.repeat(mins, 32, axis=-1))
    else:
        a, scale, d = _q6_k_ints(w)
        values = d[..., None] * (scale * a)
    assert np.allclose(values.reshape(w.shape[0], -1), gguf_dequantize(w, GT[wtype]), rtol=1e-6, atol=1e-6)
    yd = xq[:, :4].copy().view(np.float32)[:, 0]
    yq = xq[:, 4:260].view(np.int8).astype(np.int64)
    bsums = xq[:, 260:].copy().view(np.int16).astype(np.int64)
    aux32 = (scale * a * yq[None]).reshape(w.shape[0], -1, 32, 8).sum(axis=2)  # [rows, blocks, lane]
    sums = np.zeros((w.shape[0], 8), np.float32)
    sumf = np.zeros(w.shape[0], np.float32)
    for i in range(a.shape[1]):
        sums += (d[:, i] * yd[i])[:, None] * aux32[:, i].astype(np.float32)
        if wtype == "Q4_K":
            sumi = (bsums[i][None] * np.repeat(mins[:, i], 2, axis=-1)).sum(axis=-1).astype(np.float32)
            sumf -= (dmin[:, i] * yd[i]) * sumi
    for lane in range(8):
        sumf += sums[:, lane]
    out = np.full(w.shape[0], np.nan, np.float32)
    matvec(w, xq.reshape(-1), out, chunk, pf)
    assert np.array_equal(out, sumf)
    from ggq.runtime.kernels.dot_kquants import lane_order_q8_k
    from ggq.runtime.kernels.vecir import X_LANES
    if X_LANES:  # the decode step's form: activations in lane order (vecir.q8_k_lane_order)
        xl = np.zeros(xq.size, np.uint8)
        lane_order_q8_k(xq.reshape(-1), xl, xq.shape[0])
        out[:] = np.nan
        matvec(w, xl, out, chunk, pf, True)
        assert np.array_equal(out, sumf)


def test_kquant_512_bit_lanes_where_they_are_not_the_default(tmp_path):
    """On CPUs that run 512-bit integer ops at half width (vecir_isa.HALF_WIDTH_ZMM, e.g. Zen 4) the
    k-quants run 256-bit lanes; GGQ_ZMM=1 brings the 512-bit ones back. Both must give the ggml generic
    float order's bits, so the test above runs again in a process of that setting (its own Numba cache)."""
    from ggq.runtime.kernels import vecir_isa as isa
    if isa._NAME not in isa.HALF_WIDTH_ZMM:
        assert isa.HAVE_ZMM == (isa.HAVE_MADD and {"+avx512bw", "+avx512vbmi"} <= isa._FEATURES
                                and not os.environ.get("GGQ_NO_ZMM"))
        return  # the default here is the 512-bit form where the CPU has it: the test above covers it
    assert not isa.HAVE_ZMM
    env = dict(os.environ, GGQ_ZMM="1", NUMBA_CACHE_DIR=str(tmp_path))
    probe = ("from ggq.runtime.kernels import vecir_isa as i; assert i.HAVE_ZMM, i.describe()")
    run = subprocess.run([sys.executable, "-P", "-c", probe], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run([sys.executable, "-P", "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "kquant_matvec_follows_ggml_generic_float_order and not 1024"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "6 passed" in run.stdout, run.stdout[-3000:]


@pytest.mark.parametrize("wtype", KQUANTS)
def test_kquant_matvec_on_lane_ordered_activations_gives_the_same_bits(wtype):
    """The decode step hands the k-quant kernels their activations with each 32-quant chunk permuted so
    that values l, l+8, l+16, l+24 (ggml's lane l) sit together (vecir.q8_k_lane_order, where the x86
    forms take them so): the permuted bytes against numpy's permutation of the Q8_K block, and the
    matvec's bits against the same matvec on the activations as quantized (itself checked above)."""
    from ggq.runtime.kernels.dot_kquants import lane_order_q8_k
    from ggq.runtime.kernels.vecir import X_LANES
    _, matvec, _ = dot_kernels(wtype)
    n = 1536
    w = _weights(wtype, 37, n)
    xq = quantize_activations(_activations(n), "Q8_K").reshape(-1)
    xl = np.zeros_like(xq)
    lane_order_q8_k(xq, xl, n // 256)
    blocks, lanes = xq.reshape(-1, 292), xl.reshape(-1, 292)
    order = [l + 8 * j for l in range(8) for j in range(4)]
    quants = blocks[:, 4:260].reshape(-1, 8, 32)[:, :, order].reshape(-1, 256)
    assert np.array_equal(lanes[:, 4:260], quants)
    assert np.array_equal(lanes[:, :4], blocks[:, :4]) and np.array_equal(lanes[:, 260:], blocks[:, 260:])
    want = np.full(w.shape[0], np.nan, np.float32)
    matvec(w, xq, want)
    got = np.full(w.shape[0], np.nan, np.float32)
    matvec(w, xl if X_LANES else xq, got, 16, 0, True)
    assert np.array_equal(got, want)
