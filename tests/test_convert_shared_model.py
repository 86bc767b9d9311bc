"""Convert the shared SmolLM2-135M checkpoint and compare with the llama.cpp-made Q4_1 GGUF.

ORACLE: the shared checkpoint IS that Q4_1 GGUF dequantized (by llama.cpp's layout, q/k rows
un-permuted) and stored as bf16. So after conversion every tensor must equal the GGUF's tensor
dequantized by the `gguf` package and rounded to bf16 — attn_q/attn_k included, which checks our
row permutation against the one llama.cpp's converter applied. F16 output is that, rounded by numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

from ggq.cli import main
from ggq.convert.arch import arch_for, params_from_config
from ggq.convert.checkpoint import load_config
from ggq.convert.pipeline import checkpoint_sources
from ggq.convert.safetensors import open_checkpoint
import tiny_checkpoints as tiny


def bf16_round(x: np.ndarray) -> np.ndarray:
    return (tiny.bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


@pytest.fixture(scope="module")
def oracle(q4_1_gguf) -> dict[str, np.ndarray]:
    reader = GGUFReader(q4_1_gguf)
    return {t.name: bf16_round(dequantize(np.asarray(t.data), t.tensor_type)) for t in reader.tensors}


def test_q_k_rows_equal_llamacpp_layout_exactly(shared_model, oracle):
    config = load_config(shared_model)
    sources = checkpoint_sources(open_checkpoint(shared_model), arch_for("LlamaForCausalLM"),
                                 params_from_config(config, {}), None)
    want = oracle
    checked = 0
    for s in sources:
        if ".attn_q." in s.name or ".attn_k." in s.name:
            np.testing.assert_array_equal(s.load(), want[s.name].reshape(s.shape), err_msg=s.name)
            checked += 1
    assert checked == 2 * 30


def test_f16_conversion_of_shared_model(shared_model, q4_1_gguf, oracle, tmp_path):
    out = tmp_path / "smol.gguf"
    assert main(["convert", str(shared_model), "--type", "f16", "-o", str(out), "--quiet"]) == 0
    ref = GGUFReader(q4_1_gguf)
    ours = GGUFReader(out)
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]  # checkpoint order, as llama.cpp
    want = oracle
    for t in ours.tensors:
        values = np.asarray(t.data)
        expected = want[t.name].reshape(values.shape)
        assert t.tensor_type.name == ("F32" if values.ndim == 1 else "F16"), t.name
        np.testing.assert_array_equal(values, expected.astype(values.dtype), err_msg=t.name)
    for key in ("llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
                "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size", "llama.rope.dimension_count",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.bos_token_id", "tokenizer.chat_template"):
        assert ours.fields[key].types == ref.fields[key].types, key
        assert ours.fields[key].contents() == ref.fields[key].contents(), key
