"""ggq convert on tiny checkpoints written by the test (tests/tiny_checkpoints.py).

ORACLES: the `gguf` package (GGUFReader reads back every key with llama.cpp's value types, every
tensor's name/shape/type and data; gguf.quants dequantizes), and the source values themselves, put
through an independent numpy version of convert_hf_to_gguf's LlamaModel.permute and Gemma3's +1 norm
shift written here.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize as gguf_dequantize

from ggq.cli import main
import tiny_checkpoints as tiny

U32, F32, STR, BOOL = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING, GGUFValueType.BOOL


def hf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf LlamaModel.permute: reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(arch: str, src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF name -> expected float32 values, from the source by convert_hf_to_gguf's rules."""
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm"}
    if arch == "gemma3":
        layer.update({"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                      "post_feedforward_layernorm": "post_ffw_norm", "self_attn.q_norm": "attn_q_norm",
                      "self_attn.k_norm": "attn_k_norm"})
    out = {}
    for name, w in src.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, i, rest = name.split(".", 3)
            stem, kind = rest.rsplit(".", 1)
            gname = f"blk.{i}.{layer[stem]}.{kind}"
        if arch == "llama" and "q_proj" in name:
            w = hf_permute(w, tiny.N_HEAD)
        if arch == "llama" and "k_proj" in name:
            w = hf_permute(w, tiny.N_HEAD_KV)
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + np.float32(1.0)
        out[gname] = w
    return out


EXPECTED_KEYS = {
    "llama": {"general.architecture": (STR, "llama"), "llama.block_count": (U32, 2),
              "llama.context_length": (U32, 2048), "llama.embedding_length": (U32, 256),
              "llama.feed_forward_length": (U32, 512), "llama.attention.head_count": (U32, 4),
              "llama.attention.head_count_kv": (U32, 2), "llama.rope.freq_base": (F32, 10000.0),
              "llama.attention.layer_norm_rms_epsilon": (F32, np.float32(1e-5)), "llama.vocab_size": (U32, 48),
              "llama.rope.dimension_count": (U32, 64)},
    "qwen2": {"general.architecture": (STR, "qwen2"), "qwen2.block_count": (U32, 2),
              "qwen2.context_length": (U32, 4096), "qwen2.embedding_length": (U32, 256),
              "qwen2.feed_forward_length": (U32, 512), "qwen2.attention.head_count": (U32, 4),
              "qwen2.attention.head_count_kv": (U32, 2), "qwen2.rope.freq_base": (F32, 1e6),
              "qwen2.attention.layer_norm_rms_epsilon": (F32, np.float32(1e-6))},
    "gemma3": {"general.architecture": (STR, "gemma3"), "gemma3.block_count": (U32, 2),
               "gemma3.context_length": (U32, 8192), "gemma3.embedding_length": (U32, 256),
               "gemma3.feed_forward_length": (U32, 512), "gemma3.attention.head_count": (U32, 4),
               "gemma3.attention.head_count_kv": (U32, 2), "gemma3.rope.freq_base": (F32, 1e6),
               "gemma3.rope.freq_base_swa": (F32, 10000.0), "gemma3.attention.key_length": (U32, 64),
               "gemma3.attention.value_length": (U32, 64), "gemma3.attention.sliding_window": (U32, 512),
               "gemma3.attention.layer_norm_rms_epsilon": (F32, np.float32(1e-6))},
}
COMMON_KEYS = {"general.type": (STR, "model"), "general.quantization_version": (U32, 2),
               "tokenizer.ggml.model": (STR, "gpt2"), "tokenizer.ggml.pre": (STR, "gpt-2"),
               "tokenizer.ggml.bos_token_id": (U32, 0), "tokenizer.ggml.eos_token_id": (U32, 1),
               "tokenizer.chat_template": (STR, tiny.CHAT_TEMPLATE)}


def convert(tmp_path, arch, ftype, dtype="F32", shards=1, extra=(), **cfg):
    src = tiny.write_checkpoint(tmp_path / arch, arch, dtype=dtype, shards=shards, **cfg)
    out = tmp_path / f"{arch}-{ftype}.gguf"
    assert main(["convert", str(tmp_path / arch), "--type", ftype, "-o", str(out), "--quiet", *extra]) == 0
    return src, GGUFReader(out)


def check_keys(reader: GGUFReader, expected: dict) -> None:
    for key, (vtype, value) in expected.items():
        field = reader.fields[key]
        assert field.types == [vtype], key
        assert field.contents() == value, key


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f32_conversion_equals_source_after_documented_changes(tmp_path, arch):
    src, reader = convert(tmp_path, arch, "f32")
    check_keys(reader, {**EXPECTED_KEYS[arch], **COMMON_KEYS, "general.file_type": (U32, 0)})
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == tiny.VOCAB
    expected = expected_tensors(arch, src)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    assert ("output.weight" in got) == (arch == "llama")  # qwen2/gemma3 ties: no output tensor
    for name, values in expected.items():
        assert got[name].tensor_type.name == "F32"
        assert tuple(int(d) for d in reversed(got[name].shape)) == values.shape  # GGUF order is reversed
        np.testing.assert_array_equal(np.asarray(got[name].data).reshape(values.shape), values, err_msg=name)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f16_conversion_from_bf16_checkpoint(tmp_path, arch):
    src, reader = convert(tmp_path, arch, "f16", dtype="BF16")
    check_keys(reader, {**EXPECTED_KEYS[arch], "general.file_type": (U32, 1)})
    for name, values in expected_tensors(arch, src).items():
        t = next(t for t in reader.tensors if t.name == name)
        want = "F32" if values.ndim == 1 else "F16"  # 1-D tensors stay F32, as convert_hf_to_gguf keeps them
        assert t.tensor_type.name == want, name
        want_values = values if want == "F32" else values.astype(np.float16)  # numpy rounds as ggml: nearest even
        np.testing.assert_array_equal(np.asarray(t.data).reshape(values.shape), want_values, err_msg=name)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_q4_k_m_conversion(tmp_path, arch):
    src, reader = convert(tmp_path, arch, "q4_k_m")
    check_keys(reader, {**EXPECTED_KEYS[arch], "general.file_type": (U32, 15)})
    expected = expected_tensors(arch, src)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert {types[f"blk.{i}.ffn_down.weight"] for i in range(2)} <= {"Q4_K", "Q6_K"}
    for t in reader.tensors:  # dequantized by gguf-py: close to the source
        values = expected[t.name]
        deq = gguf_dequantize(np.asarray(t.data), t.tensor_type).reshape(values.shape)
        assert np.abs(deq - values).max() <= 0.1 * np.abs(values).max() + 1e-6, t.name


def test_sharded_checkpoint_equals_single_file(tmp_path):
    src, reader = convert(tmp_path, "llama", "f32", shards=3)
    assert (tmp_path / "llama" / "model.safetensors.index.json").is_file()
    expected = expected_tensors("llama", src)
    assert {t.name for t in reader.tensors} == set(expected)
    for t in reader.tensors:
        np.testing.assert_array_equal(np.asarray(t.data).reshape(expected[t.name].shape), expected[t.name])


def test_transformers_v5_rope_parameters_and_llama3_rope_factors(tmp_path):
    """v5 layout: rope_parameters holds rope_theta; llama3 scaling becomes a rope_freqs tensor."""
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    _, reader = convert(tmp_path, "llama", "f16", rope_theta=None, rope_parameters=rope)
    check_keys(reader, {"llama.rope.freq_base": (F32, 500000.0)})
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    values = np.asarray(freqs.data)
    assert freqs.tensor_type.name == "F32" and values.shape == (tiny.HEAD_DIM // 2,)
    # highest frequency (wavelength 2*pi < 64/4) unscaled; lowest (wavelength > 64) scaled by factor 8
    assert values[0] == 1.0 and values[-1] == 8.0


def test_linear_rope_scaling_keys(tmp_path):
    _, reader = convert(tmp_path, "llama", "f16", rope_scaling={"type": "linear", "factor": 4.0})
    check_keys(reader, {"llama.rope.scaling.type": (STR, "linear"), "llama.rope.scaling.factor": (F32, 4.0)})


def test_overrides_and_dry_run(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    out = tmp_path / "o.gguf"
    args = ["convert", str(tmp_path / "m"), "--type", "q8_0", "-o", str(out), "--quiet",
            "--tensor-type", "ffn_up=q4_0", "--output-type", "f16", "--embedding-type", "q6_k"]
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert not out.exists()
    assert "blk.0.ffn_up.weight" in printed and "bits per weight" in printed
    assert main(args) == 0
    types = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert types["blk.1.ffn_up.weight"] == "Q4_0" and types["blk.1.ffn_gate.weight"] == "Q8_0"
    assert types["output.weight"] == "F16" and types["token_embd.weight"] == "Q6_K"


def test_default_output_name(tmp_path, monkeypatch):
    tiny.write_checkpoint(tmp_path / "Tiny-Llama", "llama")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(tmp_path / "Tiny-Llama"), "--type", "f16", "--quiet"]) == 0
    assert (tmp_path / "Tiny-Llama-F16.gguf").is_file()


def test_requantize_f32_gguf_matches_direct_conversion(tmp_path):
    """ggq quantize F32.gguf -> Q8_0 holds the same tensor bytes as converting straight to Q8_0."""
    convert(tmp_path, "qwen2", "f32")
    direct = {t.name: np.asarray(t.data).tobytes() for t in convert(tmp_path, "qwen2", "q8_0")[1].tensors}
    out = tmp_path / "re.gguf"
    assert main(["quantize", str(tmp_path / "qwen2-f32.gguf"), str(out), "--type", "q8_0", "--quiet"]) == 0
    reader = GGUFReader(out)
    assert {t.name: np.asarray(t.data).tobytes() for t in reader.tensors} == direct
    check_keys(reader, {**EXPECTED_KEYS["qwen2"], **COMMON_KEYS, "general.file_type": (U32, 7)})
