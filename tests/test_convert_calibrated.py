"""`ggq convert --imatrix / --calibration / --method` on a tiny random llama.

ORACLE: for --method imatrix, ggq.quants.quantize with importance = in_sum2 / counts (the quantizers are
byte-identical to llama.cpp's, tested in test_quants_*; llama-quantize --imatrix itself is compared in
bench/quality_vs_llamacpp.py).
For gptq: the output error tr(ΔW H ΔWᵀ) of layer 0's q/k/v with H = XᵀX from a numpy float64 forward of
the embedding and first norm (test_runtime_imatrix's oracle): error feedback must beat importance-only
rounding, which must beat round-to-nearest.
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


def _layer0_gram(tensors, gguf_path, n_chunks):
    with open_gguf(gguf_path) as g:
        tok = Tokenizer.from_metadata(g.metadata)
    ids = np.asarray(tok.encode(TEXT, add_special=True, parse_special=False))[:N_CTX * n_chunks].reshape(n_chunks, N_CTX)
    if tok.add_bos and tok.bos_id is not None:
        ids[:, 0] = tok.bos_id
    x = tensors["model.embed_tokens.weight"].astype(np.float64)[ids.reshape(-1)]
    h = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5)
    h *= tensors["model.layers.0.input_layernorm.weight"].astype(np.float64)
    return h.T @ h


def test_gptq_lowers_output_error(ckpt, tmp_path):
    root, tensors = ckpt
    f32 = _convert(root, tmp_path / "f32.gguf", "--type", "f32")
    files = {m: _convert(root, tmp_path / f"{m}.gguf", "--calibration", str(root / "text.txt"), "--method", m)
             for m in ("imatrix", "gptq")}
    files["rtn"] = _convert(root, tmp_path / "rtn.gguf")
    n_chunks = int(open_gguf(files["gptq"]).metadata["quantize.imatrix.chunks_count"])
    h = _layer0_gram(tensors, f32, n_chunks)
    with open_gguf(f32) as ref:
        for role in ("attn_q", "attn_k", "attn_v"):
            name = f"blk.0.{role}.weight"
            w = ref.raw(name).view(np.float32).reshape(ref.tensors[name].shape).astype(np.float64)
            err = {}
            for method, path in files.items():
                with open_gguf(path) as g:
                    d = w - dequantize(g.raw(name), g.tensors[name].qtype)
                err[method] = np.einsum("ij,jk,ik->", d, h, d)
            assert err["gptq"] < 0.9 * err["imatrix"] < 0.9 * err["rtn"], (name, err)


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
