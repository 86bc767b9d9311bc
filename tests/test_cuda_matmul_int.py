"""The prompt path's integer matmul (runtime/cuda/matmul_int.py) under Numba's CUDA simulator: activations
rounded to int8 blocks as numpy rounds them, and products against float64 numpy of gguf-py's dequantized
weights with those rounded activations.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_cuda_kernels import matvec, pack, q8_blocks  # sets NUMBA_ENABLE_CUDASIM before numba.cuda is imported

from numba import cuda  # noqa: E402

from ggq.runtime.cuda import kernels as kn  # noqa: E402
from ggq.runtime.cuda import matmul_int as mi  # noqa: E402
from ggq.runtime.kernels import nn  # noqa: E402
from ggq.runtime.cuda.matvec import matvec_args  # noqa: E402


def quantized(x: np.ndarray, prep: int = kn.PREP_COPY, w=None, gelu: bool = False):
    n, k = x.shape[0], x.shape[1] // (2 if prep == kn.PREP_SILU else 1)
    xq, xd, xs = (cuda.to_device(np.zeros((n, k // 4), np.int32)), cuda.to_device(np.zeros((n, k // 32), np.float32)),
                  cuda.to_device(np.zeros((n, k // 32), np.float32)))
    w = np.ones(k, np.float32) if w is None else w
    mi.quantize_rows[(n,), mi.QUANT_THREADS](cuda.to_device(x), k, prep, cuda.to_device(w), 1e-6, gelu, xq, xd, xs)
    return xq, xd, xs


def values(xq, xd):
    """The activations the int8 blocks stand for (float64)."""
    q = xq.copy_to_host().view(np.int8).astype(np.float64)
    return (q.reshape(q.shape[0], -1, 32) * xd.copy_to_host()[..., None]).reshape(q.shape[0], -1)


def test_quantize_rows_rounds_blocks_of_32_as_q8_1():
    """Words of 4 int8 values, scale max|x| / 127 and scale * sum(q) per block; a zero block stays zero."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    x[1, 32:64] = 0.0
    xq, xd, xs = (a.copy_to_host() for a in quantized(x))
    b = x.reshape(3, 3, 32)
    amax = np.abs(b).max(2)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.round(b * inv[..., None]).astype(np.int64)
    np.testing.assert_array_equal(xq.view(np.int8).reshape(3, 3, 32), q)
    np.testing.assert_array_equal(xd, d)
    np.testing.assert_allclose(xs, d * q.sum(2), rtol=1e-6)
    np.testing.assert_allclose((xq.view(np.int8).reshape(3, 3, 32) * d[..., None]).reshape(3, 96),
                               q8_blocks(x).reshape(3, 96), rtol=1e-6)


def test_quantize_rows_normalizes_or_gates_before_rounding():
    """PREP_NORM: rmsnorm (float64 numpy) times w; PREP_SILU / gelu: the CPU runtime's gate kernels; the
    blocks then stand for those values to within half a step of their scale."""
    rng = np.random.default_rng(24)
    x, w = rng.standard_normal((2, 64)).astype(np.float32), rng.uniform(0.5, 1.5, 64).astype(np.float32)
    x64 = x.astype(np.float64)
    normed = x64 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + 1e-6) * w
    xq, xd, _ = quantized(x, kn.PREP_NORM, w)
    step = np.repeat(xd.copy_to_host(), 32, axis=1).astype(np.float64)
    assert np.all(np.abs(values(xq, xd) - normed) <= 0.5 * step * (1 + 1e-5) + 1e-6)
    for gelu, cpu_kernel in ((False, nn.silu_mul), (True, nn.gelu_tanh_mul)):
        gu = rng.standard_normal((2, 128)).astype(np.float32)
        gate = gu[:, :64].copy()
        cpu_kernel(gate, gu[:, 64:].copy())
        xq, xd, _ = quantized(gu, kn.PREP_SILU, gelu=gelu)
        step = np.repeat(xd.copy_to_host(), 32, axis=1).astype(np.float64)
        assert np.all(np.abs(values(xq, xd) - gate) <= 0.5 * step * (1 + 1e-5) + 1e-6)


def run(mats, x, out=None, accumulate=False, softcap=0.0, tokens_per=mi.WIDE):
    views, segs, w = pack(mats, mi.TILE_ROWS)
    n = x.shape[0]
    rows = w.shape[0]
    xq, xd, xs = quantized(x)
    d_out = cuda.to_device(np.zeros((n, rows), np.float32) if out is None else out)
    kernel, tile_tokens = mi._KERNELS[tokens_per]
    grid = (-(-n // tile_tokens), sum(-(-m.shape[0] // mi.TILE_ROWS) for _, m in mats))
    kernel[grid, mi.THREADS](segs, *matvec_args(views)[:5], xq, xd, xs, n, d_out, accumulate, softcap)
    xr = np.vstack([q8_blocks(row) for row in x])
    return d_out.copy_to_host().astype(np.float64), xr @ w.T, x.astype(np.float64) @ w.T


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_matmul_int_k_quants_across_row_tiles_and_steps(qtype):
    """70 rows (two row tiles, the second part empty) of 512 columns (16 blocks: 4 steps), 3 tokens,
    then a Q8_0 matrix in the same launch."""
    rng = np.random.default_rng(22)
    mats = [(qtype, rng.standard_normal((70, 512)).astype(np.float32)),
            ("Q8_0", rng.standard_normal((5, 512)).astype(np.float32))]
    x = rng.standard_normal((3, 512)).astype(np.float32)
    got, expected, unrounded = run(mats, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    assert np.abs(got - unrounded).max() > 1e-4          # it did round x


def test_matmul_int_legacy_blocks_partial_step_tokens_accumulate_and_softcap():
    """Q5_0 and Q8_0 at 96 columns (3 blocks: a step with a block missing), 19 tokens (two wide token tiles
    of the simulator's 16, the second mostly empty), added to what is there; then soft-capped, with the
    narrow token tile."""
    rng = np.random.default_rng(23)
    mats = [("Q5_0", rng.standard_normal((9, 96)).astype(np.float32)),
            ("Q8_0", rng.standard_normal((4, 96)).astype(np.float32))]
    x = rng.standard_normal((19, 96)).astype(np.float32)
    start = rng.standard_normal((19, 13)).astype(np.float32)
    got, expected, _ = run(mats, x, out=start.copy(), accumulate=True)
    np.testing.assert_allclose(got, expected + start, rtol=0, atol=2e-5 * np.abs(expected).max())
    capped, expected, _ = run(mats, x[:6], softcap=3.0, tokens_per=mi.NARROW)
    np.testing.assert_allclose(capped, 3.0 * np.tanh(expected / 3.0), rtol=0, atol=2e-5 * np.abs(expected).max())


def test_launch_takes_the_narrow_token_tile_where_the_wide_leaves_sms_idle():
    wide, narrow = mi._KERNELS[mi.WIDE], mi._KERNELS[mi.NARROW]
    assert narrow[1] < wide[1]
    assert mi.kernel(512, 9, 132) is (narrow if 512 // wide[1] * 9 < 264 else wide)
    assert mi.kernel(512, 200, 132) is wide
    assert mi.kernel(1, 9, 132) is wide                  # one token: a narrower tile has no more blocks
    assert mi.kernel(512, 200, 132, str(mi.NARROW)) is narrow and mi.kernel(512, 9, 132, str(mi.WIDE)) is wide


def test_prompt_and_decode_integer_paths_round_alike():
    """One token through matmul_int and through the decode's matvec_int (matvec.py) over the same four
    formats in one launch: both round x to the same int8 blocks, so they differ by float summation order."""
    rng = np.random.default_rng(25)
    mats = [(t, rng.standard_normal((3, 256)).astype(np.float32)) for t in ("Q4_K", "Q6_K", "Q5_0", "Q8_0")]
    x = rng.standard_normal((1, 256)).astype(np.float32)
    got, expected, _ = run(mats, x)
    views, segs, _ = pack(mats)
    decoded = matvec(views, segs, 12, x[0], kn.PREP_COPY, int_dots=True)
    np.testing.assert_allclose(got[0], decoded, rtol=0, atol=1e-5 * np.abs(decoded).max())
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=2e-5 * np.abs(expected).max())
