"""Llama (and Mistral, which converts the same way): convert_hf_to_gguf's LlamaModel, as data.

Llama checkpoints from Hugging Face store q/k rows in the order the HF rotary embedding wants
(first halves of every head, then second halves); llama.cpp's LLAMA rope rotates adjacent pairs,
so q and k rows are permuted back (`undo_permute` there, `permute_qk` here).
"""
from __future__ import annotations

import math

import numpy as np

from ggq.convert.arch.base import (ATTENTION_BIASES, GLOBAL_TENSORS, LAYER_TENSORS, ArchSpec, Params)


def llama_metadata(p: Params) -> dict:
    """LlamaModel.set_gguf_parameters: vocab size and rope dimension after the common keys."""
    md = {}
    if p.vocab_size is not None:
        md["llama.vocab_size"] = p.vocab_size
    md["llama.rope.dimension_count"] = p.head_dim
    return md


def llama3_rope_factors(p: Params) -> list[tuple[str, np.ndarray]]:
    """rope_freqs.weight for rope_type 'llama3': per-frequency divisors, as LlamaModel.generate_extra_tensors."""
    rope = p.rope
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return []
    base, dim = float(rope.get("rope_theta", 10000.0)), p.head_dim
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factors = []
    for freq in freqs.astype(np.float32):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", np.array(factors, dtype=np.float32))]


LLAMA = ArchSpec(
    hf_names=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_arch="llama",
    global_tensors=GLOBAL_TENSORS,
    layer_tensors={**LAYER_TENSORS, **ATTENTION_BIASES},
    permute_qk=True,
    extra_metadata=llama_metadata,
    extra_tensors=llama3_rope_factors,
)
