"""Perplexity as llama.cpp's llama-perplexity computes it (tools/perplexity/perplexity.cpp).

The whole text is tokenized once (BOS added if the vocabulary adds one) and cut into chunks of n_ctx
tokens. Each chunk runs from an empty context, with its first token replaced by BOS when the vocabulary
adds BOS; only the second half is scored (positions first = n_ctx/2 .. n_ctx-2 predict the next token),
so every scored token sees at least n_ctx/2 tokens of context. PPL = exp(mean negative log-likelihood).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.model import Transformer
from ggq.runtime.tokenizer import Tokenizer


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    stderr: float       # standard error of the PPL estimate (llama.cpp's "+/-")
    n_chunks: int
    n_scored: int       # tokens scored


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] per row, in float64."""
    z = logits.astype(np.float64)
    top = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return log_norm - z[np.arange(len(targets)), targets]


def perplexity(tf: Transformer, tokenizer: Tokenizer, text: str, n_ctx: int = 512, n_chunks: int = -1,
               progress: Callable[[str], None] | None = None) -> PerplexityResult:
    """Perplexity of `text` in chunks of n_ctx tokens (all chunks, or the first n_chunks)."""
    if n_ctx < 4 or n_ctx > tf.ctx_size:
        raise GGQError(f"perplexity context {n_ctx} must be between 4 and the model context {tf.ctx_size}")
    tokens = np.asarray(tokenizer.encode(text, add_special=True, parse_special=False), dtype=np.int64)
    if len(tokens) < 2 * n_ctx:
        raise GGQError(f"need at least {2 * n_ctx} tokens for a context of {n_ctx}; "
                       f"the text has {len(tokens)}")
    n_max = len(tokens) // n_ctx
    n = n_max if n_chunks is None or n_chunks < 0 else min(n_chunks, n_max)
    add_bos = tokenizer.add_bos and tokenizer.bos_id is not None
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    for c in range(n):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if add_bos:
            chunk[0] = tokenizer.bos_id
        tf.cache_tokens = []
        logits = tf.forward(chunk, 0, all_logits=True)
        tf.cache_tokens = chunk.tolist()
        values = token_nll(logits[first:n_ctx - 1], tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        nll += values.sum()
        nll2 += (values ** 2).sum()
        count += len(values)
        if progress:
            progress(f"[{c + 1}]{math.exp(nll / count):.4f},")
    mean = nll / count
    var = nll2 / count - mean * mean
    stderr = math.sqrt(var / (count - 1)) * math.exp(mean) if var > 0 and count > 1 else 0.0
    return PerplexityResult(ppl=math.exp(mean), stderr=stderr, n_chunks=n, n_scored=count)
