"""The CUDA backend's kernels under Numba's CUDA simulator (no GPU needed), on tiny shapes, against
independent references: gguf-py's dequantize for every block format, float64 numpy for the matrix
products, and the CPU runtime's own kernels (runtime/kernels/nn.py) for rope and attention.

The simulator runs a Python thread per GPU thread, so shapes are tiny and blocks small (kernels.py
shrinks them when simulated). The whole model on a real GPU is checked by bench/cuda_vs_llamacpp.py.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"   # before numba.cuda is first imported
from numba.core import config  # noqa: E402

config.reload_config()

import gguf as gguf_py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numba import cuda  # noqa: E402

from ggq.quants import quantize  # noqa: E402
from ggq.runtime.cuda import attention as at  # noqa: E402
from ggq.runtime.cuda import kernels as kn  # noqa: E402
from ggq.runtime.cuda import matvec as mv  # noqa: E402
from ggq.runtime.cuda import matvec_pairs as mp  # noqa: E402
from ggq.runtime.cuda.quant import SUPPORTED  # noqa: E402
from ggq.runtime.cuda.upload import upload_file  # noqa: E402
from ggq.runtime.kernels import nn  # noqa: E402
from ggq.runtime.kernels.step import KINDS  # noqa: E402

assert cuda.simulator_mode if hasattr(cuda, "simulator_mode") else config.ENABLE_CUDASIM


def encode(w: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(row bytes [rows, row_bytes], the values gguf-py (or numpy) reads back from them as float64)."""
    if qtype == "F32":
        return w.view(np.uint8), w.astype(np.float64)
    if qtype == "F16":
        h = w.astype(np.float16)
        return h.view(np.uint8), h.astype(np.float64)
    blocks = quantize(w, qtype)
    return blocks, gguf_py.quants.dequantize(blocks, gguf_py.GGMLQuantizationType[qtype]).astype(np.float64)


def pack(matrices: list[tuple[str, np.ndarray]], per_launch_unit: int = 1):
    """Matrices laid out one after another in a fake file, each at a multiple of 32 bytes as in a GGUF
    (the matvec's word loads rely on it); their device views, segment table, values."""
    parts, rows, values, offset, first, out_col = [np.zeros(32, np.uint8)], [], [], 32, 0, 0
    for qtype, w in matrices:
        data, seen = encode(w, qtype)
        rows.append((offset, w.shape[0], w.shape[1], KINDS.index(qtype), out_col, first, data.shape[1]))
        parts += [data.reshape(-1), np.zeros(-data.size % 32, np.uint8)]
        values.append(seen)
        offset += data.size + (-data.size % 32)
        first += -(-w.shape[0] // per_launch_unit)
        out_col += w.shape[0]
    views = upload_file(np.concatenate(parts))
    return views, cuda.to_device(np.array(rows, np.int64)), np.vstack(values)


def matvec(views, segs, n_rows, x, prep, norm_w=None, up=None, out=None, accumulate=False, softcap=0.0,
           blocks=None, int_dots=False, sumsq=None, ss_in=-1, ss_out=-1, kernel=None):
    x = x.reshape(1, -1).astype(np.float32)
    d_out = cuda.to_device(np.zeros((1, n_rows), np.float32) if out is None else out.reshape(1, -1))
    norm_w = np.ones(x.shape[1], np.float32) if norm_w is None else norm_w
    up = x if up is None else up.reshape(1, -1)
    blocks = blocks or -(-n_rows // kn.MATVEC_WARPS)
    sumsq = cuda.to_device(np.zeros(2)) if sumsq is None else sumsq
    kernel = kernel or (mv.matvec_int if int_dots else mv.matvec)
    kernel[(blocks,), kn.MATVEC_WARPS * kn.WARP, 0, mv.shared_bytes(x.shape[1], int_dots)](
        segs, *mv.matvec_args(views), cuda.to_device(x), cuda.to_device(up), cuda.to_device(norm_w), 1e-6, prep, d_out,
        accumulate, softcap, sumsq, ss_in, ss_out)
    return d_out.copy_to_host()[0].astype(np.float64)


def q8_blocks(x: np.ndarray) -> np.ndarray:
    """x as the integer path rounds it: int8 blocks of 32, scale max|x| / 127 (ggml's q8_1), as float64."""
    b = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(b).max(1, keepdims=True)
    d = amax / np.float32(127)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    return (np.round(b * inv) * d).astype(np.float64).reshape(-1)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q5_0", "Q8_0"])
def test_matvec_integer_dots_match_int8_rounded_activations(qtype):
    """The dp4a row functions (the simulator's Python dp4a): 3 rows of 512 columns, then an F16 matrix in
    the same launch (no integer row function: it dots the float activations), against float64 products
    of the dequantized weights with x rounded as the kernel rounds it."""
    rng = np.random.default_rng(11)
    views, segs, w = pack([(qtype, rng.standard_normal((3, 512)).astype(np.float32)),
                           ("F16", rng.standard_normal((2, 512)).astype(np.float32))])
    x = rng.standard_normal(512).astype(np.float32)
    got = matvec(views, segs, 5, x, kn.PREP_COPY, int_dots=True)
    expected = np.concatenate([w[:3] @ q8_blocks(x), w[3:] @ x.astype(np.float64)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    assert np.abs(got[:3] - w[:3] @ x).max() > 1e-6        # it did round x


def test_matvec_row_pairs_give_matvec_int_bits():
    """matvec_pairs (two rows a warp per round): the same bits as matvec_int, with one block (each warp
    several pairs, the last row alone), pairs across two segments of one format and of two formats
    (Q4_K + Q4_K, then Q4_K + F16: one row at a time), accumulate and the squares out."""
    rng = np.random.default_rng(13)
    views, segs, w = pack([("Q4_K", rng.standard_normal((5, 256)).astype(np.float32)),
                           ("Q4_K", rng.standard_normal((3, 256)).astype(np.float32)),
                           ("F16", rng.standard_normal((3, 256)).astype(np.float32))])
    x, start = rng.standard_normal(256).astype(np.float32), rng.standard_normal(11).astype(np.float32)
    runs = []
    for kernel in (mv.matvec_int, mp.matvec_int_pairs):
        sumsq = cuda.to_device(np.zeros(2))
        runs.append((matvec(views, segs, 11, x, kn.PREP_COPY, out=start.copy(), accumulate=True, blocks=1,
                            int_dots=True, sumsq=sumsq, ss_out=1, kernel=kernel), sumsq.copy_to_host()[1]))
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-12)


def test_matvec_norm_from_summed_squares_and_squares_out():
    """PREP_NORM_SS normalizes by sumsq[ss_in] instead of reducing x itself; ss_out adds the squares of
    what it stored (after accumulate) to sumsq[ss_out]."""
    rng = np.random.default_rng(12)
    views, segs, w = pack([("Q8_0", rng.standard_normal((5, 64)).astype(np.float32))])
    x, norm_w = rng.standard_normal(64).astype(np.float32), rng.uniform(0.5, 1.5, 64).astype(np.float32)
    start = rng.standard_normal(5).astype(np.float32)
    sumsq = cuda.to_device(np.array([float((x.astype(np.float64) ** 2).sum()), 0.5]))
    got = matvec(views, segs, 5, x, kn.PREP_NORM_SS, norm_w=norm_w, out=start.copy(), accumulate=True,
                 sumsq=sumsq, ss_in=0, ss_out=1, blocks=2)
    expected = matvec(views, segs, 5, x, kn.PREP_NORM, norm_w=norm_w, out=start.copy(), accumulate=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sumsq.copy_to_host()[1], 0.5 + (got.astype(np.float32).astype(np.float64) ** 2).sum(),
                               rtol=1e-12)


def test_matvec_dots_every_block_format_as_gguf_py_dequantizes_it():
    rng = np.random.default_rng(0)
    matrices = [(t, rng.standard_normal((1, 256)).astype(np.float32)) for t in SUPPORTED]
    views, segs, w = pack(matrices)
    x = rng.standard_normal(256).astype(np.float32)
    got = matvec(views, segs, len(matrices), x, kn.PREP_COPY)
    np.testing.assert_allclose(got, w @ x, rtol=0, atol=2e-5 * np.abs(w @ x).max())


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q5_0", "Q8_0"])
def test_matvec_row_kernels_cover_every_piece_of_long_rows(qtype):
    """The word-loading row functions: 3 rows of 2048 columns (8 super-blocks: each lane takes pieces in
    two rounds), then a second matrix of another format in the same launch (its row bytes follow on)."""
    rng = np.random.default_rng(7)
    other = "Q8_0" if qtype != "Q8_0" else "Q4_K"
    views, segs, w = pack([(qtype, rng.standard_normal((3, 2048)).astype(np.float32)),
                           (other, rng.standard_normal((2, 2048)).astype(np.float32))])
    x = rng.standard_normal(2048).astype(np.float32)
    got = matvec(views, segs, 5, x, kn.PREP_COPY)
    np.testing.assert_allclose(got, w @ x, rtol=0, atol=2e-5 * np.abs(w @ x).max())
    strided = matvec(views, segs, 5, x, kn.PREP_COPY, blocks=1)    # one block: each warp takes several rows
    np.testing.assert_array_equal(strided, got)
    assert mv.launch_blocks(49152, 8, 132) == 528 and mv.launch_blocks(960, 8, 132) == 120


def test_matvec_normalizes_or_gates_its_input_accumulates_and_soft_caps():
    rng = np.random.default_rng(1)
    views, segs, w = pack([("F32", rng.standard_normal((3, 32)).astype(np.float32))])
    x, up, norm_w = (rng.standard_normal(32).astype(np.float32) for _ in range(3))
    x64 = x.astype(np.float64)
    normed = x64 / np.sqrt(np.mean(x64 * x64) + 1e-6) * norm_w
    start = rng.standard_normal(3).astype(np.float32)
    got = matvec(views, segs, 3, x, kn.PREP_NORM, norm_w=norm_w, out=start.copy(), accumulate=True)
    np.testing.assert_allclose(got, w @ normed + start, rtol=1e-5, atol=1e-5)
    capped = matvec(views, segs, 3, x, kn.PREP_NORM, norm_w=norm_w, softcap=2.0)
    np.testing.assert_allclose(capped, 2.0 * np.tanh(w @ normed / 2.0), rtol=1e-5, atol=1e-5)
    for prep, cpu_kernel in ((kn.PREP_SILU, nn.silu_mul), (kn.PREP_GELU, nn.gelu_tanh_mul)):
        gate = x.reshape(1, -1).copy()
        cpu_kernel(gate, up.reshape(1, -1))
        got = matvec(views, segs, 3, x, prep, up=up)
        np.testing.assert_allclose(got, w @ gate[0].astype(np.float64), rtol=1e-5, atol=1e-5)


def test_prompt_matmul_tiles_cross_rows_segments_and_tokens():
    """Two matrices in one launch (5 rows, then 70: two 64-row tiles), 3 tokens, added to what is there."""
    rng = np.random.default_rng(2)
    mats = [("F32", rng.standard_normal((5, 64)).astype(np.float32)),
            ("Q8_0", rng.standard_normal((70, 64)).astype(np.float32))]
    views, segs, w = pack(mats, kn.TILE_ROWS)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    out = cuda.to_device(np.ones((3, 75), np.float32))
    kn.matmul[(1, 3), 256](segs, *views.args(), cuda.to_device(x), 3, out, True, 0.0)
    expected = x.astype(np.float64) @ w.T + 1.0
    np.testing.assert_allclose(out.copy_to_host(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_embed_dequantizes_token_rows_times_the_scale():
    rng = np.random.default_rng(3)
    views, segs, w = pack([("Q6_K", rng.standard_normal((4, 256)).astype(np.float32))])
    x = cuda.to_device(np.zeros((2, 256), np.float32))
    sumsq = cuda.to_device(np.ones(3))
    kn.embed[(2,), kn.THREADS](cuda.to_device(np.array([3, 1], np.int64)), segs, *views.args(), np.float32(2.0), x,
                               sumsq)
    np.testing.assert_allclose(x.copy_to_host(), 2.0 * w[[3, 1]], rtol=1e-6, atol=1e-6)
    x0 = x.copy_to_host()[0].astype(np.float64)
    np.testing.assert_allclose(sumsq.copy_to_host(), [(x0 * x0).sum(), 0, 0], rtol=1e-12)


def _cpu_attention(qkv, kc, vc, pos0, n_head, n_kv, hd, inv_freq, neox, bias, q_norm, k_norm, window, eps):
    """The CPU runtime's kernels on the same inputs: bias, per-head norm, rope, scale, cache, attention."""
    n = qkv.shape[0]
    qkv = qkv + bias
    q = qkv[:, :n_head * hd].reshape(n, n_head, hd).copy()
    k = qkv[:, n_head * hd:(n_head + n_kv) * hd].reshape(n, n_kv, hd).copy()
    v = qkv[:, (n_head + n_kv) * hd:].reshape(n, n_kv, hd)
    if q_norm is not None:
        nn.rmsnorm(q.reshape(-1, hd), q_norm, eps, q.reshape(-1, hd))
        nn.rmsnorm(k.reshape(-1, hd), k_norm, eps, k.reshape(-1, hd))
    positions = np.arange(pos0, pos0 + n)
    nn.rope(q, k, positions, inv_freq, 1.0, neox)
    q *= np.float32(1 / math.sqrt(hd))
    kc, vc = kc.copy(), vc.copy()
    kc[:, pos0:pos0 + n], vc[:, pos0:pos0 + n] = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
    out = np.zeros((n, n_head, hd), np.float32)
    nn.attention(q, kc, vc, pos0, window, np.zeros((n_head, kc.shape[1]), np.float32), out)
    return kc, vc, out.reshape(n, -1)


@pytest.mark.parametrize("neox, extras, window, pos0", [(False, False, 0, 2), (True, True, 2, 2), (False, False, 0, 21),
                                                      (True, True, 13, 21)])
def test_qkv_finish_and_attention_match_the_cpu_kernels(neox, extras, window, pos0):
    """llama-style (pairs (2i, 2i+1), nothing else), then qwen2/gemma3-style (NeoX pairs, q/k/v bias,
    per-head RMSNorm of q and k, a sliding window); 2 new tokens after 2 cached ones, then after 21 (the
    score pass takes 8 positions a round of 32 threads, the value pass 2 x 8 a round: several rounds)."""
    rng = np.random.default_rng(4)
    n_head, n_kv, hd, n, ctx, eps = 2, 1, 16, 2, pos0 + 4, 1e-6
    width = (n_head + 2 * n_kv) * hd
    qkv = rng.standard_normal((n, width)).astype(np.float32)
    kc, vc = (np.zeros((n_kv, ctx, hd), np.float32) for _ in range(2))
    kc[:, :pos0], vc[:, :pos0] = rng.standard_normal((2, n_kv, pos0, hd))
    inv_freq = 10000.0 ** -(np.arange(0, hd, 2) / hd)
    bias = rng.standard_normal(width).astype(np.float32) if extras else np.zeros(width, np.float32)
    q_norm, k_norm = (rng.uniform(0.5, 1.5, hd).astype(np.float32) for _ in range(2))
    d_qkv, d_k, d_v = cuda.to_device(qkv), cuda.to_device(kc), cuda.to_device(vc)
    state = cuda.to_device(np.array([0, pos0, 0], np.int64))
    dims = cuda.to_device(np.array([n_head, n_kv, hd, hd // 2], np.int64))
    flags = cuda.to_device(np.array([extras, extras, neox], np.int64))
    at.qkv_finish[(n, n_head + 2 * n_kv), 32](d_qkv, cuda.to_device(bias), cuda.to_device(q_norm),
                                              cuda.to_device(k_norm), cuda.to_device(inv_freq), 1.0, state, d_k,
                                              d_v, dims, flags, eps, 1 / math.sqrt(hd))
    att = cuda.device_array((n, n_head * hd), np.float32)
    at.attend[(n, n_head), 32](d_qkv, d_k, d_v, state, window, cuda.device_array((n, n_head, ctx), np.float32), att)
    kc2, vc2, expected = _cpu_attention(qkv, kc, vc, pos0, n_head, n_kv, hd, inv_freq, neox, bias,
                                        q_norm if extras else None, k_norm, window, eps)
    np.testing.assert_allclose(d_k.copy_to_host(), kc2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_v.copy_to_host(), vc2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(att.copy_to_host(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("neox, extras, window, pos0, hd", [(False, False, 0, 2, 16), (True, True, 2, 9, 16),
                                                          (False, False, 0, 21, 48), (True, True, 13, 21, 32)])
def test_decode_attention_matches_the_cpu_kernels(neox, extras, window, pos0, hd):
    """attend_decode (qkv finishing and attention in one kernel) for one token after pos0 cached ones,
    against the CPU kernels: several rounds of POS_UNROLL positions, heads of more than 32 values (two
    per lane, the second partly past hd), 2 q heads per kv head."""
    rng = np.random.default_rng(6)
    n_head, n_kv, ctx, eps = 4, 2, pos0 + 3, 1e-6
    width = (n_head + 2 * n_kv) * hd
    qkv = rng.standard_normal((1, width)).astype(np.float32)
    kc, vc = (np.zeros((n_kv, ctx, hd), np.float32) for _ in range(2))
    kc[:, :pos0], vc[:, :pos0] = rng.standard_normal((2, n_kv, pos0, hd))
    inv_freq = 10000.0 ** -(np.arange(0, hd, 2) / hd)
    bias = rng.standard_normal(width).astype(np.float32) if extras else np.zeros(width, np.float32)
    q_norm, k_norm = (rng.uniform(0.5, 1.5, hd).astype(np.float32) for _ in range(2))
    d_k, d_v = cuda.to_device(kc), cuda.to_device(vc)
    att = cuda.device_array((1, n_head * hd), np.float32)
    at.attend_decode(hd)[(n_head,), at.ATT_WARPS * kn.WARP](
        cuda.to_device(qkv), cuda.to_device(bias), cuda.to_device(q_norm), cuda.to_device(k_norm),
        cuda.to_device(inv_freq), 1.0, cuda.to_device(np.array([0, pos0, 0], np.int64)), d_k, d_v,
        n_head, n_kv, hd, hd // 2, int(extras), int(extras), int(neox), eps, 1 / math.sqrt(hd), window, att)
    kc2, vc2, expected = _cpu_attention(qkv, kc, vc, pos0, n_head, n_kv, hd, inv_freq, neox, bias,
                                        q_norm if extras else None, k_norm, window, eps)
    np.testing.assert_allclose(d_k.copy_to_host(), kc2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_v.copy_to_host(), vc2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(att.copy_to_host(), expected, rtol=1e-5, atol=1e-5)


def test_norms_gate_and_argmax():
    rng = np.random.default_rng(5)
    x, h = rng.standard_normal((2, 48)).astype(np.float32), rng.standard_normal((2, 48)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 48).astype(np.float32)
    out, d_x = cuda.device_array((2, 48), np.float32), cuda.to_device(x)
    kn.rmsnorm_rows[(2,), kn.ROW_THREADS](d_x, cuda.to_device(w), 1e-6, out)
    expected = np.empty_like(x)
    nn.rmsnorm(x, w, 1e-6, expected)
    np.testing.assert_allclose(out.copy_to_host(), expected, rtol=1e-6, atol=1e-6)
    kn.add_rmsnorm[(2,), kn.ROW_THREADS](d_x, cuda.to_device(h), cuda.to_device(w), 1e-6)
    normed_h = np.empty_like(h)
    nn.rmsnorm(h, w, 1e-6, normed_h)
    np.testing.assert_allclose(d_x.copy_to_host(), x + normed_h, rtol=1e-6, atol=1e-6)
    gu = rng.standard_normal((2, 2 * 24)).astype(np.float32)
    d_gu = cuda.to_device(gu)
    kn.gate_act[(1, 2), kn.ROW_THREADS](d_gu, 24, False)
    gate = gu[:, :24].copy()
    nn.silu_mul(gate, gu[:, 24:].copy())
    np.testing.assert_allclose(d_gu.copy_to_host()[:, :24], gate, rtol=1e-6, atol=1e-6)
    logits = np.array([[0.5, 3.0, -1.0, 3.0, 2.0]], np.float32)     # a tie: the first index wins
    state = cuda.to_device(np.array([7, 9, -1], np.int64))
    at.argmax_token[(1,), kn.ARGMAX_THREADS](cuda.to_device(logits), state)
    assert state.copy_to_host().tolist() == [7, 9, 1]


def test_device_cuda_without_a_gpu_is_one_error_line(q4_1_gguf, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""                                 # no GPU visible, here or anywhere
    done = subprocess.run([sys.executable, "-m", "ggq", "bench", str(q4_1_gguf), "-p", "8", "-n", "2", "-r", "1",
                           "--device", "cuda"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("ggq: --device cuda: "), done.stderr
