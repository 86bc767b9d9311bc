"""Tiny random Hugging Face checkpoints (Llama, Qwen2, Gemma3) written by the tests themselves.

Each is a real checkpoint folder: config.json, model.safetensors (or shards + index) written with the
safetensors package's numpy API, a tiny byte-level BPE tokenizer.json and a tokenizer_config.json with
a chat template. Rows are 256 long so k-quants apply without fallback. Returned `tensors` hold the
float32 values as stored (BF16 checkpoints: already rounded to bf16).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

N_EMBD, N_FF, N_HEAD, N_HEAD_KV, HEAD_DIM, N_LAYER, VOCAB = 256, 512, 4, 2, 64, 2, 48
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CONFIGS = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rope_theta": 10000.0,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "max_position_embeddings": 2048},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 4096,
              "sliding_window": 4096, "use_sliding_window": False},
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "rope_theta": 1000000.0,
               "rope_local_base_freq": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 8192,
               "sliding_window": 512, "sliding_window_pattern": 6, "head_dim": HEAD_DIM,
               "query_pre_attn_scalar": HEAD_DIM, "final_logit_softcapping": None, "rope_scaling": None},
}


def config(arch: str, **overrides) -> dict:
    base = {"hidden_size": N_EMBD, "intermediate_size": N_FF, "num_attention_heads": N_HEAD,
            "num_key_value_heads": N_HEAD_KV, "num_hidden_layers": N_LAYER, "vocab_size": VOCAB,
            "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32"}
    return {**base, **CONFIGS[arch], **overrides}


def _layer_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    shapes = {"input_layernorm.weight": (N_EMBD,), "post_attention_layernorm.weight": (N_EMBD,),
              "self_attn.q_proj.weight": (q, N_EMBD), "self_attn.k_proj.weight": (kv, N_EMBD),
              "self_attn.v_proj.weight": (kv, N_EMBD), "self_attn.o_proj.weight": (N_EMBD, q),
              "mlp.gate_proj.weight": (N_FF, N_EMBD), "mlp.up_proj.weight": (N_FF, N_EMBD),
              "mlp.down_proj.weight": (N_EMBD, N_FF)}
    if arch == "qwen2":
        shapes.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                       "self_attn.v_proj.bias": (kv,)})
    if arch == "gemma3":
        shapes.update({"pre_feedforward_layernorm.weight": (N_EMBD,),
                       "post_feedforward_layernorm.weight": (N_EMBD,),
                       "self_attn.q_norm.weight": (HEAD_DIM,), "self_attn.k_norm.weight": (HEAD_DIM,)})
    return shapes


def random_tensors(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"model.embed_tokens.weight": (VOCAB, N_EMBD), "model.norm.weight": (N_EMBD,)}
    for i in range(N_LAYER):
        shapes.update({f"model.layers.{i}.{k}": v for k, v in _layer_shapes(arch).items()})
    if not CONFIGS[arch].get("tie_word_embeddings", True):  # Gemma3's config ties by default
        shapes["lm_head.weight"] = (VOCAB, N_EMBD)
    return {name: rng.standard_normal(shape).astype(np.float32) * 0.1 for name, shape in sorted(shapes.items())}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even (as torch does)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16)).astype(np.uint16)


def _save(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """numpy has no bfloat16: write F32 with safetensors, or lay BF16 bytes out by hand (same format)."""
    if dtype != "BF16":
        save_file({k: v.astype(np.float16 if dtype == "F16" else np.float32) for k, v in tensors.items()},
                  str(path))
        return
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        blob = bf16_bits(value).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def stored_values(tensors: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    if dtype == "BF16":
        return {k: (bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in tensors.items()}
    if dtype == "F16":
        return {k: v.astype(np.float16).astype(np.float32) for k, v in tensors.items()}
    return dict(tensors)


def tokenizer_json() -> dict:
    """A byte-level BPE: 40 single-character tokens, a few merges, three added special tokens."""
    chars = list("abcdefghijklmnopqrstuvwxyz") + ["Ġ", "Ċ", ".", ",", "!", "?", "0", "1"]
    vocab = {c: i + 3 for i, c in enumerate(chars)}
    merges = [["t", "h"], ["th", "e"], ["Ġ", "a"], ["i", "n"], ["e", "r"]]
    for a, b in merges:
        vocab[a + b] = len(vocab) + 3
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(["<|im_start|>", "<|im_end|>", "<unk>"])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                                                  "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "vocab": vocab, "merges": merges}}


def write_checkpoint(folder: Path, arch: str, dtype: str = "F32", shards: int = 1, seed: int = 0,
                     **config_overrides) -> dict[str, np.ndarray]:
    """Write a checkpoint into `folder`; returns the float32 values of its tensors as stored."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = random_tensors(arch, seed)
    cfg = config(arch, **config_overrides)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<unk>",
         "add_bos_token": False, "chat_template": CHAT_TEMPLATE}))
    if shards == 1:
        _save(folder / "model.safetensors", tensors, dtype)
    else:
        names = list(tensors)
        weight_map = {}
        for k in range(shards):
            shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[k::shards]}
            _save(folder / shard, part, dtype)
            weight_map.update({n: shard for n in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return stored_values(tensors, dtype)
