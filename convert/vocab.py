"""Tokenizer metadata for GGUF, read from a Hugging Face model directory without transformers.

Produces the `tokenizer.*` keys llama.cpp's convert_hf_to_gguf.py writes (same values, same GGUF types):
  - BPE (`tokenizer.json` with a BPE model): tokenizer.ggml.model = "gpt2", the pre-tokenizer name llama.cpp
    uses (`tokenizer.ggml.pre`), tokens, token types, merges;
  - SentencePiece (`tokenizer.model`): tokenizer.ggml.model = "llama", tokens, scores, token types;
  - special-token ids, add-bos/eos flags, the chat template.
llama.cpp names the pre-tokenizer by hashing a tokenization made with transformers; we recognise the
pre-tokenizer from its description in tokenizer.json instead (table PRE_TOKENIZERS below).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ggq.errors import GGQError

# gguf.TokenType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")

_LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")

# llama.cpp pre-tokenizer name -> the tokenizer.json pre_tokenizer steps that describe it
# (each step: (type, {field: value}) that must match; a Split step is named by its regex)
PRE_TOKENIZERS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "gpt-2": [("ByteLevel", {"use_regex": True})],
    "smollm": [("Digits", {"individual_digits": True}), ("ByteLevel", {"use_regex": True})],
    "llama-bpe": [("Split", {"regex": _LLAMA3_SPLIT}), ("ByteLevel", {"use_regex": False})],
    "qwen2": [("Split", {"regex": _QWEN2_SPLIT}), ("ByteLevel", {"use_regex": False})],
}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GGQError(f"cannot read JSON: {e}", path) from None
    if not isinstance(data, dict):
        raise GGQError("expected a JSON object", path)
    return data


def _steps(pre: dict | None) -> list[tuple[str, dict[str, Any]]]:
    """Flatten a tokenizer.json pre_tokenizer into (type, fields) steps."""
    if not isinstance(pre, dict):
        return []
    if pre.get("type") == "Sequence":
        return [s for p in pre.get("pretokenizers") or [] for s in _steps(p)]
    fields = dict(pre)
    if pre.get("type") == "Split":
        pattern = pre.get("pattern") or {}
        fields["regex"] = pattern.get("Regex", pattern.get("String"))
    return [(str(pre.get("type")), fields)]


def pre_tokenizer_name(tokenizer_json: dict, path: Path) -> str:
    """The name llama.cpp gives this BPE pre-tokenizer (tokenizer.ggml.pre)."""
    steps = _steps(tokenizer_json.get("pre_tokenizer"))
    for name, expected in PRE_TOKENIZERS.items():
        if len(steps) == len(expected) and all(
                kind == want_kind and all(fields.get(k, True if k == "use_regex" else None) == v
                                          for k, v in want.items())
                for (kind, fields), (want_kind, want) in zip(steps, expected)):
            return name
    described = ", ".join(kind for kind, _ in steps) or "none"
    raise GGQError(f"unrecognised BPE pre-tokenizer ({described}); known: {', '.join(PRE_TOKENIZERS)}", path)


def looks_special(token: str) -> bool:
    """Added tokens some models forget to mark special (same list as llama.cpp's converter)."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _bpe_merges(model: dict) -> list[str]:
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):  # transformers >= 4.45: pairs; spaces inside are shifted by 256
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                for pair in merges]
    return [str(m) for m in merges]


def bpe_vocab(model_dir: Path, tok: dict, vocab_size: int | None) -> dict[str, Any]:
    model = tok.get("model") or {}
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {a["content"]: a for a in tok.get("added_tokens") or [] if isinstance(a, dict) and "content" in a}
    for content, a in added.items():
        vocab[content] = int(a["id"])
    n = vocab_size or (max(vocab.values()) + 1 if vocab else 0)
    if vocab and max(vocab.values()) >= n:
        raise GGQError(f"token id {max(vocab.values())} is outside vocab_size {n}", model_dir / "tokenizer.json")
    tokens, types = [f"[PAD{i}]" for i in range(n)], [UNUSED] * n
    for text, i in vocab.items():
        tokens[i] = text
        if text in added:
            special = added[text].get("special") or looks_special(text)
            types[i] = CONTROL if special else USER_DEFINED
            if not special:
                tokens[i] = text.replace("\u2581", " ")
        else:
            types[i] = NORMAL
    return {"tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": pre_tokenizer_name(tok, model_dir / "tokenizer.json"),
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": _bpe_merges(model)}


def spm_vocab(model_dir: Path, vocab_size: int | None, tok_config: dict) -> dict[str, Any]:
    from sentencepiece import SentencePieceProcessor

    path = model_dir / "tokenizer.model"
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise GGQError(f"not a SentencePiece model: {e}", path) from None
    n = vocab_size or sp.vocab_size()
    tokens, scores, types = [f"[PAD{i}]" for i in range(n)], [-10000.0] * n, [UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        tokens[i], scores[i] = sp.IdToPiece(i), float(sp.GetScore(i))
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else
                    UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)
    added_file = model_dir / "added_tokens.json"
    extra = _read_json(added_file) if added_file.is_file() else {}
    for text, i in extra.items():
        if isinstance(i, int) and 0 <= i < n:
            tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    for key, data in (tok_config.get("added_tokens_decoder") or {}).items():
        i, text = int(key), str(data.get("content", ""))
        if 0 <= i < n:
            special = data.get("special") or looks_special(text)
            tokens[i] = text if special else text.replace("\u2581", " ")
            scores[i], types[i] = -1000.0, CONTROL if special else USER_DEFINED
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types}


def _post_processor_add_flags(tok: dict) -> dict[str, bool]:
    """add_bos/add_eos as the tokenizer.json post-processor implies (simple templates only, as llama.cpp)."""
    flags: dict[str, bool] = {}
    post = tok.get("post_processor") or {}
    for proc in post.get("processors", [post]) if isinstance(post, dict) else []:
        kind = proc.get("type")
        if kind == "ByteLevel":
            flags.setdefault("bos", False)
            flags.setdefault("eos", False)
        elif kind == "TemplateProcessing":
            single = proc.get("single") or []
            if len(single) > 1:
                flags["bos"] = "SpecialToken" in single[0]
                flags["eos"] = "SpecialToken" in single[-1]
    return flags


def _token_content(entry: Any) -> str | None:
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def special_metadata(model_dir: Path, config: dict, tok: dict, tok_config: dict, n_vocab: int) -> dict[str, Any]:
    """Special-token ids, add-bos/eos flags and the chat template (llama.cpp's SpecialVocab rules)."""
    ids: dict[str, int] = {}
    added_ids = {a.get("content"): a.get("id") for a in tok.get("added_tokens") or [] if isinstance(a, dict)}
    for typ in SPECIAL_TYPES:  # tokenizer_config first, then config.json fills the gaps
        tid = added_ids.get(_token_content(tok_config.get(f"{typ}_token")))
        if not isinstance(tid, int):
            tid = config.get(f"{typ}_token_id")
        if isinstance(tid, int) and 0 <= tid < n_vocab:
            ids[typ] = tid
    add = _post_processor_add_flags(tok) if tok else {}
    for typ in SPECIAL_TYPES:
        if isinstance(tok_config.get(f"add_{typ}_token"), bool):
            add.setdefault(typ, tok_config[f"add_{typ}_token"])
    meta: dict[str, Any] = {f"tokenizer.ggml.{'unknown' if t == 'unk' else 'padding' if t == 'pad' else t}"
                            f"_token_id": i for t, i in ids.items()}
    meta.update({f"tokenizer.ggml.add_{t}_token": v for t, v in add.items()})
    template = chat_template(model_dir, tok_config)
    if template is not None:
        meta["tokenizer.chat_template"] = template
    return meta


def chat_template(model_dir: Path, tok_config: dict) -> str | None:
    """tokenizer_config.json's chat_template, else chat_template.jinja, else chat_template.json."""
    template = tok_config.get("chat_template")
    if template is None and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    elif template is None and (model_dir / "chat_template.json").is_file():
        template = _read_json(model_dir / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # named templates: llama.cpp keeps the default one under this key
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def vocab_metadata(model_dir: Path, config: dict, prefer_spm: bool = True) -> dict[str, Any]:
    """Every tokenizer.* key for the model in `model_dir` (BPE from tokenizer.json or SentencePiece)."""
    model_dir = Path(model_dir)
    tok_path, spm_path = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    tok = _read_json(tok_path) if tok_path.is_file() else {}
    tok_config = _read_json(model_dir / "tokenizer_config.json") if (
        model_dir / "tokenizer_config.json").is_file() else {}
    vocab_size = config.get("vocab_size") if isinstance(config.get("vocab_size"), int) else None
    if spm_path.is_file() and (prefer_spm or not tok):
        meta = spm_vocab(model_dir, vocab_size, tok_config)
    elif tok and (tok.get("model") or {}).get("type") == "BPE":
        meta = bpe_vocab(model_dir, tok, vocab_size)
    elif tok:
        raise GGQError(f"unsupported tokenizer model {(tok.get('model') or {}).get('type')!r} "
                       "(supported: BPE, SentencePiece)", tok_path)
    else:
        raise GGQError("no tokenizer found (need tokenizer.json or tokenizer.model)", model_dir)
    if isinstance(tok_config.get("add_prefix_space"), bool):
        meta["tokenizer.ggml.add_space_prefix"] = tok_config["add_prefix_space"]
    meta.update(special_metadata(model_dir, config, tok, tok_config, len(meta["tokenizer.ggml.tokens"])))
    return meta
