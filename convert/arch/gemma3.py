"""Gemma 3 (text): convert_hf_to_gguf's Gemma3Model, as data.

- Gemma3RMSNorm scales by (1 + w): every '*norm.weight' is stored with 1.0 added.
- The embedding scale sqrt(n_embd) is applied by llama.cpp at run time, not baked into token_embd.
- token_embd rows past the tokenizer's vocabulary are dropped; output is tied (no output.weight).
- Extra per-layer norms (post_attention_norm, post_ffw_norm) and q/k norms; NEOX rope (no permute).
- config defaults are the ones Gemma3Model.set_gguf_parameters falls back to.
"""
from __future__ import annotations

from ggq.convert.arch.base import GLOBAL_TENSORS, LAYER_TENSORS, ArchSpec, Params


def gemma3_metadata(p: Params) -> dict:
    md = {}
    if p.final_logit_softcapping:
        md["gemma3.final_logit_softcapping"] = p.final_logit_softcapping
    if p.sliding_window_pattern != 1 and p.sliding_window is not None:
        md["gemma3.attention.sliding_window"] = p.sliding_window
    return md


GEMMA3 = ArchSpec(
    hf_names=("Gemma3ForCausalLM",),
    gguf_arch="gemma3",
    global_tensors=GLOBAL_TENSORS,
    layer_tensors={
        **LAYER_TENSORS,
        "post_attention_layernorm.weight": "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    },
    norm_shift=1.0,
    trim_embedding_to_vocab=True,
    config_defaults={"max_position_embeddings": 131072, "num_attention_heads": 8, "rms_norm_eps": 1e-6,
                     "head_dim": 256, "num_key_value_heads": 4, "rope_theta": 1_000_000.0,
                     "tie_word_embeddings": True},  # Gemma3TextConfig's default
    extra_metadata=gemma3_metadata,
)
