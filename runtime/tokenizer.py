"""Tokenizer built from GGUF metadata alone, with llama.cpp's semantics (src/llama-vocab.cpp):
llama_tokenize (special-token partition, BOS/EOS), llama_token_to_piece, llama_detokenize (clean_spaces)
and the end-of-generation token set. Models: "llama" (SentencePiece) and "gpt2" (byte-level BPE).
"""
from __future__ import annotations

from dataclasses import dataclass, field


from ggq.errors import GGQError

from .bpe import BPE
from .pretokenize import UNICODE_TO_BYTE, pre_tokenizer
from .spm import SPM

# llama_token_attr bits (include/llama.h) and the GGUF token_type -> attr table.
UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 2, 4, 8, 16, 32
LSTRIP, RSTRIP = 128, 256
_TYPE_TO_ATTR = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}

# Token texts llama.cpp treats as end-of-turn / end-of-generation (llama_vocab::impl::load).
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOG_TEXTS = frozenset(("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                        "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>",
                        "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>",
                        "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["))
_FIM_EOG_TEXTS = {"fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
                  "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
                  "fim_sep": ("<|file_sep|>",)}
_SPECIAL_ID_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "eot": "eot_token_id", "eom": "eom_token_id",
                    "unk": "unknown_token_id", "pad": "padding_token_id", "fim_pad": "fim_pad_token_id",
                    "fim_rep": "fim_rep_token_id", "fim_sep": "fim_sep_token_id"}
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11}}


def _meta(metadata: dict, key: str, default=None):
    return metadata.get("tokenizer.ggml." + key, default)


@dataclass
class Tokenizer:
    """Vocabulary state; build with Tokenizer.from_metadata(gguf_metadata)."""
    model: str
    tokens: list[str]
    attrs: list[int]
    special_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    eog_ids: frozenset[int]
    encoder: SPM | BPE = field(repr=False)
    special_tokens: list[int] = field(repr=False)   # partition order: longest text first

    @classmethod
    def from_metadata(cls, metadata: dict) -> Tokenizer:
        return _build(metadata)

    # -- properties -------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @property
    def bos_id(self) -> int | None:
        return self.special_ids.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_ids.get("eos")

    @property
    def eot_id(self) -> int | None:
        return self.special_ids.get("eot")

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    def is_control(self, token_id: int) -> bool:
        return bool(self.attrs[token_id] & CONTROL)

    # -- encode -----------------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """llama_tokenize: special tokens split out first, then SPM or BPE on each text fragment."""
        fragments = self._partition(text, parse_special) if text else []
        out: list[int] = []
        if add_special and self.add_bos:
            _require(self.bos_id, "BOS")
            out.append(self.bos_id)
        prev_special = True   # SPM: a text fragment after a special token (or at the start) gets a space
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
                continue
            if self.model == "llama":
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(self.encoder.encode(frag.replace(" ", "\u2581")))
            else:
                out.extend(self.encoder.encode(frag))
            prev_special = False
        if add_special and self.add_eos:
            _require(self.eos_id, "EOS")
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """tokenizer_st_partition: for each special token (longest first), cut it out of every text
        fragment, honouring its lstrip/rstrip attributes; control/unknown tokens only with parse_special."""
        frags: list[str | int] = [text]
        for tid in self.special_tokens:
            attr = self.attrs[tid]
            if not parse_special and attr & (CONTROL | UNKNOWN):
                continue
            needle = self.tokens[tid]
            if not any(isinstance(f, str) and needle in f for f in frags):
                continue
            new: list[str | int] = []
            for frag in frags:
                if isinstance(frag, int) or needle not in frag:
                    new.append(frag)
                    continue
                new.extend(_cut(frag, needle, tid, attr))
            frags = new
        return frags

    # -- decode -----------------------------------------------------------------------------------
    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """llama_token_to_piece (lstrip=0): the bytes a token stands for; control/unknown tokens are
        empty unless `special`."""
        if not 0 <= token_id < len(self.tokens):
            raise GGQError(f"token id {token_id} out of range (n_vocab {len(self.tokens)})")
        attr = self.attrs[token_id]
        if not special and attr & (UNKNOWN | CONTROL):
            return b""
        text = self.tokens[token_id]
        if attr & (UNKNOWN | CONTROL | USER_DEFINED):
            return text.encode("utf-8")
        if attr & NORMAL:
            if self.model == "llama":
                return text.replace("\u2581", " ").encode("utf-8")
            return _byte_decode(text)
        if attr & BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def decode_bytes(self, ids, special: bool = False, remove_special: bool = False) -> bytes:
        """llama_detokenize: concatenated pieces, the SPM leading space dropped, clean_spaces applied."""
        ids = [int(i) for i in ids]
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parts = []
        for tid in ids:
            piece = self.token_to_piece(tid, special)
            if remove_space and piece.startswith(b" "):
                piece = piece[1:]
            remove_space = False
            parts.append(piece)
        text = b"".join(parts)
        return _clean_spaces(text) if self.clean_spaces else text

    def decode(self, ids, special: bool = False, remove_special: bool = False) -> str:
        return self.decode_bytes(ids, special, remove_special).decode("utf-8", "replace")


class StreamDecoder:
    """Turns generated ids into text pieces, holding back bytes of an unfinished UTF-8 sequence."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self.tokenizer = tokenizer
        self.special = special
        self._pending = b""

    def push(self, token_id: int) -> str:
        data = self._pending + self.tokenizer.token_to_piece(token_id, self.special)
        keep = _incomplete_utf8_tail(data)
        self._pending = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep].decode("utf-8", "replace")

    def flush(self) -> str:
        data, self._pending = self._pending, b""
        return data.decode("utf-8", "replace")


def _incomplete_utf8_tail(data: bytes) -> int:
    """How many trailing bytes form the start of a UTF-8 sequence that is not complete yet."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue   # continuation byte: look further back for the lead byte
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return back if need > back else 0
    return 0


def _cut(frag: str, needle: str, tid: int, attr: int) -> list[str | int]:
    out: list[str | int] = []
    pos = 0
    while True:
        hit = frag.find(needle, pos)
        if hit < 0:
            break
        left = frag[pos:hit]
        if attr & LSTRIP:
            left = left.rstrip(" \t\n\v\f\r")
        if left:
            out.append(left)
        out.append(tid)
        pos = hit + len(needle)
        if attr & RSTRIP:
            while pos < len(frag) and frag[pos] in " \t\n\v\f\r":
                pos += 1
    if pos < len(frag):
        out.append(frag[pos:])
    return out


def _byte_decode(text: str) -> bytes:
    """llama_decode_text: GPT-2 byte alphabet back to bytes (unmappable characters flagged like llama.cpp)."""
    try:
        return bytes(UNICODE_TO_BYTE[ch] for ch in text)
    except KeyError:
        out = bytearray()
        for ch in text:
            b = UNICODE_TO_BYTE.get(ch)
            if b is not None:
                out.append(b)
            else:
                out += b"[UNK_BYTE_0x" + ch.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
        return bytes(out)


def _clean_spaces(text: bytes) -> bytes:
    """llama_detokenize's three clean_up_tokenization_spaces passes, done on a byte buffer in place."""
    buf = bytearray(text)
    total = len(buf)
    # pass 1: " ?", " !", " .", " ,"  -> drop the space
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = buf[i]
        if buf[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        buf[total] = x
        total += 1
    # pass 2: " ' " -> "'"
    n, total = total, 1 if total else 0
    i = 1
    while i < n:
        x = buf[i]
        if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
            total -= 1
            i += 1
            buf[i] = 0
        buf[total] = x
        total += 1
        i += 1
    # pass 3: " 's", " 'm", " 're", " 've" -> drop the space
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = buf[i]
        if buf[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = buf[i + 1]
            if x1 in b"sm":
                total -= 1
            elif x1 not in b"td" and i + 2 < n and (x1, buf[i + 2]) in ((0x72, 0x65), (0x76, 0x65)):
                total -= 1
        buf[total] = x
        total += 1
    return bytes(buf[:total])


def _require(token_id: int | None, what: str) -> None:
    if token_id is None:
        raise GGQError(f"tokenizer: model asks for a {what} token but has none")


def _build(metadata: dict) -> Tokenizer:
    from .vocab_load import build_tokenizer
    return build_tokenizer(metadata, Tokenizer)
