"""Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), following llama.cpp's llm_tokenizer_bpe_session.

Each pre-tokenized word is spelled in GPT-2's byte alphabet, split into characters, and the adjacent pair
with the lowest merge rank is merged (leftmost first on ties) until no ranked pair is left. llama.cpp does
this with a priority queue of (rank, left index); popping its minimum is the same as scanning for the
leftmost lowest-ranked adjacent pair, which is what is done here on the (short) words.
"""
from __future__ import annotations

from .pretokenize import PreTokenizer, byte_encode, split_words


class BPE:
    """State: merge ranks, token lookup and a cache of word -> ids (words repeat a lot in real text)."""

    def __init__(self, token_to_id: dict[str, int], merges: list[str], pre: PreTokenizer):
        self.token_to_id = token_to_id
        self.pre = pre
        self.ranks = _merge_ranks(merges)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for word in split_words(text, self.pre):
            ids = self._cache.get(word)
            if ids is None:
                ids = self._encode_word(byte_encode(word))
                if len(self._cache) < 200_000:
                    self._cache[word] = ids
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> list[int]:
        if self.pre.ignore_merges and word in self.token_to_id:
            return [self.token_to_id[word]]
        parts = self._merge(list(word))
        out = []
        for part in parts:
            tid = self.token_to_id.get(part)
            if tid is not None:
                out.append(tid)
                continue
            # Not a token: llama.cpp looks up each UTF-8 byte alone; only ASCII bytes can be tokens.
            for b in part.encode("utf-8"):
                tid = self.token_to_id.get(chr(b)) if b < 0x80 else None
                if tid is not None:
                    out.append(tid)
        return out

    def _merge(self, parts: list[str]) -> list[str]:
        ranks = self.ranks
        while len(parts) > 1:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_i < 0:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return parts


def _merge_ranks(merges: list[str]) -> dict[tuple[str, str], int]:
    """(left, right) -> rank. llama.cpp splits at the first space after position 0 (a merge may start
    with a space character) and keeps the first rank of a duplicated pair."""
    if any(m.startswith(" ") for m in merges):
        pairs = [(m[:m.find(" ", 1)], m[m.find(" ", 1) + 1:]) if m.find(" ", 1) >= 0 else ("", "") for m in merges]
    else:
        pairs = [tuple(m.split(" ", 1)) if " " in m else ("", "") for m in merges]
    # Built from the end so that the first occurrence of a pair is the one that stays.
    return dict(zip(reversed(pairs), range(len(pairs) - 1, -1, -1)))
