"""Model hyperparameters read from GGUF metadata, with what differs between architectures kept as data.

    p = read_params(gguf.metadata, gguf.tensors)   # -> ModelParams (frozen)

ARCHS says, per `general.architecture`, which pieces of the transformer block the model uses; TENSORS
names every tensor role once (GGUF names, `{i}` = layer). Anything the runtime does not implement is
refused with a GGQError rather than run wrongly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ggq.errors import GGQError


@dataclass(frozen=True)
class ArchSpec:
    rope_neox: bool             # rotate pairs (i, i + d/2) (NeoX) instead of (2i, 2i + 1) (GPT-J/llama)
    qkv_bias: bool = False      # q/k/v projections have biases (qwen2)
    qk_norm: bool = False       # RMSNorm over each head of q and k before rope (gemma3, qwen3)
    post_norms: bool = False    # RMSNorm on the attention and FFN outputs before the residual (gemma3)
    activation: str = "silu"    # gate activation: "silu" or "gelu_tanh"
    embed_scale: bool = False   # embeddings times sqrt(n_embd) (gemma)
    swa_pattern: int = 0        # sliding-window layers: every swa_pattern-th layer is global (0 = none)
    attn_scale_27b: bool = False  # gemma3 27B scales q by 1/sqrt(n_embd/n_head), as llama.cpp does


ARCHS: dict[str, ArchSpec] = {
    "llama": ArchSpec(rope_neox=False),  # also Mistral, TinyLlama, SmolLM (q/k permuted by the converter)
    "qwen2": ArchSpec(rope_neox=True, qkv_bias=True),
    "qwen3": ArchSpec(rope_neox=True, qk_norm=True),
    "gemma3": ArchSpec(rope_neox=True, qk_norm=True, post_norms=True, activation="gelu_tanh",
                       embed_scale=True, swa_pattern=6, attn_scale_27b=True),
}

# role -> GGUF tensor name; `{i}` is the layer index
TENSORS: dict[str, str] = {
    "token_embd": "token_embd.weight", "output_norm": "output_norm.weight", "output": "output.weight",
    "rope_freqs": "rope_freqs.weight",
    "attn_norm": "blk.{i}.attn_norm.weight",
    "wq": "blk.{i}.attn_q.weight", "wk": "blk.{i}.attn_k.weight", "wv": "blk.{i}.attn_v.weight",
    "bq": "blk.{i}.attn_q.bias", "bk": "blk.{i}.attn_k.bias", "bv": "blk.{i}.attn_v.bias",
    "q_norm": "blk.{i}.attn_q_norm.weight", "k_norm": "blk.{i}.attn_k_norm.weight",
    "wo": "blk.{i}.attn_output.weight", "attn_post_norm": "blk.{i}.post_attention_norm.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "ffn_gate": "blk.{i}.ffn_gate.weight", "ffn_up": "blk.{i}.ffn_up.weight",
    "ffn_down": "blk.{i}.ffn_down.weight", "ffn_post_norm": "blk.{i}.post_ffw_norm.weight",
}

ROPE_BASE_SWA = 10000.0  # llama.cpp's default rope base of sliding-window layers (gemma3)


@dataclass(frozen=True)
class ModelParams:
    arch: str
    spec: ArchSpec
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_dims: int
    rope_base: float
    rope_scale: float           # position multiplier of global layers (1 / linear scaling factor)
    rope_base_swa: float
    swa_window: int             # 0: no sliding window
    swa_layers: tuple[bool, ...]
    attn_scale: float           # q is multiplied by this before q.k
    embed_scale: float
    final_softcap: float        # 0: no soft-capping of the logits

    def is_swa(self, layer: int) -> bool:
        return self.swa_window > 0 and self.swa_layers[layer]


def _get(meta: dict, key: str, kind: type, default=None):
    value = meta.get(key, default)
    if value is None:
        raise GGQError(f"missing metadata key {key}")
    if isinstance(value, np.ndarray) and value.size and np.all(value == value.flat[0]):
        value = value.flat[0].item()  # per-layer arrays with one value (some converters write them)
    if isinstance(value, (bool, str, list, np.ndarray)) or not isinstance(value, (int, float)):
        raise GGQError(f"metadata {key} must be a single number, got {type(value).__name__}")
    if kind is int and (value != int(value) or value < 0):
        raise GGQError(f"metadata {key} must be a non-negative integer, got {value}")
    return kind(value)


def _rope_scale(meta: dict, arch: str) -> float:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind in ("none", None):
        factor = meta.get(f"{arch}.rope.scale_linear", 1.0)  # older files
    elif kind == "linear":
        factor = _get(meta, f"{arch}.rope.scaling.factor", float)
    else:
        raise GGQError(f"rope scaling '{kind}' is not supported by the ggq runtime")
    if not factor or factor <= 0:
        raise GGQError(f"bad rope scaling factor {factor}")
    return 1.0 / float(factor)


def _swa(meta: dict, arch: str, spec: ArchSpec, n_layer: int) -> tuple[int, tuple[bool, ...]]:
    window = _get(meta, f"{arch}.attention.sliding_window", int, 0) if spec.swa_pattern else 0
    if window == 0:
        return 0, (False,) * n_layer
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern", spec.swa_pattern)
    if isinstance(pattern, np.ndarray):  # explicit per-layer flags
        if pattern.size != n_layer:
            raise GGQError(f"{arch}.attention.sliding_window_pattern has {pattern.size} entries")
        return window, tuple(bool(v) for v in pattern)
    pattern = int(pattern)
    return window, tuple(pattern == 0 or i % pattern < pattern - 1 for i in range(n_layer))


def read_params(meta: dict, tensors: dict) -> ModelParams:
    """Hyperparameters of the model in a GGUF file (its metadata and tensor table)."""
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise GGQError(f"architecture {arch!r} is not supported (supported: {', '.join(ARCHS)})")
    spec = ARCHS[arch]
    n_embd = _get(meta, f"{arch}.embedding_length", int)
    n_head = _get(meta, f"{arch}.attention.head_count", int)
    n_head_kv = _get(meta, f"{arch}.attention.head_count_kv", int, n_head)
    n_layer = _get(meta, f"{arch}.block_count", int)
    if min(n_embd, n_head, n_head_kv, n_layer) <= 0 or n_head % n_head_kv:
        raise GGQError(f"bad attention shape: n_embd {n_embd}, heads {n_head}, kv heads {n_head_kv}")
    head_dim = _get(meta, f"{arch}.attention.key_length", int, n_embd // n_head)
    if _get(meta, f"{arch}.attention.value_length", int, head_dim) != head_dim:
        raise GGQError("different key and value head sizes are not supported")
    rope_dims = _get(meta, f"{arch}.rope.dimension_count", int, head_dim)
    if rope_dims > head_dim or rope_dims % 2:
        raise GGQError(f"rope dimension count {rope_dims} does not fit head size {head_dim}")
    embd = tensors.get(TENSORS["token_embd"])
    if embd is None:
        raise GGQError("missing tensor token_embd.weight")
    n_vocab = embd.shape[0]
    swa_window, swa_layers = _swa(meta, arch, spec, n_layer)
    big = spec.attn_scale_27b and n_layer == 62
    return ModelParams(
        arch=arch, spec=spec, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=_get(meta, f"{arch}.feed_forward_length", int), n_vocab=n_vocab,
        n_ctx_train=_get(meta, f"{arch}.context_length", int, 2048),
        rms_eps=_get(meta, f"{arch}.attention.layer_norm_rms_epsilon", float, 1e-5),
        rope_dims=rope_dims, rope_base=_get(meta, f"{arch}.rope.freq_base", float, 10000.0),
        rope_scale=_rope_scale(meta, arch),
        rope_base_swa=_get(meta, f"{arch}.rope.freq_base_swa", float, ROPE_BASE_SWA),
        swa_window=swa_window, swa_layers=swa_layers,
        attn_scale=1.0 / math.sqrt(n_embd / n_head if big else head_dim),
        embed_scale=math.sqrt(n_embd) if spec.embed_scale else 1.0,
        final_softcap=_get(meta, f"{arch}.final_logit_softcapping", float, 0.0),
    )
