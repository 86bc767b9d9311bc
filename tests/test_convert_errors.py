"""Bad inputs to `ggq convert` / `ggq quantize`: one line on stderr starting 'ggq: ', exit 1, no output file.

ORACLE: the CLI contract in CONTEXT.md (one user-facing error type, no partial output). The broken
checkpoints are written here; the safetensors layout is the published format (8-byte length + JSON).
"""
from __future__ import annotations

import json

import pytest

from ggq.cli import main
import tiny_checkpoints as tiny


def fails_cleanly(capsys, argv, out, *needles):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("ggq: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))  # no temp file left behind
    return err


def convert_args(folder, out):
    return ["convert", str(folder), "--type", "f16", "-o", str(out), "--quiet"]


def test_missing_config(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    (tmp_path / "m" / "config.json").unlink()
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf", "config.json")


def test_unknown_architecture(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama", architectures=["FalconForCausalLM"])
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf",
                  "unsupported architecture 'FalconForCausalLM' (supported: LlamaForCausalLM, "
                  "MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM)")


def test_missing_tokenizer(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    (tmp_path / "m" / "tokenizer.json").unlink()
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf", "tokenizer")


@pytest.mark.parametrize("cut", [4, 100, -10])
def test_truncated_safetensors(tmp_path, capsys, cut):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    st = tmp_path / "m" / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:cut])
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf",
                  "model.safetensors")


@pytest.mark.parametrize("dtype", ["I64", "F64"])
def test_unsupported_dtype(tmp_path, capsys, dtype):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    st = tmp_path / "m" / "model.safetensors"
    data = st.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    entry = header["model.norm.weight"]  # 256 f32 = 1024 bytes = 128 I64/F64 values
    entry["dtype"], entry["shape"] = dtype, [128]
    text = json.dumps(header).encode()
    st.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf",
                  f"dtype {dtype}", "model.safetensors")


def test_unwritable_output_path(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    out = tmp_path / "no-such-dir" / "o.gguf"
    fails_cleanly(capsys, convert_args(tmp_path / "m", out), out, "no-such-dir")


def test_missing_shard(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama", shards=2)
    (tmp_path / "m" / "model-00002-of-00002.safetensors").unlink()
    fails_cleanly(capsys, convert_args(tmp_path / "m", tmp_path / "o.gguf"), tmp_path / "o.gguf", "shard")


def test_no_such_source(tmp_path, capsys):
    fails_cleanly(capsys, convert_args(tmp_path / "nothing-here", tmp_path / "o.gguf"), tmp_path / "o.gguf")


def test_hub_repo_offline_not_cached(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.gguf"
    fails_cleanly(capsys, convert_args("someorg/not-cached-model", out), out, "someorg/not-cached-model")


def test_quantize_refuses_quantized_input(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    q = tmp_path / "q.gguf"
    assert main(["convert", str(tmp_path / "m"), "--type", "q8_0", "-o", str(q), "--quiet"]) == 0
    out = tmp_path / "o.gguf"
    fails_cleanly(capsys, ["quantize", str(q), str(out), "--type", "q4_0", "--quiet"], out,
                  "already quantized", "--allow-requantize")
    assert main(["quantize", str(q), str(out), "--type", "q4_0", "--quiet", "--allow-requantize"]) == 0
    assert out.is_file()


def test_bad_tensor_type_option(tmp_path, capsys):
    tiny.write_checkpoint(tmp_path / "m", "llama")
    out = tmp_path / "o.gguf"
    fails_cleanly(capsys, [*convert_args(tmp_path / "m", out), "--tensor-type", "ffn_up=q9_9"], out, "q9_9")
    fails_cleanly(capsys, [*convert_args(tmp_path / "m", out), "--tensor-type", "ffn_up"], out, "PATTERN=TYPE")
