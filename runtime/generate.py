"""The generation loop: prefill the prompt, then sample one token at a time until an end-of-generation
token, max_tokens, or a full context.

The KV cache remembers which tokens it holds (`Transformer.cache_tokens`); a new prompt that starts with
them (the next turn of a chat) only runs the tokens after the common prefix.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.model import Transformer
from ggq.runtime.sampling import Sampler
from ggq.runtime.tokenizer import StreamDecoder, Tokenizer


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefill(tf: Transformer, ids: list[int]) -> np.ndarray:
    """Logits [1, n_vocab] after `ids`, reusing the cached prefix; the cache then holds exactly `ids`."""
    if not ids:
        raise GGQError("empty prompt")
    if len(ids) >= tf.ctx_size:
        raise GGQError(f"prompt of {len(ids)} tokens does not fit the context of {tf.ctx_size}")
    keep = min(_common_prefix(tf.cache_tokens, ids), len(ids) - 1)  # the last token must run for logits
    tf.cache_tokens = list(ids[:keep])
    logits = tf.forward(ids[keep:], keep)
    tf.cache_tokens = list(ids)
    return logits


def generate_ids(tf: Transformer, tokenizer: Tokenizer, prompt_ids: list[int], max_tokens: int,
                 sampler: Sampler) -> Iterator[int]:
    """Sampled token ids after the prompt, without the end-of-generation token."""
    logits = prefill(tf, prompt_ids)
    history = list(prompt_ids)
    for _ in range(max_tokens):
        token = sampler.sample(logits[0], history)
        if tokenizer.is_eog(token):
            return
        history.append(token)
        yield token
        if len(tf.cache_tokens) >= tf.ctx_size:
            return  # context full: stop rather than forget the beginning
        logits = tf.decode(token, len(tf.cache_tokens))
        tf.cache_tokens.append(token)


def generate_text(tf: Transformer, tokenizer: Tokenizer, prompt_ids: list[int], max_tokens: int,
                  sampler: Sampler) -> Iterator[str]:
    """The generated text in pieces as they complete (never a split UTF-8 character)."""
    decoder = StreamDecoder(tokenizer)
    for token in generate_ids(tf, tokenizer, prompt_ids, max_tokens, sampler):
        piece = decoder.push(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail
