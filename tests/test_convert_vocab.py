"""convert/vocab.py: tokenizer metadata from a Hugging Face directory.

Oracles: llama.cpp's converter (the shared Q4_1 GGUF was written by it from the original SmolLM2 checkpoint,
whose tokenizer files the test data rebuilds) and the sentencepiece library itself for SPM vocabularies.
"""
from __future__ import annotations

import json
import shutil

import gguf
import pytest

from ggq.convert.vocab import CONTROL, NORMAL, USER_DEFINED, pre_tokenizer_name, vocab_metadata
from ggq.errors import GGQError


def test_bpe_vocab_matches_llama_cpp_converter(shared_model, q4_1_gguf):
    config = json.loads((shared_model / "config.json").read_text())
    ours = vocab_metadata(shared_model, config)
    theirs = gguf.GGUFReader(q4_1_gguf).fields
    for key, value in ours.items():
        if key == "tokenizer.ggml.add_eos_token":
            continue  # written by newer converters only (the Q4_1 file predates it)
        assert key in theirs, key
        assert theirs[key].contents() == value, key
    written = {k for k in theirs if k.startswith("tokenizer.")}
    assert written <= set(ours)


@pytest.mark.parametrize("name, pre", [
    ("gpt-2", {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}),
    ("smollm", {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                      {"type": "ByteLevel", "use_regex": True}]}),
])
def test_pre_tokenizer_names(tmp_path, name, pre):
    assert pre_tokenizer_name({"pre_tokenizer": pre}, tmp_path) == name


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(GGQError, match="unrecognised BPE pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}}, tmp_path)


def test_added_tokens_types_and_template_file(tmp_path, shared_model):
    for f in ("tokenizer.json", "config.json"):
        shutil.copy(shared_model / f, tmp_path / f)
    tok = json.loads((tmp_path / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": 49151, "content": "hello\u2581world", "special": False})
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    meta = vocab_metadata(tmp_path, json.loads((tmp_path / "config.json").read_text()))
    assert meta["tokenizer.ggml.token_type"][1] == CONTROL        # <|im_start|>
    assert meta["tokenizer.ggml.token_type"][49151] == USER_DEFINED
    assert meta["tokenizer.ggml.tokens"][49151] == "hello world"  # user-defined spaces pre-normalized
    assert meta["tokenizer.ggml.token_type"][300] == NORMAL
    assert meta["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"


def test_sentencepiece_vocab(tmp_path):
    import sentencepiece as spm
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "tokenizer"), vocab_size=320,
                                   byte_fallback=True, model_type="bpe")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "add_bos_token": True}))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    meta = vocab_metadata(tmp_path, {"vocab_size": sp.vocab_size() + 2, "bos_token_id": 1, "eos_token_id": 2})
    assert meta["tokenizer.ggml.model"] == "llama"
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[:sp.vocab_size()] == [sp.IdToPiece(i) for i in range(sp.vocab_size())]
    assert tokens[-2:] == [f"[PAD{sp.vocab_size()}]", f"[PAD{sp.vocab_size() + 1}]"]
    assert meta["tokenizer.ggml.scores"][5] == pytest.approx(sp.GetScore(5))
    assert meta["tokenizer.ggml.token_type"][sp.unk_id()] == 2
    assert meta["tokenizer.ggml.token_type"][sp.PieceToId("<0x41>")] == 6
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.add_bos_token"] is True


def test_missing_tokenizer(tmp_path):
    with pytest.raises(GGQError, match="no tokenizer found"):
        vocab_metadata(tmp_path, {})
