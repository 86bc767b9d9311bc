"""KL divergence of a model's next-token distributions from a base model's, as llama-perplexity's
--kl-divergence mode computes it (tools/perplexity/perplexity.cpp).

Chunks and scored positions are perplexity.py's: chunks of n_ctx tokens from an empty context, the
first token replaced by BOS where the vocabulary adds one, positions n_ctx/2 .. n_ctx-2 scored.

The base model's log-probabilities are saved once in a *base logits file* and every test model is
compared against that file, so many test files compare at the cost of one run each. The file is
llama.cpp's own `--kl-divergence-base` format, so files move both ways between ggq and llama-perplexity:

    "_logits_"                       8 bytes
    n_ctx: uint32, n_vocab: int32, n_chunk: int32
    tokens: int32[n_chunk * n_ctx]   the text's tokens as tokenized (before any BOS substitution)
    per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them), a row of nv = 2*ceil(n_vocab/2) + 4
    uint16: two float32 (scale, min_log_prob), then n_vocab levels q with
        log p = scale * q + min_log_prob,  levels spanning [max_logit - 16, max_logit]

The statistics are llama.cpp's: per position KL = sum over base tokens with log p > -16 of
p_base (log p_base - log p_test), in float32 and double as its C code mixes them; mean, median and
percentiles of the float32 KL values; same top-1 compares the test argmax with the base argmax of the
stored levels; PPL(base) comes from the stored levels, PPL(test) from the test logits.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

from ggq.errors import GGQError
from ggq.gguf_write import _set_default_mode
from ggq.quants.ksearch import nearest_int

MAGIC = b"_logits_"
HEADER_BYTES = 8 + 4 + 4 + 4
LOG_PROB_FLOOR = np.float32(-16.0)  # llama.cpp keeps 16 nats of log-probability below the top token
f32 = np.float32


def row_width(n_vocab: int) -> int:
    """uint16 values per stored position: two float32 in front, n_vocab levels, padded to an even count."""
    return 2 * ((n_vocab + 1) // 2) + 4


def scored_per_chunk(n_ctx: int) -> int:
    return n_ctx - 1 - n_ctx // 2


@njit(cache=True)
def _max_and_log_sum_exp(logits):
    """(max logit, its first index, float32(log(sum exp(l - max)))) with the sum in double."""
    max_logit = logits[0]
    imax = 0
    for i in range(1, logits.shape[0]):
        if logits[i] > max_logit:
            max_logit = logits[i]
            imax = i
    sum_exp = 0.0
    for i in range(logits.shape[0]):
        sum_exp += np.float64(np.exp(np.float32(logits[i] - max_logit)))
    return max_logit, imax, np.float32(math.log(sum_exp))


@njit(cache=True)
def encode_log_probs(logits, targets, rows):
    """Each row of logits [n, n_vocab] into its stored uint16 row (rows [n, nv]); returns the
    negative log-likelihood of targets[i] per row (float64), as llama.cpp's base run sums it."""
    n, n_vocab = logits.shape
    nll = np.empty(n, np.float64)
    for r in range(n):
        x = logits[r]
        max_logit, _, log_sum_exp = _max_and_log_sum_exp(x)
        min_logit = x[0]
        for i in range(1, n_vocab):
            min_logit = min(min_logit, x[i])
        min_logit = max(min_logit, np.float32(max_logit - np.float32(16.0)))
        min_log_prob = np.float32(np.float32(min_logit - max_logit) - log_sum_exp)
        scale = np.float32(np.float32(max_logit - min_logit) / np.float32(65535.0))
        head = rows[r, :4].view(np.float32)
        head[0] = scale
        head[1] = min_log_prob
        levels = rows[r, 4:4 + n_vocab]
        if scale != 0:
            inv_scale = np.float32(np.float32(1.0) / scale)
            for i in range(n_vocab):
                levels[i] = nearest_int(np.float32(inv_scale * np.float32(x[i] - min_logit))) if x[i] > min_logit else 0
        else:
            levels[:] = 0
        nll[r] = np.float32(np.float32(max_logit + log_sum_exp) - x[targets[r]])
    return nll


@njit(cache=True)
def compare_rows(logits, rows, targets, kld, nll, nll_base, same_top):
    """Per row: KL(base || test) (float32, as llama.cpp stores it), test and base NLL (float32),
    whether the two argmaxes agree."""
    n, n_vocab = logits.shape
    for r in range(n):
        x = logits[r]
        max_logit, imax, log_sum_exp = _max_and_log_sum_exp(x)
        head = rows[r, :4].view(np.float32)
        scale, min_log_prob = head[0], head[1]
        levels = rows[r, 4:4 + n_vocab]
        nll[r] = np.float32(np.float32(max_logit + log_sum_exp) - x[targets[r]])
        nll_base[r] = -np.float32(np.float32(scale * np.float32(levels[targets[r]])) + min_log_prob)
        shift = np.float32(max_logit + log_sum_exp)
        total = 0.0
        imax_base = 0
        best = np.float32(0.0)
        for i in range(n_vocab):
            p_log_base = np.float32(np.float32(scale * np.float32(levels[i])) + min_log_prob)
            if i == 0 or p_log_base > best:
                best = p_log_base
                imax_base = i
            if p_log_base > np.float32(-16.0):
                p_base = np.exp(p_log_base)
                total += np.float64(np.float32(p_base * np.float32(np.float32(p_log_base - x[i]) + shift)))
        kld[r] = np.float32(total)
        same_top[r] = imax == imax_base


@dataclass(frozen=True)
class BaseLogits:
    """A base logits file, memory-mapped: tokens [n_chunk * n_ctx], rows [n_chunk, scored, nv]."""
    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray
    rows: np.ndarray


def read_base_logits(path) -> BaseLogits:
    """Open a base logits file (ggq's or llama-perplexity --kl-divergence-base's) and check its size."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise GGQError(f"cannot read base logits: {getattr(e, 'strerror', None) or e}", path) from None
    if data.size < HEADER_BYTES or bytes(data[:8]) != MAGIC:
        raise GGQError("not a base logits file (no '_logits_' header)", path)
    n_ctx, n_vocab, n_chunk = (int(v) for v in data[8:HEADER_BYTES].view(np.int32))
    if n_ctx < 4 or n_vocab <= 0 or n_chunk <= 0:
        raise GGQError(f"base logits header is invalid (n_ctx {n_ctx}, n_vocab {n_vocab}, chunks {n_chunk})", path)
    nv, scored = row_width(n_vocab), scored_per_chunk(n_ctx)
    tokens_end = HEADER_BYTES + 4 * n_chunk * n_ctx
    expected = tokens_end + 2 * n_chunk * scored * nv
    if data.size != expected:
        raise GGQError(f"base logits file has {data.size} bytes; its header asks for {expected}", path)
    tokens = data[HEADER_BYTES:tokens_end].view(np.int32)
    rows = data[tokens_end:].view(np.uint16).reshape(n_chunk, scored, nv)
    return BaseLogits(path, n_ctx, n_vocab, n_chunk, tokens, rows)


def chunk_logits(tf, chunk: np.ndarray, bos_id: int | None) -> np.ndarray:
    """All logits of one chunk run from an empty context, its first token replaced by BOS if given."""
    chunk = np.array(chunk, dtype=np.int64)
    if bos_id is not None:
        chunk[0] = bos_id
    tf.cache_tokens = []
    logits = tf.forward(chunk, 0, all_logits=True)
    tf.cache_tokens = chunk.tolist()
    return logits


def bos_for(tokenizer) -> int | None:
    return tokenizer.bos_id if tokenizer.add_bos and tokenizer.bos_id is not None else None


def chunked_tokens(tokenizer, text: str, n_ctx: int, n_chunks: int) -> np.ndarray:
    tokens = np.asarray(tokenizer.encode(text, add_special=True, parse_special=False), dtype=np.int32)
    if len(tokens) < 2 * n_ctx:
        raise GGQError(f"need at least {2 * n_ctx} tokens for a context of {n_ctx}; the text has {len(tokens)}")
    n_max = len(tokens) // n_ctx
    n = n_max if n_chunks is None or n_chunks < 0 else min(n_chunks, n_max)
    return tokens[:n * n_ctx]


def save_base_logits(tf, tokenizer, text: str, path, n_ctx: int = 512, n_chunks: int = -1,
                     progress: Callable[[int, int], None] | None = None) -> BaseLogits:
    """Run the base model over the text's chunks and write its base logits file (atomically)."""
    if n_ctx < 4 or n_ctx > tf.ctx_size:
        raise GGQError(f"context {n_ctx} must be between 4 and the model context {tf.ctx_size}")
    tokens = chunked_tokens(tokenizer, text, n_ctx, n_chunks)
    n_chunk, n_vocab, first = len(tokens) // n_ctx, tf.params.n_vocab, n_ctx // 2
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + np.array([n_ctx, n_vocab, n_chunk], np.int32).tobytes() + tokens.tobytes())
            rows = np.empty((scored_per_chunk(n_ctx), row_width(n_vocab)), np.uint16)
            for c in range(n_chunk):
                chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
                logits = chunk_logits(tf, chunk, bos_for(tokenizer))
                encode_log_probs(logits[first:n_ctx - 1], chunk[first + 1:].astype(np.int64), rows)
                f.write(rows.tobytes())
                if progress:
                    progress(c + 1, n_chunk)
        _set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return read_base_logits(path)


@dataclass(frozen=True)
class KLDResult:
    n_chunks: int
    count: int                # positions compared
    mean_kld: float
    mean_kld_stderr: float
    median_kld: float
    p99_kld: float
    max_kld: float
    same_top: float           # fraction of positions whose top token agrees
    ppl: float                # the test model's
    ppl_base: float
    ppl_ratio: float          # exp(mean ln(PPL(test)/PPL(base))), llama.cpp's "Mean PPL(Q)/PPL(base)"

    def lines(self) -> list[str]:
        return [f"chunks {self.n_chunks}, positions {self.count}",
                f"PPL(test) {self.ppl:.6f}  PPL(base) {self.ppl_base:.6f}  ratio {self.ppl_ratio:.6f}",
                f"mean KLD {self.mean_kld:.6f} +/- {self.mean_kld_stderr:.6f}  median {self.median_kld:.6f}  "
                f"99% {self.p99_kld:.6f}  max {self.max_kld:.6f}",
                f"same top-1 {100 * self.same_top:.3f} %"]


def _percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's interpolated percentile of sorted float32 values (its arithmetic is float32)."""
    p = f32(fraction) * f32(len(sorted_values) - 1)
    ip = int(p)
    p = f32(p - f32(ip))
    hi = sorted_values[min(ip + 1, len(sorted_values) - 1)]
    return float(f32(f32(1) - p) * sorted_values[ip] + p * hi)


def _median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(sorted_values[n // 2] if n % 2 else f32(0.5) * (sorted_values[n // 2] + sorted_values[n // 2 - 1]))


def kl_divergence(tf, tokenizer, base: BaseLogits, n_chunks: int = -1,
                  progress: Callable[[int, int], None] | None = None) -> KLDResult:
    """Compare the model `tf` with a base logits file over its chunks (all, or the first n_chunks)."""
    if base.n_vocab != tf.params.n_vocab:
        raise GGQError(f"base logits have a vocabulary of {base.n_vocab}, the model {tf.params.n_vocab}", base.path)
    if base.n_ctx > tf.ctx_size:
        raise GGQError(f"base logits use a context of {base.n_ctx}, more than the model's {tf.ctx_size}", base.path)
    n_ctx, first, scored = base.n_ctx, base.n_ctx // 2, scored_per_chunk(base.n_ctx)
    n = base.n_chunk if n_chunks is None or n_chunks < 0 else min(n_chunks, base.n_chunk)
    kld, nll, nll_base = (np.empty(n * scored, np.float32) for _ in range(3))
    same = np.empty(n * scored, np.bool_)
    for c in range(n):
        chunk = base.tokens[c * n_ctx:(c + 1) * n_ctx]
        logits = chunk_logits(tf, chunk, bos_for(tokenizer))
        part = slice(c * scored, (c + 1) * scored)
        compare_rows(logits[first:n_ctx - 1], np.asarray(base.rows[c]), chunk[first + 1:].astype(np.int64),
                     kld[part], nll[part], nll_base[part], same[part])
        if progress:
            progress(c + 1, n)
    return _statistics(n, kld, nll, nll_base, same)


def _statistics(n_chunks: int, kld, nll, nll_base, same) -> KLDResult:
    count = len(kld)
    k64 = kld.astype(np.float64)
    mean = k64.sum() / count
    var = (k64 * k64).sum() / count - mean * mean
    stderr = math.sqrt(var / (count - 1)) if var > 0 and count > 10 else 0.0
    log_ppl = nll.astype(np.float64).sum() / count
    log_ppl_base = nll_base.astype(np.float64).sum() / count
    ordered = np.sort(kld)
    return KLDResult(n_chunks=n_chunks, count=count, mean_kld=mean, mean_kld_stderr=stderr,
                     median_kld=_median(ordered), p99_kld=_percentile(ordered, 0.99), max_kld=float(ordered[-1]),
                     same_top=float(same.sum()) / count, ppl=math.exp(log_ppl), ppl_base=math.exp(log_ppl_base),
                     ppl_ratio=math.exp(log_ppl - log_ppl_base))
