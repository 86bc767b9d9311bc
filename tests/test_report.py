"""`ggq report FILE --base BASE`: per tensor type, bits per weight and relative error.

ORACLE: gguf-py reads both files (GGUFReader) and dequantizes the file's blocks (gguf.quants.dequantize);
the relative error ||W_q - W|| / ||W|| is computed here in float64 numpy. Against a checkpoint folder
the base values are the safetensors values as written, renamed and with q/k rows permuted by
convert_hf_to_gguf's own formula (LlamaModel.permute), written out here.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ggq.cli import main
from ggq.report import tensor_report
import tiny_checkpoints as tiny

# A mix of block families: k-quants of both kinds, legacy blocks, a float type
MIX = ["--tensor-type", "ffn_up=q5_0", "--tensor-type", "attn_k=q8_0", "--tensor-type", "ffn_gate=q2_k",
       "--tensor-type", "attn_output=q4_1", "--tensor-type", "attn_q=bf16"]
HF_NAMES = {"input_layernorm.weight": "attn_norm", "post_attention_layernorm.weight": "ffn_norm",
            "self_attn.q_proj.weight": "attn_q", "self_attn.k_proj.weight": "attn_k",
            "self_attn.v_proj.weight": "attn_v", "self_attn.o_proj.weight": "attn_output",
            "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    tensors = tiny.write_checkpoint(root / "ckpt", "llama", seed=21)
    for ftype, extra in (("q4_k_m", MIX), ("f16", [])):
        argv = ["convert", str(root / "ckpt"), "--type", ftype, "-o", str(root / f"{ftype}.gguf"), "--quiet", *extra]
        assert main(argv) == 0
    return root, tensors


def _gguf_values(path) -> dict:
    """name -> (type name, bytes, float64 values) read by gguf-py."""
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize
    out = {}
    for t in GGUFReader(path).tensors:
        qt = GGMLQuantizationType(t.tensor_type)
        out[t.name] = (qt.name, t.data.nbytes, dequantize(t.data, qt).astype(np.float64).reshape(-1))
    return out


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _permute(w, n_head):  # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _checkpoint_values(tensors) -> dict:
    out = {"token_embd.weight": tensors["model.embed_tokens.weight"], "output.weight": tensors["lm_head.weight"],
           "output_norm.weight": tensors["model.norm.weight"]}
    for i in range(tiny.N_LAYER):
        for hf, role in HF_NAMES.items():
            w = tensors[f"model.layers.{i}.{hf}"]
            w = _permute(w, tiny.N_HEAD) if role == "attn_q" else _permute(w, tiny.N_HEAD_KV) if role == "attn_k" else w
            out[f"blk.{i}.{role}.weight"] = w
    return {k: v.astype(np.float64).reshape(-1) for k, v in out.items()}


def test_against_f16_file(files):
    root, _ = files
    quant, base = _gguf_values(root / "q4_k_m.gguf"), _gguf_values(root / "f16.gguf")
    rows = tensor_report(root / "q4_k_m.gguf", root / "f16.gguf")
    assert [r.name for r in rows] == list(quant)
    assert {r.type for r in rows} >= {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "Q2_K", "Q4_1", "BF16", "F32"}
    for r in rows:
        qtype, nbytes, values = quant[r.name]
        assert r.type == qtype and r.nbytes == nbytes and r.n_weights == values.size
        assert r.bits_per_weight == pytest.approx(8 * nbytes / values.size, rel=1e-12)
        assert r.rel_error == pytest.approx(_rel(values, base[r.name][2]), rel=1e-6, abs=1e-12)
    by_name = {r.name: r for r in rows}
    assert by_name["blk.1.ffn_down.weight"].layer == 1 and by_name["blk.1.ffn_down.weight"].role == "ffn_down"
    assert by_name["token_embd.weight"].layer is None and by_name["token_embd.weight"].role == "token_embd"
    assert by_name["blk.0.ffn_gate.weight"].rel_error > 0.2  # Q2_K
    assert by_name["blk.0.attn_norm.weight"].rel_error == 0.0


def test_against_checkpoint_folder(files):
    root, tensors = files
    quant, base = _gguf_values(root / "q4_k_m.gguf"), _checkpoint_values(tensors)
    rows = tensor_report(root / "q4_k_m.gguf", root / "ckpt")
    assert sorted(r.name for r in rows) == sorted(base)
    for r in rows:
        assert r.rel_error == pytest.approx(_rel(quant[r.name][2], base[r.name]), rel=1e-6, abs=1e-12)
    f16 = {r.name: r.rel_error for r in tensor_report(root / "f16.gguf", root / "ckpt")}
    assert 0 < f16["blk.0.ffn_down.weight"] < 1e-3  # F16's own rounding, seen against the float32 checkpoint


def test_cli_table_json_and_png(files, tmp_path, capsys):
    root, _ = files
    png = tmp_path / "errors.png"
    assert main(["report", str(root / "q4_k_m.gguf"), "--base", str(root / "f16.gguf"), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "blk.0.ffn_gate.weight" in out and "Q2_K" in out and "bits per weight" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["report", str(root / "q4_k_m.gguf"), "--base", str(root / "ckpt"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc] == list(_gguf_values(root / "q4_k_m.gguf"))
    assert all(set(d) >= {"type", "bits_per_weight", "rel_error", "layer", "role"} for d in doc)


def _one_error_line(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ggq: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_png_without_matplotlib(files, tmp_path, capsys, monkeypatch):
    root, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc = main(["report", str(root / "q4_k_m.gguf"), "--base", str(root / "f16.gguf"), "--png", str(tmp_path / "x.png")])
    _one_error_line(capsys, rc, "matplotlib", "ggq[plot]")
    assert capsys.readouterr().out == ""  # refused before measuring
    assert not (tmp_path / "x.png").exists()


def _wrong_shape_base(root, path):
    """An F32 GGUF with the f16 file's tensors, ffn_down of layer 0 transposed."""
    from gguf import GGUFReader, GGUFWriter
    w = GGUFWriter(str(path), "llama")
    for t in GGUFReader(root / "f16.gguf").tensors:
        values = np.asarray(t.data, dtype=np.float32)
        w.add_tensor(t.name, values.T.copy() if t.name == "blk.0.ffn_down.weight" else values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated", "folder", "base_missing", "base_quantized",
                                  "base_not_checkpoint", "base_other_model", "base_wrong_shape", "png_folder"])
def test_bad_input_one_line(files, tmp_path, capsys, case):
    root, _ = files
    good, base = root / "q4_k_m.gguf", root / "f16.gguf"
    file, extra, needles = good, [], []
    if case == "missing":
        file, needles = tmp_path / "nope.gguf", ["nope.gguf"]
    elif case == "garbage":
        file = tmp_path / "garbage.gguf"
        file.write_bytes(b"not a gguf file at all" * 10)
        needles = ["garbage.gguf"]
    elif case == "truncated":
        file = tmp_path / "cut.gguf"
        file.write_bytes(good.read_bytes()[:300])
        needles = ["cut.gguf"]
    elif case == "folder":
        file, needles = tmp_path, ["directory"]
    elif case == "base_missing":
        base, needles = tmp_path / "nobase.gguf", ["nobase.gguf", "no such"]
    elif case == "base_quantized":
        base, needles = good, ["is Q6_K", "F32/F16/BF16"]
    elif case == "base_not_checkpoint":
        base, needles = tmp_path, ["config.json"]
    elif case == "base_other_model":
        other = tmp_path / "qwen"
        tiny.write_checkpoint(other, "qwen2", seed=1)  # tied embeddings: no output.weight
        base, needles = other, ["output.weight", "not the same model"]
    elif case == "base_wrong_shape":
        base = tmp_path / "wrong.gguf"
        _wrong_shape_base(root, base)
        needles = ["blk.0.ffn_down.weight", "wrong.gguf"]
    elif case == "png_folder":
        extra, needles = ["--png", str(tmp_path / "no" / "x.png")], ["output folder does not exist"]
    rc = main(["report", str(file), "--base", str(base), *extra])
    _one_error_line(capsys, rc, *needles)
