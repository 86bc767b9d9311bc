"""`ggq imatrix` on a tiny random llama, from its checkpoint folder and from its F32 GGUF.

ORACLE: numpy float64 for layer 0's attention input, rmsnorm(embedding[token]) * attn_norm over every
token of every chunk (first token BOS), computed from the checkpoint tensors as written; token counts
from the chunking rule (chunks x n_ctx, llama-imatrix's); gguf-py reads the written file. Deeper layers
are compared with llama-imatrix on the shared model in bench/quality_vs_llamacpp.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader

from ggq.cli import main
from ggq.convert.pipeline import convert
from ggq.imatrix_file import read_imatrix
from ggq.runtime.tokenizer import Tokenizer
from ggq.gguf_read import open_gguf
import tiny_checkpoints as tiny

N_CTX, N_CHUNKS = 32, 3
TEXT = "a calibration text about foxes, dogs and the weather in spring; " * 30
ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("imatrix")
    tensors = tiny.write_checkpoint(root / "ckpt", "llama", seed=5)
    gguf = convert(str(root / "ckpt"), "f32", str(root / "f32.gguf"), quiet=True).path
    (root / "text.txt").write_text(TEXT)
    return root, tensors, gguf


def _run(model_path, text, out):
    assert main(["imatrix", str(model_path), "-f", str(text), "-o", str(out), "--ctx", str(N_CTX),
                 "--chunks", str(N_CHUNKS), "-t", "1"]) == 0
    return read_imatrix(out)


def _layer0_attention_sums(tensors, gguf_path):
    with open_gguf(gguf_path) as g:
        tok = Tokenizer.from_metadata(g.metadata)
    ids = np.asarray(tok.encode(TEXT, add_special=True, parse_special=False))[:N_CTX * N_CHUNKS].reshape(N_CHUNKS, N_CTX)
    if tok.add_bos and tok.bos_id is not None:
        ids[:, 0] = tok.bos_id
    x = tensors["model.embed_tokens.weight"].astype(np.float64)[ids.reshape(-1)]
    h = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5)
    h *= tensors["model.layers.0.input_layernorm.weight"].astype(np.float64)
    return (h * h).sum(axis=0)


@pytest.mark.parametrize("source", ["checkpoint", "gguf"])
def test_imatrix_matches_float64_oracle(model, tmp_path, source):
    root, tensors, gguf = model
    imatrix = _run(root / "ckpt" if source == "checkpoint" else gguf, root / "text.txt", tmp_path / "im.gguf")
    names = {f"blk.{i}.{r}.weight" for i in range(tiny.N_LAYER) for r in ROLES}
    assert set(imatrix.entries) == names
    for e in imatrix.entries.values():
        assert list(e.counts) == [N_CHUNKS * N_CTX]
    oracle = _layer0_attention_sums(tensors, gguf)
    for role in ("attn_q", "attn_k", "attn_v"):
        np.testing.assert_allclose(imatrix.entries[f"blk.0.{role}.weight"].sums[0], oracle, rtol=2e-5)
    for i in range(tiny.N_LAYER):
        up, gate = (imatrix.entries[f"blk.{i}.{r}.weight"].sums for r in ("ffn_up", "ffn_gate"))
        assert np.array_equal(up, gate)  # one input, two weights
    assert imatrix.chunk_count == N_CHUNKS and imatrix.chunk_size == N_CTX


def test_checkpoint_and_gguf_agree(model, tmp_path):
    root, _, gguf = model
    a = _run(root / "ckpt", root / "text.txt", tmp_path / "a.gguf")
    b = _run(gguf, root / "text.txt", tmp_path / "b.gguf")
    for name, e in a.entries.items():
        np.testing.assert_allclose(e.sums, b.entries[name].sums, rtol=1e-5)


def test_written_file_reads_in_gguf_py(model, tmp_path):
    """llama.cpp's layout: general.type, imatrix.* keys, <name>.in_sum2 [n] and <name>.counts [1], F32."""
    root, _, gguf = model
    out = tmp_path / "im.gguf"
    ours = _run(gguf, root / "text.txt", out)
    r = GGUFReader(out)
    field = r.fields["general.type"]
    assert bytes(field.parts[field.data[0]]).decode() == "imatrix"
    assert int(r.fields["imatrix.chunk_count"].parts[-1][0]) == N_CHUNKS
    assert int(r.fields["imatrix.chunk_size"].parts[-1][0]) == N_CTX
    by_name = {t.name: t for t in r.tensors}
    assert len(by_name) == 2 * len(ours.entries)
    for name, e in ours.entries.items():
        np.testing.assert_array_equal(by_name[name + ".in_sum2"].data, e.sums[0])
        assert list(by_name[name + ".in_sum2"].shape) == [e.sums.shape[1]]
        assert float(by_name[name + ".counts"].data[0]) == e.counts[0]


def test_bad_text_is_one_line(model, tmp_path, capsys):
    root, _, gguf = model
    out = tmp_path / "im.gguf"
    assert main(["imatrix", str(gguf), "-f", str(tmp_path / "missing.txt"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ggq: ") and err.count("\n") == 1 and not out.exists()
