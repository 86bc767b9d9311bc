"""What every supported architecture is, as data: `ArchSpec` (names, flags) and `Params` (from config.json).

The metadata keys and their GGUF types are the ones llama.cpp's convert_hf_to_gguf.py writes
(TextModel.set_gguf_parameters): UINT32 for counts and lengths, FLOAT32 for rope bases and epsilons.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ggq.errors import GGQError
from ggq.convert.checkpoint import rope_parameters


@dataclass(frozen=True)
class Params:
    """The hyper-parameters a conversion needs, read once from config.json."""
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    head_dim_in_config: bool  # convert_hf_to_gguf writes key/value_length only when config has head_dim
    n_ctx: int | None
    rms_eps: float
    vocab_size: int | None
    tied_embeddings: bool
    rope: dict = field(default_factory=dict)
    sliding_window: int | None = None
    sliding_window_pattern: int | None = None
    final_logit_softcapping: float | None = None


@dataclass(frozen=True)
class ArchSpec:
    """One Hugging Face architecture: how its tensors are named and changed on the way to GGUF."""
    hf_names: tuple[str, ...]
    gguf_arch: str
    global_tensors: dict[str, str]  # full HF name -> GGUF name
    layer_tensors: dict[str, str]  # HF name after 'model.layers.{i}.' -> GGUF name after 'blk.{i}.'
    permute_qk: bool = False  # llama-style rope: q/k rows are reordered (LlamaModel.permute)
    norm_shift: float = 0.0  # added to every '*norm.weight' (Gemma3RMSNorm multiplies by 1 + w)
    trim_embedding_to_vocab: bool = False  # drop token_embd rows past the tokenizer's vocabulary
    config_defaults: dict = field(default_factory=dict)
    extra_metadata: Callable[[Params], dict] = lambda p: {}
    extra_tensors: Callable[[Params], list[tuple[str, np.ndarray]]] = lambda p: []
    ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)


def _int(config: dict, key: str, required: bool = True) -> int | None:
    v = config.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise GGQError(f"config.json: '{key}' is {v!r}, expected a non-negative integer")
    return v


def _float(config: dict, key: str) -> float:
    v = config.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise GGQError(f"config.json: '{key}' is {v!r}, expected a number")
    return float(v)


def params_from_config(config: dict, defaults: dict) -> Params:
    config = {**defaults, **{k: v for k, v in config.items() if v is not None}}
    n_embd, n_head = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    if n_head == 0 or n_embd % n_head:
        raise GGQError(f"config.json: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    head_dim = _int(config, "head_dim", required=False)
    softcap = config.get("final_logit_softcapping")
    return Params(
        n_layer=_int(config, "num_hidden_layers"), n_embd=n_embd, n_ff=_int(config, "intermediate_size"),
        n_head=n_head, n_head_kv=_int(config, "num_key_value_heads", required=False) or n_head,
        head_dim=head_dim or n_embd // n_head, head_dim_in_config=head_dim is not None,
        n_ctx=_int(config, "max_position_embeddings", required=False), rms_eps=_float(config, "rms_norm_eps"),
        vocab_size=_int(config, "vocab_size", required=False),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)), rope=rope_parameters(config),
        sliding_window=_int(config, "sliding_window", required=False),
        sliding_window_pattern=_int(config, "sliding_window_pattern", required=False),
        final_logit_softcapping=float(softcap) if isinstance(softcap, (int, float)) and softcap else None)


def _rope_scaling_metadata(arch: str, rope: dict) -> dict:
    """Rope scaling keys, as TextModel.set_gguf_parameters writes them (llama3 becomes a tensor instead)."""
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind == "linear" and factor is not None:
        return {f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": float(factor)}
    if kind != "yarn" or factor is None:
        return {}
    md = {f"{arch}.rope.scaling.type": "yarn", f"{arch}.rope.scaling.factor": float(factor),
          f"{arch}.rope.scaling.original_context_length": int(rope["original_max_position_embeddings"])}
    for key, names in (("yarn_ext_factor", ("extrapolation_factor",)),
                       ("yarn_attn_factor", ("attention_factor", "attn_factor")),
                       ("yarn_beta_fast", ("beta_fast",)), ("yarn_beta_slow", ("beta_slow",))):
        value = next((rope[n] for n in names if rope.get(n) is not None), None)
        if value is not None:
            md[f"{arch}.rope.scaling.{key}"] = float(value)
    return md


def common_metadata(arch: str, p: Params) -> dict:
    """The keys every text model gets, in convert_hf_to_gguf's order."""
    md: dict = {f"{arch}.block_count": p.n_layer}
    if p.n_ctx is not None:
        md[f"{arch}.context_length"] = p.n_ctx
    md[f"{arch}.embedding_length"] = p.n_embd
    md[f"{arch}.feed_forward_length"] = p.n_ff
    md[f"{arch}.attention.head_count"] = p.n_head
    md[f"{arch}.attention.head_count_kv"] = p.n_head_kv
    md.update(_rope_scaling_metadata(arch, p.rope))
    if p.rope.get("rope_theta") is not None:
        md[f"{arch}.rope.freq_base"] = float(p.rope["rope_theta"])
    if (p.rope.get("sliding_attention") or {}).get("rope_theta") is not None:
        md[f"{arch}.rope.freq_base_swa"] = float(p.rope["sliding_attention"]["rope_theta"])
    md[f"{arch}.attention.layer_norm_rms_epsilon"] = p.rms_eps
    if p.head_dim_in_config:
        md[f"{arch}.attention.key_length"] = p.head_dim
        md[f"{arch}.attention.value_length"] = p.head_dim
    return md


# The tensor names llama-family decoders share (gguf-py's tensor_mapping for LLAMA/QWEN2/GEMMA3).
GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
ATTENTION_BIASES = {
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
}
