"""A 1.1B-parameter Llama checkpoint with random bf16 weights, for measuring `ggq convert`'s memory use on a
model much larger than the shared 135M one.

Shape: TinyLlama-1.1B (hidden 2048, n_ff 5632, 22 layers, 32 heads, 4 KV heads, untied output), except the
vocabulary: the SmolLM2 tokenizer of the shared model is reused, so vocab_size is 49152 instead of 32000
(embedding and output are 49152 x 2048: 1.170 B parameters, 2.34 GB of bf16, instead of 1.100 B / 2.2 GB).

The safetensors files are written by hand (8-byte header length, JSON header, raw data), one tensor at a
time, so at most one tensor (<= 400 MB as float32) is in memory; shards of about --shard-mb MB with a
model.safetensors.index.json, as `save_pretrained` lays them out (one shard: model.safetensors). Weights are N(0, 0.02) rounded to bf16,
norms are 1.

    /work/main/.venv/bin/python -P bench/make_big_checkpoint.py [--out DIR] [--shard-mb 1000]

Default output: ~/.cache/ggq-bench/big-1.1b ($GGQ_BENCH_CACHE/big-1.1b); an existing complete checkpoint
is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("GGQ_TEST_DATA", Path.home() / ".cache" / "ggq-testdata")).expanduser()
TOKENIZER_SRC = DATA / "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
OUT = Path(os.environ.get("GGQ_BENCH_CACHE", Path.home() / ".cache" / "ggq-bench")).expanduser() / "big-1.1b"

HIDDEN, N_FF, N_LAYER, N_HEAD, N_HEAD_KV, N_VOCAB = 2048, 5632, 22, 32, 4, 49152
HEAD_DIM = HIDDEN // N_HEAD

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
    "hidden_size": HIDDEN, "intermediate_size": N_FF, "num_hidden_layers": N_LAYER,
    "num_attention_heads": N_HEAD, "num_key_value_heads": N_HEAD_KV, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None, "vocab_size": N_VOCAB,
    "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    "initializer_range": 0.02, "pretraining_tp": 1, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    "use_cache": True,
}


def tensor_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """HF names and shapes (torch order: out_features, in_features) in save_pretrained's order."""
    shapes = [("model.embed_tokens.weight", (N_VOCAB, HIDDEN))]
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (N_HEAD_KV * HEAD_DIM, HIDDEN)),
            (p + "self_attn.v_proj.weight", (N_HEAD_KV * HEAD_DIM, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (N_FF, HIDDEN)),
            (p + "mlp.up_proj.weight", (N_FF, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, N_FF)),
        ]
    shapes += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (N_VOCAB, HIDDEN))]
    return shapes


def shards(shapes, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive tensors grouped into shards of at most shard_bytes (a bigger tensor gets its own)."""
    groups, current, size = [], [], 0
    for name, shape in shapes:
        nbytes = 2 * int(np.prod(shape))
        if current and size + nbytes > shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    groups.append(current)
    return groups


def bf16_values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random weights (norms: ones) as bf16 bit patterns (uint16), rounded to nearest even."""
    if len(shape) == 1:
        return np.full(shape, 0x3F80, dtype=np.uint16)  # 1.0
    bits = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).view(np.uint32)
    bits += 0x7FFF + ((bits >> 16) & 1)  # round to nearest even (no NaNs in normal samples)
    return (bits >> 16).astype(np.uint16)


def write_shard(path: Path, group, rng: np.random.Generator) -> None:
    """One safetensors file, tensor by tensor."""
    header, offset = {}, 0
    for name, shape in group:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data section 8-aligned, as the reference writer does
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in group:
            f.write(bf16_values(name, shape, rng).tobytes())
    tmp.replace(path)


def make(out: Path, shard_mb: int, seed: int = 0) -> Path:
    """Write the checkpoint into `out` unless it is complete there. One shard is written as
    model.safetensors (no index), several as model-0000i-of-0000n.safetensors + index, as HF does."""
    groups = shards(tensor_shapes(), shard_mb * 10**6)
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
    marker = out / ("config.json" if len(groups) == 1 else "model.safetensors.index.json")
    if marker.is_file() and all((out / n).is_file() for n in names):
        print(f"{out}: already there")
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for fname, group in zip(names, groups):
        write_shard(out / fname, group, rng)
        for name, shape in group:
            weight_map[name] = fname
            total += 2 * int(np.prod(shape))
        print(f"wrote {fname} ({(out / fname).stat().st_size / 1e6:.0f} MB)", flush=True)
    for name in TOKENIZER_FILES:
        if (TOKENIZER_SRC / name).is_file():
            shutil.copy(TOKENIZER_SRC / name, out / name)
    if len(groups) > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    # config last: with the index (or the single file) it marks a complete checkpoint
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--shard-mb", type=int, default=1000,
                    help="shard size limit in MB (default 1000; 3000 or more: one model.safetensors)")
    args = ap.parse_args(argv)
    out = make(args.out, args.shard_mb)
    n = sum(int(np.prod(s)) for _, s in tensor_shapes())
    print(f"{out}: {n / 1e9:.3f} B parameters, {2 * n / 1e9:.2f} GB bf16")


if __name__ == "__main__":
    sys.exit(main())
