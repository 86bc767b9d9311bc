"""How much each weight's rounding noise costs the model's output, measured on the calibration text.

A rounding leaves every weight an error of about the same size within a block (the block's scale sets
the grid step), so its error is modelled as noise with element variance D · ms_b, ms_b the mean square
of the weight's block of 32 in its row and D the format's relative squared error (allocate.DISTORTION).
For small noise the KL divergence of the model's next-token distributions from the float model's is
quadratic in the noise, i.e. linear in D, and adds up over tensors with independent noise (the
second-order, Fisher form of the loss). So one number per tensor predicts every format:

    S_t = KL(float model || model with tensor t given noise of relative variance DELTA) / DELTA
    predicted KL of format q on tensor t = S_t · D_q(t)

S_t is measured once per tensor: seeded Gaussian noise shaped as above is added to the tensor's float32
values in place, CHUNKS evenly spaced chunks of the calibration text run through ggq's runtime, the mean
KL over all their positions is taken, and the values are put back. Nothing here rounds to a format, so
the measurement is the same whatever grid the weights happen to lie on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DELTA = 0.005   # relative variance of the probe noise: about Q4_K's on Gaussian weights
CHUNKS = 2      # calibration chunks run per tensor
BLOCK = 32      # the noise follows the mean square of blocks of this many weights in a row
SEED = 13


def block_mean_square(w: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean square of each weight's block of `block` columns (a trailing partial block on its own), w's shape."""
    rows, cols = w.shape
    full = cols - cols % block
    sq = np.square(w, dtype=np.float64)
    out = np.empty((rows, cols), np.float64)
    if full:
        out[:, :full] = np.repeat(sq[:, :full].reshape(rows, -1, block).mean(axis=2), block, axis=1)
    if full < cols:
        out[:, full:] = sq[:, full:].mean(axis=1, keepdims=True)
    return out


def probe_noise(w: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with element variance delta · (mean square of the element's block)."""
    return (rng.standard_normal(w.shape) * np.sqrt(delta * block_mean_square(w))).astype(np.float32)


class Base:
    """The float model's next-token distributions of one chunk: probabilities p and Σ p log p per position."""

    def __init__(self, logits: np.ndarray):
        x = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(x)
        total = e.sum(axis=1, keepdims=True, dtype=np.float64)
        self.p = (e / total).astype(np.float32)
        log_p = x - np.log(total)
        self.neg_entropy = np.einsum("ij,ij->i", self.p.astype(np.float64), log_p)

    def mean_kl(self, logits: np.ndarray) -> float:
        """Mean over positions of KL(p || softmax(logits)) = Σ p log p - Σ p·logits + logsumexp(logits)."""
        top = logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64)) + top[:, 0]
        cross = np.einsum("ij,ij->i", self.p, logits, dtype=np.float64)
        return float(np.mean(self.neg_entropy - cross + lse))


def _matrices(weights) -> dict:
    """Name -> the runtime's weight matrix (a tied output is the embedding's matrix)."""
    out = {weights.token_embd.name: weights.token_embd, weights.output.name: weights.output}
    for layer in weights.layers:
        for m in vars(layer).values():
            if hasattr(m, "data") and hasattr(m, "name"):
                out[m.name] = m
    return out


def _chunks(tokens: np.ndarray, n_ctx: int, n: int) -> list[np.ndarray]:
    """n evenly spaced chunks of n_ctx tokens."""
    total = len(tokens) // n_ctx
    picks = np.unique(np.linspace(0, total - 1, min(n, total)).astype(np.int64))
    return [tokens[c * n_ctx:(c + 1) * n_ctx] for c in picks]


def measure(metadata: dict, sources: Sequence, text: str, names: Sequence[str], n_ctx: int = 512,
            chunks: int = CHUNKS, delta: float = DELTA, seed: int = SEED,
            progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """S_t (KL per unit of relative noise variance) for each tensor name, on the float32 checkpoint."""
    from ggq.convert.calibration import SourceModel
    from ggq.runtime.kld import bos_for, chunk_logits, chunked_tokens
    from ggq.runtime.model import Transformer
    from ggq.runtime.tokenizer import Tokenizer
    model = SourceModel(metadata, sources)
    try:
        tf = Transformer(model, ctx_size=n_ctx)
        tokenizer = Tokenizer.from_metadata(model.metadata)
        bos = bos_for(tokenizer)
        runs = _chunks(chunked_tokens(tokenizer, text, n_ctx, -1), n_ctx, chunks)
        base = [Base(chunk_logits(tf, c, bos)) for c in runs]
        matrices = _matrices(tf.weights)
        rng = np.random.default_rng(seed)
        out = {}
        for i, name in enumerate(names):
            m = matrices[name]
            kept = m.data.copy()
            m.data += probe_noise(kept, delta, rng)
            try:
                out[name] = float(np.mean([b.mean_kl(chunk_logits(tf, c, bos)) for b, c in zip(base, runs)])) / delta
            finally:
                m.data[...] = kept
            if progress:
                progress(i + 1, len(names))
        return out
    finally:
        model.close()



def feedback_gain(h: np.ndarray) -> float:
    """The share of rounding noise's output error tr(ΔW H ΔWᵀ) that GPTQ's error feedback leaves
    (convert/gptq.py): with noise of variance σ² per weight, rounding to nearest costs σ² tr(H), and
    column j rounded after the earlier columns' errors were fed forward costs σ² / U_jj² (U the upper
    Cholesky factor of H⁻¹, as GPTQ computes it; the OBS error of one column): gain = Σ_j U_jj⁻² / tr(H).
    It depends on H only, never on the tensor's values."""
    from ggq.convert.gptq import inverse_cholesky
    u = inverse_cholesky(h)
    total = float(np.trace(h))
    return float(np.sum(1.0 / np.square(np.diag(u)))) / total if total > 0 else 1.0
