"""Reading a tokenizer out of GGUF metadata, with llama.cpp's defaults and fix-ups
(llama_vocab::impl::load in src/llama-vocab.cpp): special ids, add_bos/add_eos, token attributes,
auto-detected end-of-turn tokens and the end-of-generation set.
"""
from __future__ import annotations

import numpy as np

from ggq.errors import GGQError

from .bpe import BPE
from .pretokenize import pre_tokenizer
from .spm import SPM
from .tokenizer import (_DEFAULT_IDS, _EOG_TEXTS, _EOT_TEXTS, _FIM_EOG_TEXTS, _SPECIAL_ID_KEYS, _TYPE_TO_ATTR,
                        CONTROL, NORMAL, RSTRIP, UNKNOWN, USER_DEFINED, _meta)

_FIM_CONTROL_TEXTS = (
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
    "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
    "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
    "▁<MID>", "<|code_middle|>", "<|middle|>")
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")   # gpt-oss


def build_tokenizer(metadata: dict, cls):
    model = _meta(metadata, "model")
    if model not in ("llama", "gpt2"):
        raise GGQError(f"tokenizer: unsupported tokenizer.ggml.model {model!r} (supported: llama, gpt2)")
    tokens = _token_list(metadata)
    token_to_id = {text: i for i, text in enumerate(tokens)}   # duplicates: the last id wins, as in llama.cpp
    attrs = _token_attrs(metadata, len(tokens))
    ids = _special_ids(metadata, model, len(tokens))

    if model == "llama":
        add_bos, clean_spaces, add_space_prefix = True, False, True
        encoder = SPM(token_to_id, _scores(metadata, len(tokens)), ids.get("unk"))
    else:
        pre_name = _meta(metadata, "pre")
        pre = pre_tokenizer(pre_name)
        if pre is None:
            raise GGQError(f"tokenizer: unsupported pre-tokenizer tokenizer.ggml.pre = {pre_name!r}")
        merges = _meta(metadata, "merges")
        if merges is None:
            raise GGQError("tokenizer: gpt2 tokenizer without tokenizer.ggml.merges")
        add_bos, clean_spaces, add_space_prefix = pre.add_bos, pre.clean_spaces, False
        encoder = BPE(token_to_id, list(merges), pre)
    add_space_prefix = bool(_meta(metadata, "add_space_prefix", add_space_prefix))
    add_bos = bool(_meta(metadata, "add_bos_token", add_bos))
    add_eos = bool(_meta(metadata, "add_eos_token", False))

    eog = _detect_eog(token_to_id, attrs, ids)
    special = [i for i, a in enumerate(attrs) if a & (CONTROL | USER_DEFINED | UNKNOWN)]
    special.sort(key=lambda i: -len(tokens[i].encode("utf-8")))
    _model_specific_attrs(metadata, token_to_id, attrs, special)
    return cls(model=model, tokens=tokens, attrs=attrs, special_ids=ids, add_bos=add_bos, add_eos=add_eos,
               add_space_prefix=add_space_prefix, clean_spaces=clean_spaces, eog_ids=frozenset(eog),
               encoder=encoder, special_tokens=special)


def _token_list(metadata: dict) -> list[str]:
    tokens = _meta(metadata, "tokens")
    if tokens is None or isinstance(tokens, (str, bytes)) or len(tokens) == 0:
        raise GGQError("tokenizer: no tokenizer.ggml.tokens in the model")
    out = []
    for i, t in enumerate(tokens):
        if isinstance(t, bytes):
            t = t.decode("utf-8", "replace")
        if not isinstance(t, str):
            raise GGQError("tokenizer: tokenizer.ggml.tokens is not a list of strings")
        out.append(t or f"[EMPTY_{i}]")
    return out


def _token_attrs(metadata: dict, n: int) -> list[int]:
    types = _meta(metadata, "token_type")
    if types is None:
        return [NORMAL] * n
    types = np.asarray(types).reshape(-1)
    if types.size < n or not np.issubdtype(types.dtype, np.integer):
        raise GGQError("tokenizer: tokenizer.ggml.token_type is shorter than the vocabulary or not integers")
    return [_TYPE_TO_ATTR.get(int(t), 0) for t in types[:n].tolist()]


def _scores(metadata: dict, n: int) -> list[float]:
    scores = _meta(metadata, "scores")
    if scores is None:
        return [0.0] * n
    scores = np.asarray(scores).reshape(-1)
    if scores.size < n or not np.issubdtype(scores.dtype, np.number):
        raise GGQError("tokenizer: tokenizer.ggml.scores is shorter than the vocabulary or not numbers")
    return scores[:n].astype(np.float32).astype(np.float64).tolist()


def _special_ids(metadata: dict, model: str, n: int) -> dict[str, int]:
    """Model defaults, dropped when out of range; GGUF keys override when in range."""
    ids = {k: v for k, v in _DEFAULT_IDS[model].items() if 0 <= v < n}
    for name, key in _SPECIAL_ID_KEYS.items():
        value = _meta(metadata, key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < n:
            ids[name] = int(value)
    return ids


def _detect_eog(token_to_id: dict[str, int], attrs: list[int], ids: dict[str, int]) -> set[int]:
    """End-of-turn / FIM tokens found by their text (and marked CONTROL), then the EOG set."""
    def find_first(texts) -> int | None:
        for text in texts:
            if text in token_to_id:
                attrs[token_to_id[text]] |= CONTROL
                return token_to_id[text]
        return None

    for name, texts in (("eot", _EOT_TEXTS), ("eom", ("<|eom_id|>",)), *_FIM_EOG_TEXTS.items()):
        if name not in ids:
            found = find_first(texts)
            if found is not None:
                ids[name] = found
    for text in _FIM_CONTROL_TEXTS:
        if text in token_to_id:
            attrs[token_to_id[text]] |= CONTROL

    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if k in ids}
    for text in _EOG_TEXTS:
        if text in token_to_id:
            eog.add(token_to_id[text])
            attrs[token_to_id[text]] |= CONTROL
    for text in _ALWAYS_RENDERED:
        if text in token_to_id:
            attrs[token_to_id[text]] = USER_DEFINED
    eog.update(ids[k] for k in ("eos", "eot", "eom") if k in ids)
    _eog_exceptions(token_to_id, attrs, eog)
    return eog


def _eog_exceptions(token_to_id: dict[str, int], attrs: list[int], eog: set[int]) -> None:
    """o200k_harmony / solar-open: "<|end|>" is not EOG there; gemma4 / plamo: "</s>" is a normal token."""
    texts = {t for t, i in token_to_id.items() if i in eog}
    end_id = token_to_id.get("<|end|>")
    has_call = "<|call|>" in texts or "<|calls|>" in texts
    if end_id in eog and has_call and ("<|return|>" in texts or "<|flush|>" in texts):
        eog.discard(end_id)
        attrs[end_id] = USER_DEFINED
    s_id = token_to_id.get("</s>")
    if s_id in eog and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        eog.discard(s_id)
        attrs[s_id] = NORMAL


def _model_specific_attrs(metadata: dict, token_to_id: dict[str, int], attrs: list[int], special: list[int]):
    """Phi-3 (by general.name): special tokens swallow the whitespace after them, except <unk>, <s>,
    <|endoftext|>."""
    name = str(metadata.get("general.name", "")).lower()
    if "phi-3" in name or "phi3" in name:
        for i in special:
            attrs[i] |= RSTRIP
        if "</s>" in token_to_id:
            attrs[token_to_id["</s>"]] |= RSTRIP
        for text in ("<unk>", "<s>", "<|endoftext|>"):
            if text in token_to_id:
                attrs[token_to_id[text]] &= ~RSTRIP
