"""Per-tensor type mixing for `ggq convert --type`: which GGUF type each tensor gets for a file type.

Reproduces llama.cpp's llama-quantize policy (src/llama-quant.cpp: tensor_allows_quantization,
llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback, llama_ftype_get_default_type)
for the file types ggq supports, expressed as tables:

- `FTYPES`: file type name -> (general.file_type id, default tensor type).
- `_RULES`: (tensor kind, file types, condition, type), first match per kind wins; no match keeps the default.
- `_BUMPS`: unconditional post-steps for attn_v-like tensors (70B and 8-expert bumps).
- `_FALLBACK`: 256-block type -> 32-block type used when a row length is not a multiple of 256.

Counters (i-th attn_v, i-th ffn_down) follow llama.cpp's processing order, which is NOT the file order:
llama-quantize walks tensors sorted by (layer number, or -1 outside blk.N., then name).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, NamedTuple

from ggq.errors import GGQError
from ggq.qtypes import QTYPES


class FType(NamedTuple):
    name: str
    file_type_id: int  # LLAMA_FTYPE_* written to general.file_type
    default_type: str


FTYPES: dict[str, FType] = {f.name: f for f in (
    FType("f32", 0, "F32"),
    FType("f16", 1, "F16"),
    FType("bf16", 32, "BF16"),
    FType("q8_0", 7, "Q8_0"),
    FType("q4_0", 2, "Q4_0"),
    FType("q4_1", 3, "Q4_1"),
    FType("q5_0", 8, "Q5_0"),
    FType("q5_1", 9, "Q5_1"),
    FType("q2_k", 10, "Q2_K"),
    FType("q3_k_s", 11, "Q3_K"),
    FType("q3_k_m", 12, "Q3_K"),
    FType("q3_k_l", 13, "Q3_K"),
    FType("q4_k_s", 14, "Q4_K"),
    FType("q4_k_m", 15, "Q4_K"),
    FType("q5_k_s", 16, "Q5_K"),
    FType("q5_k_m", 17, "Q5_K"),
    FType("q6_k", 18, "Q6_K"),
)}

# A 256-block type whose row length does not divide falls back to a 32-block type; if that does not
# divide either (rows not a multiple of 32), the tensor is stored as F16.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# Models whose attn_v gets the 70B bump: arch -> (n_layer, requires n_head != n_head_kv).
_SIZE_70B = {"llama": (80, True), "qwen2": (80, False), "deci": (80, False), "olmo": (80, False),
             "jais2": (68, False)}

# Tensor kinds by name, in llama.cpp's matching order (first substring hit wins).
_KINDS = (
    ("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"),
)

# Substrings of 2-D+ "*weight" tensors that llama-quantize never quantizes (kept in their source type).
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")


class _Ctx(NamedTuple):
    """What a rule's condition may look at."""
    i_layer: int  # layer index of this tensor (ffn_down), or the attn_v counter (attn_v)
    n_layer: int  # n_layer (ffn_down) or number of attn_v tensors (attn_v)
    n_gqa: int
    n_expert: int
    arch: str
    has_imatrix: bool


def _more_bits(c: _Ctx) -> bool:
    """llama.cpp's use_more_bits: first and last eighth, and every third layer in between."""
    i, n = c.i_layer, c.n_layer
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_ALWAYS: Callable[[_Ctx], bool] = lambda c: True
_FALCON = lambda c: c.arch == "falcon"  # noqa: E731
_NOT_FALCON = lambda c: c.arch != "falcon"  # noqa: E731
_FIRST_8TH = lambda c: c.i_layer < c.n_layer // 8  # noqa: E731
_FIRST_16TH = lambda c: c.i_layer < c.n_layer // 16  # noqa: E731
_K_MIX = frozenset({"q2_k", "q3_k_s", "q3_k_m", "q4_k_s", "q4_k_m"})


class Rule(NamedTuple):
    kind: str
    ftypes: frozenset
    when: Callable[[_Ctx], bool]
    qtype: str


def _r(kind: str, ftypes: str, when: Callable[[_Ctx], bool], qtype: str) -> Rule:
    return Rule(kind, frozenset(ftypes.split()), when, qtype)


# First matching rule per kind wins; file types in one kind's rules are grouped like llama.cpp's else-if
# chains, so a file type whose conditions all fail keeps the default type.
_RULES: tuple[Rule, ...] = (
    _r("attn_v", "q2_k", lambda c: c.n_gqa >= 4, "Q4_K"),
    _r("attn_v", "q2_k", _ALWAYS, "Q3_K"),
    _r("attn_v", "q3_k_m", lambda c: c.i_layer < 2, "Q5_K"),
    _r("attn_v", "q3_k_m", _ALWAYS, "Q4_K"),
    _r("attn_v", "q3_k_l", _ALWAYS, "Q5_K"),
    _r("attn_v", "q4_k_m q5_k_m", _more_bits, "Q6_K"),
    _r("attn_v", "q4_k_s", lambda c: c.i_layer < 4, "Q5_K"),
    _r("attn_k", " ".join(FTYPES), lambda c: c.n_expert == 8, "Q8_0"),
    _r("ffn_down", "q2_k", _ALWAYS, "Q3_K"),
    _r("ffn_down", "q3_k_m", _FIRST_16TH, "Q5_K"),
    _r("ffn_down", "q3_k_m", lambda c: c.arch != "falcon" or _more_bits(c), "Q4_K"),
    _r("ffn_down", "q3_k_m", _ALWAYS, "Q3_K"),
    _r("ffn_down", "q3_k_l", _FALCON, "Q4_K"),
    _r("ffn_down", "q3_k_l", _ALWAYS, "Q5_K"),
    _r("ffn_down", "q4_k_m", lambda c: c.arch == "falcon" and _FIRST_16TH(c), "Q6_K"),
    _r("ffn_down", "q4_k_m", lambda c: c.arch == "falcon" and _more_bits(c), "Q5_K"),
    _r("ffn_down", "q4_k_m", _FALCON, "Q4_K"),
    _r("ffn_down", "q4_k_m", _more_bits, "Q6_K"),
    _r("ffn_down", "q5_k_m", _more_bits, "Q6_K"),
    _r("ffn_down", "q4_k_s", lambda c: c.arch != "falcon" and _FIRST_8TH(c), "Q5_K"),
    # with an importance matrix only, so that plain Q4_0/Q5_0 files stay as they always were
    _r("ffn_down", "q4_0", lambda c: c.has_imatrix and _FIRST_8TH(c), "Q4_1"),
    _r("ffn_down", "q5_0", lambda c: c.has_imatrix and _FIRST_8TH(c), "Q5_1"),
    _r("attn_output", " ".join(_K_MIX), lambda c: c.arch != "falcon" and c.n_expert == 8, "Q5_K"),
    _r("attn_output", "q2_k", lambda c: c.arch != "falcon" and c.n_expert != 8, "Q3_K"),
    _r("attn_output", "q3_k_m", lambda c: c.arch != "falcon" and c.n_expert != 8, "Q4_K"),
    _r("attn_output", "q3_k_l", lambda c: c.arch != "falcon" and c.n_expert != 8, "Q5_K"),
    _r("attn_output", "q3_k_l", _FALCON, "Q4_K"),
)

# Applied in order after the rules, to attn_v-like tensors only: (condition, {from type: to type}, "*" = any).
_BUMPS: tuple[tuple[str, dict[str, str]], ...] = (
    ("is_70b", {"Q3_K": "Q5_K", "Q4_K": "Q5_K"}),  # 8 query heads share each v head: a cheap boost
    ("n_expert_8", {"*": "Q8_0"}),
)


def ftype_names() -> list[str]:
    """File type names accepted by `ggq convert --type`, for CLI choices."""
    return list(FTYPES)


def _ftype(ftype: str) -> FType:
    entry = FTYPES.get(ftype.lower())
    if entry is None:
        raise GGQError(f"unknown file type {ftype!r}; choose one of: {', '.join(FTYPES)}")
    return entry


def file_type_id(ftype: str) -> int:
    """The LLAMA_FTYPE_MOSTLY_* value llama.cpp writes to general.file_type for this file type."""
    return _ftype(ftype).file_type_id


def default_type(ftype: str) -> str:
    return _ftype(ftype).default_type


def _type_name(name: str, what: str) -> str:
    upper = name.upper()
    if upper not in QTYPES or upper == "Q8_K":
        choices = ", ".join(t for t in QTYPES if t != "Q8_K")
        raise GGQError(f"{what}: unknown tensor type {name!r}; choose one of: {choices}")
    return upper


def _compile_patterns(tensor_types: Iterable[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    compiled = []
    for pattern, type_name in tensor_types:
        if not pattern:
            raise GGQError("--tensor-type: missing tensor name (expected NAME_REGEX=TYPE)")
        try:
            # llama-quantize lower-cases the pattern and matches it anywhere in the name (regex_search)
            compiled.append((re.compile(pattern.lower()), _type_name(type_name, f"--tensor-type {pattern}")))
        except re.error as e:
            raise GGQError(f"--tensor-type: bad pattern {pattern!r}: {e}") from None
    return compiled


def _kind(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, kind in _KINDS:
        if needle in name:
            return kind
    return "other"


def is_quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """llama.cpp's tensor_allows_quantization: 2-D/3-D '*weight' tensors except norms and small tables."""
    if len(shape) < 2 or all(d == 1 for d in shape[:-1]):
        return False  # ggml_n_dims < 2: outer dimensions of size 1 do not count
    if not name.endswith("weight") or name in _NEVER_QUANTIZED_NAMES:
        return False
    return not any(s in name for s in _NEVER_QUANTIZED)


def _layer_of(name: str) -> int:
    m = re.match(r"blk\.(-?\d+)\.", name)
    return int(m.group(1)) if m else -1


def _processing_order(names: list[str]) -> list[str]:
    """llama-quantize's tensor order: (layer number or -1, name) — a std::map with weight_name_comparer."""
    return sorted(names, key=lambda n: (_layer_of(n), n.encode()))


def _fallback(qtype: str, n_per_row: int) -> str:
    block = QTYPES[qtype].block_size
    if n_per_row % block == 0:
        return qtype
    result = _FALLBACK.get(qtype, qtype)
    return result if n_per_row % QTYPES[result].block_size == 0 else "F16"


def _rule_type(kind: str, ftype: str, ctx: _Ctx, current: str) -> str:
    for rule in _RULES:
        if rule.kind == kind and ftype in rule.ftypes and rule.when(ctx):
            return rule.qtype
    return current


def _bumped(qtype: str, flags: dict[str, bool]) -> str:
    for flag, mapping in _BUMPS:
        if flags[flag]:
            qtype = mapping.get(qtype, mapping.get("*", qtype))
    return qtype


class _Model(NamedTuple):
    ftype: str
    default: str
    n_layer: int
    n_attn_v: int
    n_gqa: int
    n_expert: int
    arch: str
    is_70b: bool
    tied: bool
    has_imatrix: bool
    output_type: str | None


def _mixed_type(name: str, kind: str, n_per_row: int, m: _Model, counters: dict[str, int]) -> str:
    """llama_tensor_get_type_impl for one tensor; advances the attn_v / ffn_down counters like llama.cpp."""
    if kind == "output" or (kind == "token_embd" and m.tied):
        if m.output_type:
            return m.output_type
        if m.arch == "falcon" or n_per_row % QTYPES[m.default].block_size != 0:
            return "Q8_0"
        return "Q6_K" if m.default != "Q8_0" else m.default
    if kind == "token_embd":
        return m.default
    if kind == "attn_v":
        ctx = _Ctx(counters["attn_v"], m.n_attn_v, m.n_gqa, m.n_expert, m.arch, m.has_imatrix)
        counters["attn_v"] += 1
        qtype = _rule_type(kind, m.ftype, ctx, m.default)
        return _bumped(qtype, {"is_70b": m.is_70b, "n_expert_8": m.n_expert == 8})
    i_layer = 0
    if kind == "ffn_down":
        # experts of one layer are not always consecutive in a file, so MoE layers come from the name
        i_layer = _layer_of(name) if m.n_expert > 1 else counters["ffn_down"]
        counters["ffn_down"] += 1
    ctx = _Ctx(i_layer, m.n_layer, m.n_gqa, m.n_expert, m.arch, m.has_imatrix)
    return _rule_type(kind, m.ftype, ctx, m.default)


def _is_70b(arch: str, n_layer: int, n_head: int, n_head_kv: int) -> bool:
    size = _SIZE_70B.get(arch)
    return size is not None and n_layer == size[0] and (not size[1] or n_head != n_head_kv)


def plan_types(tensors: list[tuple[str, tuple[int, ...]]], ftype: str, n_layer: int, n_head: int,
               n_head_kv: int, n_expert: int = 0, output_type: str | None = None,
               embedding_type: str | None = None, tensor_types: Iterable[tuple[str, str]] = (),
               pure: bool = False, *, arch: str = "llama", has_imatrix: bool = False,
               source_types: dict[str, str] | None = None) -> dict[str, str]:
    """GGUF type name per tensor for `ftype`, as llama-quantize would choose it.

    `tensors` are (GGUF name, numpy-order shape) pairs. Tensors llama.cpp never quantizes (1-D, norms, ...)
    keep `source_types[name]` (default "F32"). `output_type` / `embedding_type` / `tensor_types`
    (regex, type) / `pure` mirror llama-quantize's --output-tensor-type, --token-embedding-type,
    --tensor-type and --pure. Returns a dict in the order of `tensors`.
    """
    entry = _ftype(ftype)
    output_type = output_type and _type_name(output_type, "output tensor type")
    embedding_type = embedding_type and _type_name(embedding_type, "token embedding type")
    patterns = _compile_patterns(tensor_types)
    shapes = dict(tensors)
    model = _Model(entry.name, entry.default_type, n_layer,
                   sum(1 for name in shapes if _kind(name) == "attn_v"),
                   n_head // n_head_kv if n_head_kv else 0, n_expert, arch,
                   _is_70b(arch, n_layer, n_head, n_head_kv), "output.weight" not in shapes, has_imatrix,
                   output_type)
    counters = {"attn_v": 0, "ffn_down": 0}
    planned = {}
    for name in _processing_order(list(shapes)):
        planned[name] = _tensor_type(name, shapes[name], model, patterns, pure, embedding_type,
                                     counters, source_types or {})
    return {name: planned[name] for name in shapes}


def _tensor_type(name: str, shape: tuple[int, ...], m: _Model, patterns: list[tuple[re.Pattern, str]],
                 pure: bool, embedding_type: str | None, counters: dict[str, int],
                 source_types: dict[str, str]) -> str:
    """llama_tensor_get_type: flag overrides, then --tensor-type, then the mix, then the row-length fallback."""
    if not is_quantizable(name, shape):
        return source_types.get(name, "F32")
    kind = _kind(name)
    if embedding_type and kind == "token_embd":
        return embedding_type
    if m.output_type and kind == "output":
        return m.output_type
    if not QTYPES[m.default].is_quantized:
        return m.default  # f32/f16/bf16 files: no mixing, and --tensor-type is not consulted
    manual = next((qtype for pattern, qtype in patterns if pattern.search(name)), None)
    if manual is not None:
        qtype = manual
    elif pure:
        qtype = m.default
    else:
        qtype = _mixed_type(name, kind, shape[-1], m, counters)
    return _fallback(qtype, shape[-1])
