"""SentencePiece-style tokenizer (`tokenizer.ggml.model = "llama"`), following llama.cpp's
llm_tokenizer_spm_session: start from single characters, repeatedly merge the adjacent pair whose
concatenation is the highest-scoring token (ties: leftmost), then emit tokens, falling back to <0xXX>
byte tokens for characters that are not in the vocabulary.
"""
from __future__ import annotations

import heapq


class SPM:
    """State: token lookup, scores and the byte-fallback table."""

    def __init__(self, token_to_id: dict[str, int], scores: list[float], unk_id: int | None):
        self.token_to_id = token_to_id
        self.scores = scores
        self.byte_ids = [self._byte_token(b, unk_id) for b in range(256)]

    def _byte_token(self, b: int, unk_id: int | None) -> int | None:
        tid = self.token_to_id.get(f"<0x{b:02X}>")
        if tid is None and b < 0x80:
            tid = self.token_to_id.get(chr(b))
        return tid if tid is not None else unk_id

    def encode(self, text: str) -> list[int]:
        """Tokenize already-escaped text (spaces as U+2581)."""
        n = len(text)
        if n == 0:
            return []
        # Doubly linked list of symbols over the text: start offset and length in characters.
        start = list(range(n))
        length = [1] * n
        nxt = list(range(1, n)) + [-1]
        prev = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []
        lookup, scores = self.token_to_id, self.scores

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            size = length[left] + length[right]
            tid = lookup.get(text[start[left]:start[left] + size])
            if tid is not None:
                # heapq is a min-heap: negate the score; ties go to the smaller left index.
                heapq.heappush(heap, (-scores[tid], left, right, size))

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue   # stale: one side was merged since
            length[left] = size
            length[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            piece = text[start[i]:start[i] + length[i]]
            tid = lookup.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(t for t in (self.byte_ids[b] for b in piece.encode("utf-8")) if t is not None)
            i = nxt[i]
        return out
