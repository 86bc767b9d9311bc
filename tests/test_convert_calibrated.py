"""`ggq convert --imatrix / --calibration / --method` on a tiny random llama.

ORACLE: for --method imatrix, ggq.quants.quantize with importance = in_sum2 / counts (the quantizers are
byte-identical to llama.cpp's, tested in test_quants_*; llama-quantize --imatrix itself is compared in
bench/quality_vs_llamacpp.py).
For gptq: the output error tr(ΔW H ΔWᵀ) of layer 0's q/k with H = XᵀX from a numpy float64 forward of
the embedding and first norm (test_runtime_imatrix's oracle): error feedback must beat importance-only
rounding, which must beat round-to-nearest. attn_v's error is judged where it lands, in the attention
output: Σ_t |ΔW_g Σ_s P_h[t, s] x_s|² over query heads h of kv head g, P from the same float64 forward
through the Hugging Face checkpoint's own q/k weights and RoPE (rotate_half, unpermuted).
"""
from __future__ import annotations

import numpy as np
import pytest

from ggq.cli import main
from ggq.gguf_read import open_gguf
from ggq.imatrix_file import read_imatrix
from ggq.quants import dequantize, quantize
from ggq.runtime.tokenizer import Tokenizer
import tiny_checkpoints as tiny

N_CTX = 32
TEXT = "a calibration text about foxes, dogs and the weather in spring; " * 30


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    tensors = tiny.write_checkpoint(root / "ckpt", "llama", seed=11)
    (root / "text.txt").write_text(TEXT)
    return root, tensors


def _convert(root, out, *extra):
    argv = ["convert", str(root / "ckpt"), "--type", "q4_0", "-o", str(out), "--quiet",
            "--calibration-ctx", str(N_CTX), *extra]
    assert main(argv) == 0
    return out


def test_imatrix_method_uses_file_importance(ckpt, tmp_path):
    root, _ = ckpt
    im_path = tmp_path / "im.gguf"
    assert main(["imatrix", str(root / "ckpt"), "-f", str(root / "text.txt"), "-o", str(im_path),
                 "--ctx", str(N_CTX), "-t", "1"]) == 0
    imatrix = read_imatrix(im_path)
    f32 = _convert(root, tmp_path / "f32.gguf", "--type", "f32")
    out = _convert(root, tmp_path / "imat.gguf", "--imatrix", str(im_path), "--method", "imatrix")
    with open_gguf(out) as g, open_gguf(f32) as ref:
        assert g.metadata["quantize.imatrix.entries_count"] == len(imatrix.entries)
        for name, info in g.tensors.items():
            if info.qtype.name in ("F32", "F16"):
                continue
            values = ref.raw(name).view(np.float32).reshape(info.shape)
            expected = quantize(values, info.qtype, imatrix.importance(name))
            assert np.array_equal(g.raw(name), expected), name


def _layer0_inputs(tensors, gguf_path, n_chunks):
    with open_gguf(gguf_path) as g:
        tok = Tokenizer.from_metadata(g.metadata)
    ids = np.asarray(tok.encode(TEXT, add_special=True, parse_special=False))[:N_CTX * n_chunks].reshape(n_chunks, N_CTX)
    if tok.add_bos and tok.bos_id is not None:
        ids[:, 0] = tok.bos_id
    x = tensors["model.embed_tokens.weight"].astype(np.float64)[ids.reshape(-1)]
    h = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5)
    h *= tensors["model.layers.0.input_layernorm.weight"].astype(np.float64)
    return h.reshape(n_chunks, N_CTX, -1)


def _hf_rope(x):
    """x [T, heads, head_dim] rotated as transformers' Llama does (rotate_half on unpermuted weights)."""
    d = x.shape[-1]
    angle = np.arange(x.shape[0])[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = (np.concatenate([f(angle)] * 2, axis=1)[:, None, :] for f in (np.cos, np.sin))
    rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * cos + rotated * sin


def _layer0_value_error(tensors, h, d):
    """Σ over chunks, query positions and heads of |ΔW_g x̄|², x̄ the attention-weighted layer-0 input."""
    wq = tensors["model.layers.0.self_attn.q_proj.weight"].astype(np.float64)
    wk = tensors["model.layers.0.self_attn.k_proj.weight"].astype(np.float64)
    n_kv = wk.shape[0] // tiny.HEAD_DIM
    per_kv = wq.shape[0] // wk.shape[0]
    total = 0.0
    for x in h:
        q = _hf_rope((x @ wq.T).reshape(N_CTX, -1, tiny.HEAD_DIM))
        k = _hf_rope((x @ wk.T).reshape(N_CTX, -1, tiny.HEAD_DIM))
        for head in range(q.shape[1]):
            g = head // per_kv
            scores = q[:, head] @ k[:, g].T / np.sqrt(tiny.HEAD_DIM)
            scores[np.triu_indices(N_CTX, 1)] = -np.inf
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            rows = slice(g * tiny.HEAD_DIM, (g + 1) * tiny.HEAD_DIM)
            total += float(np.sum(((p @ x) @ d[rows].T) ** 2))
    assert n_kv * tiny.HEAD_DIM == d.shape[0]
    return total


def test_gptq_lowers_output_error(ckpt, tmp_path):
    root, tensors = ckpt
    f32 = _convert(root, tmp_path / "f32.gguf", "--type", "f32")
    files = {m: _convert(root, tmp_path / f"{m}.gguf", "--calibration", str(root / "text.txt"), "--method", m)
             for m in ("imatrix", "gptq")}
    files["rtn"] = _convert(root, tmp_path / "rtn.gguf")
    n_chunks = int(open_gguf(files["gptq"]).metadata["quantize.imatrix.chunks_count"])
    h = _layer0_inputs(tensors, f32, n_chunks)
    gram = np.einsum("cti,ctj->ij", h, h)
    with open_gguf(f32) as ref:
        for role in ("attn_q", "attn_k", "attn_v"):
            name = f"blk.0.{role}.weight"
            w = ref.raw(name).view(np.float32).reshape(ref.tensors[name].shape).astype(np.float64)
            err = {}
            for method, path in files.items():
                with open_gguf(path) as g:
                    d = w - dequantize(g.raw(name), g.tensors[name].qtype)
                err[method] = _layer0_value_error(tensors, h, d) if role == "attn_v" else np.sum((d @ gram) * d)
            if role == "attn_v":  # the importance is XᵀX's diagonal, not the attention's: only gptq is held to it
                assert err["gptq"] < 0.9 * min(err["imatrix"], err["rtn"]), (name, err)
            else:
                assert err["gptq"] < 0.9 * err["imatrix"] < 0.9 * err["rtn"], (name, err)


def test_value_grams_are_the_attention_outputs_error(ckpt, tmp_path):
    """tr(ΔW_g H_g ΔW_gᵀ) summed over kv heads = the oracle's attention-output error, for any ΔW."""
    from ggq.convert.calibration import calibrate
    from ggq.convert.pipeline import open_checkpoint_source
    root, tensors = ckpt
    f32 = _convert(root, tmp_path / "f32.gguf", "--type", "f32")
    source = open_checkpoint_source(str(root / "ckpt"))
    stats, n_chunks = calibrate(source.metadata("f32"), source.sources, TEXT, N_CTX, gram=True)
    h = _layer0_inputs(tensors, f32, n_chunks)
    d = np.random.default_rng(5).standard_normal((tiny.N_HEAD_KV * tiny.HEAD_DIM, tiny.N_EMBD))
    parts = stats.row_grams("blk.0.attn_v.weight")
    ours = sum(float(np.sum((d[r0:r1] @ g) * d[r0:r1])) for r0, r1, g in parts)
    assert len(parts) == tiny.N_HEAD_KV
    assert ours == pytest.approx(_layer0_value_error(tensors, h, d), rel=1e-4)


@pytest.mark.parametrize("extra, needle", [
    (["--method", "gptq"], "needs --calibration"),
    (["--method", "rtn", "--calibration", "x.txt"], "uses no calibration"),
    (["--imatrix", "a", "--calibration", "b"], "not both"),
])
def test_conflicting_options_fail_cleanly(ckpt, tmp_path, capsys, extra, needle):
    root, _ = ckpt
    out = tmp_path / "o.gguf"
    assert main(["convert", str(root / "ckpt"), "-o", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ggq: ") and err.count("\n") == 1 and needle in err and not out.exists()


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_scale_refit_never_raises_the_error(name):
    """gptq_quantize(refits=2) vs refits=0: blocks gguf-py reads, each row's error through H no higher
    (rows keep the refit only where it helped), and lower in total."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    from ggq.convert.gptq import damped, gptq_quantize
    from ggq.qtypes import qtype
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 256)) * rng.gamma(1.0, 1.0, 256)
    h, w = x.T @ x, rng.standard_normal((32, 256)).astype(np.float32)
    hd = damped(h)

    def errors(blocks):
        e = w - gguf_dequantize(blocks, GGMLQuantizationType[name]).astype(np.float64)
        return np.einsum("ij,jk,ik->i", e, hd, e)

    plain, refit = (errors(gptq_quantize(w, h, qtype(name), refits=r)) for r in (0, 2))
    assert np.all(refit <= plain * (1 + 1e-9)) and refit.sum() < 0.999 * plain.sum()
