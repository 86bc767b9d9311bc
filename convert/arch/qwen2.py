"""Qwen2: convert_hf_to_gguf's Qwen2Model, as data.

Qwen2 uses NEOX-style rope in llama.cpp (rotating the two halves of a head), the same order the HF
checkpoint stores, so q/k rows are NOT permuted. q/k/v carry biases. Only the common keys are written.
"""
from __future__ import annotations

from ggq.convert.arch.base import ATTENTION_BIASES, GLOBAL_TENSORS, LAYER_TENSORS, ArchSpec

QWEN2 = ArchSpec(
    hf_names=("Qwen2ForCausalLM",),
    gguf_arch="qwen2",
    global_tensors=GLOBAL_TENSORS,
    layer_tensors={**LAYER_TENSORS, **ATTENTION_BIASES},
)
