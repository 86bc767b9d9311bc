"""ggq.runtime.tokenizer against llama.cpp.

ORACLES:
  * llama.cpp's published test vectors (models/ggml-vocab-*.gguf + .inp/.out, made for
    tests/test-tokenizer-0.cpp: add_special=false, parse_special=false), found or fetched by vocab_vectors.py;
  * tests/fixtures/vocab_golden.json, made by tests/fixtures/make_vocab_golden.py from llama.cpp itself:
    llama_detokenize of every vector, llama_token_to_piece of every token (as SHA-256), the EOG set, and
    llama-tokenize output for a few texts on the shared SmolLM2 model.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from ggq.errors import GGQError
from ggq.runtime.tokenizer import StreamDecoder, Tokenizer

from vocab_vectors import metadata, read_vectors, vocab_dir

VOCABS = ("llama-spm", "llama-bpe", "qwen2", "gpt-2", "phi-3")
GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "vocab_golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vocab_files() -> Path:
    return vocab_dir(VOCABS)


@pytest.fixture(scope="module")
def tokenizers(vocab_files) -> dict[str, Tokenizer]:
    return {n: Tokenizer.from_metadata(metadata(vocab_files / f"ggml-vocab-{n}.gguf")) for n in VOCABS}


@pytest.mark.parametrize("name", VOCABS)
def test_published_vectors_encode(name, vocab_files, tokenizers):
    tok = tokenizers[name]
    vectors = read_vectors(vocab_files, name)
    assert len(vectors) > 30
    bad = [(text, ids, tok.encode(text, add_special=False)) for text, ids in vectors
           if tok.encode(text, add_special=False) != ids]
    assert not bad, bad[:3]


@pytest.mark.parametrize("name", VOCABS)
def test_published_vectors_decode(name, vocab_files, tokenizers):
    """Decoding the expected ids gives llama_detokenize's bytes (special=false and special=true)."""
    tok = tokenizers[name]
    vectors = read_vectors(vocab_files, name)
    expected = GOLDEN["vocabs"][name]["detokenize_hex"]
    assert len(expected) == len(vectors)
    for (_, ids), (plain, special) in zip(vectors, expected):
        assert tok.decode_bytes(ids).hex() == plain
        assert tok.decode_bytes(ids, special=True).hex() == special


@pytest.mark.parametrize("name", VOCABS)
def test_every_token_piece(name, tokenizers):
    tok = tokenizers[name]
    golden = GOLDEN["vocabs"][name]
    assert tok.n_vocab == golden["n_vocab"]
    for k, special in enumerate((False, True)):
        lines = "\n".join(tok.token_to_piece(i, special).hex() for i in range(tok.n_vocab))
        assert hashlib.sha256(lines.encode()).hexdigest() == golden["pieces_sha256"][k], f"special={special}"


@pytest.mark.parametrize("name", VOCABS)
def test_special_ids_and_eog(name, tokenizers):
    tok = tokenizers[name]
    golden = GOLDEN["vocabs"][name]
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (golden["bos"], golden["eos"], golden["add_bos"],
                                                                  golden["add_eos"])
    assert sorted(tok.eog_ids) == golden["eog"]
    assert [i for i in range(tok.n_vocab) if tok.is_eog(i)] == golden["eog"]


def test_add_special_spm(tokenizers):
    """SPM adds BOS (add_bos_token = true) and the dummy-prefix space; cf. the llama-spm vectors."""
    tok = tokenizers["llama-spm"]
    assert tok.encode("Hello world") == [1, *tok.encode("Hello world", add_special=False)]
    assert tok.encode("") == [1] and tok.encode("", add_special=False) == []


def test_parse_special_spm(tokenizers):
    """'</s>' is CONTROL: only split out with parse_special; the following text gets a prefix space (llama.cpp)."""
    tok = tokenizers["llama-spm"]
    assert 2 not in tok.encode("a</s>b", add_special=False)
    ids = tok.encode("a</s>b", add_special=False, parse_special=True)
    assert ids == [*tok.encode("a", add_special=False), 2, *tok.encode("b", add_special=False)]


@pytest.fixture(scope="module")
def smollm(q4_1_gguf) -> Tokenizer:
    return Tokenizer.from_metadata(metadata(q4_1_gguf))


@pytest.mark.parametrize("case", GOLDEN["smollm2"], ids=lambda c: f"{c['text'][:12]!r}-{c['parse_special']}")
def test_smollm2_against_llama_tokenize(case, smollm):
    assert smollm.encode(case["text"], case["add_special"], case["parse_special"]) == case["ids"]


def test_smollm2_eog_and_roundtrip(smollm):
    """SmolLM2 (metadata: eos_token_id = 2 = <|im_end|>): <|endoftext|> (0) also ends generation by its
    text in llama.cpp, <|im_start|> (1) does not; text round-trips since pre = smollm has clean_spaces off."""
    assert smollm.eos_id == 2 and smollm.bos_id == 1 and not smollm.add_bos
    assert smollm.is_eog(0) and smollm.is_eog(2) and not smollm.is_eog(1)
    text = GOLDEN["smollm2"][1]["text"]
    assert smollm.decode(smollm.encode(text, add_special=False)) == text
    assert smollm.decode([1, 4093], special=True) == "<|im_start|>user" and smollm.decode([1, 4093]) == "user"


def test_stream_decoder_keeps_utf8_whole(tokenizers):
    """Byte-level tokens of an emoji arrive one by one: no piece may hold half a character."""
    tok = tokenizers["gpt-2"]
    text = "a😀b東京"
    ids = tok.encode(text, add_special=False)
    stream = StreamDecoder(tok)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)
    assert len(ids) > len(text)   # the emoji really is split over several tokens


def test_speed_50kb(smollm, tokenizers):
    """The perplexity tool tokenizes ~50 KB: must be well under 2 s per tokenizer (fresh caches)."""
    text = ("The quick brown fox, 1234 times; naïve café — \"quoted\" (it's) 東京.\n" * 800)[:50_000]
    for tok in (Tokenizer.from_metadata(metadata(smollm_path())), tokenizers["llama-spm"]):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special=False)
        assert time.perf_counter() - t0 < 2.0 and len(ids) > 5000
        assert tok.decode(ids).endswith(text[-20:])


def smollm_path() -> Path:
    from conftest import Q4_1_GGUF
    return Q4_1_GGUF


def test_bad_metadata():
    with pytest.raises(GGQError, match="unsupported tokenizer"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(GGQError, match="pre-tokenizer"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "nope",
                                 "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []})
    with pytest.raises(GGQError, match="tokens"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "llama"})
