"""Calibration statistics of a model's matmul inputs, as llama-imatrix collects them (tools/imatrix).

The text is cut into chunks as llama-perplexity does (kld.chunk_logits: n_ctx tokens, BOS first) and
every chunk runs through the float32 prompt path. Before each block matmul the Transformer's
input_observer hands over the input rows; per weight we add up x_j^2 over all tokens (llama.cpp's
in_sum2) and count the tokens. Like llama-imatrix: only `blk.*` weights, only batches of 16+ tokens.

With gram=True the full Gram matrix XᵀX of each distinct input is kept too (float64), shared by the
weights that read the same input (q/k/v, gate/up): what GPTQ-style rounding needs. Its diagonal is
in_sum2.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ggq.imatrix_file import Imatrix, ImatrixEntry
from ggq.runtime.kld import bos_for, chunk_logits, chunked_tokens

MIN_BATCH = 16  # llama-imatrix ignores smaller matmuls (generation steps)


class InputStatistics:
    """The Transformer.input_observer that accumulates squared inputs (and optionally Gram matrices)."""

    def __init__(self, gram: bool = False):
        self.sums: dict[str, np.ndarray] = {}       # weight name -> float64 [n_cols]
        self.counts: dict[str, int] = {}
        self.gram_of: dict[str, str] = {}           # weight name -> key of its input's Gram matrix
        self.grams: dict[str, np.ndarray] | None = {} if gram else None

    def __call__(self, matrices: Sequence, x: np.ndarray) -> None:
        if x.shape[0] < MIN_BATCH:
            return
        x64 = x.astype(np.float64)
        squares = np.einsum("ij,ij->j", x64, x64)
        key = matrices[0].name
        for m in matrices:
            if not m.name.startswith("blk."):
                continue
            if m.name not in self.sums:
                self.sums[m.name] = np.zeros(x.shape[1], np.float64)
                self.counts[m.name] = 0
                self.gram_of[m.name] = key
            self.sums[m.name] += squares
            self.counts[m.name] += x.shape[0]
        if self.grams is not None:
            if key not in self.grams:
                self.grams[key] = np.zeros((x.shape[1], x.shape[1]), np.float64)
            # one batch's XᵀX in float32 BLAS (2x faster than float64; a few hundred rows lose nothing that
            # matters), summed over batches in float64 (widened as it is added: no float64 copy of it)
            np.add(self.grams[key], x.T @ x, out=self.grams[key])

    def gram(self, weight_name: str) -> np.ndarray | None:
        """XᵀX of the weight's calibration inputs, or None (not collected, or not a block weight)."""
        if self.grams is None or weight_name not in self.gram_of:
            return None
        return self.grams[self.gram_of[weight_name]]

    def imatrix(self, datasets: list[str], chunk_count: int, chunk_size: int) -> Imatrix:
        entries = {name: ImatrixEntry(self.sums[name].astype(np.float32)[None, :],
                                      np.array([self.counts[name]], np.float32)) for name in sorted(self.sums)}
        return Imatrix(entries, datasets, chunk_count, chunk_size)


def collect(tf, tokenizer, text: str, n_ctx: int = 512, n_chunks: int = -1, gram: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[InputStatistics, int]:
    """Run the text's chunks through `tf`, observing every block matmul input; (statistics, chunks run)."""
    tokens = chunked_tokens(tokenizer, text, n_ctx, n_chunks)
    n = len(tokens) // n_ctx
    stats = InputStatistics(gram)
    tf.input_observer = stats
    try:
        for c in range(n):
            chunk_logits(tf, tokens[c * n_ctx:(c + 1) * n_ctx], bos_for(tokenizer))
            if progress:
                progress(c + 1, n)
    finally:
        tf.input_observer = None
    return stats, n
