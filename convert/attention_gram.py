"""The Hessian of a value projection's rounding error, with the attention that reads its outputs.

GPTQ weighs a weight's rounding error by H = XᵀX: every token's output counts once. For attn_v that is
wrong. Head h's attention output at query t is Σ_s P_h[t, s] W_v,g x_s (g its kv head), so a rounding
error ΔW_g reaches it as ΔW_g x̄_t with x̄_t = Σ_s P_h[t, s] x_s, and the error that matters is
Σ_t |ΔW_g x̄_t|² = tr(ΔW_g H_g ΔW_gᵀ), H_g = Σ_{h reads g} Xᵀ P_hᵀ P_h X. Where most queries attend to a
few positions (the first token is an attention sink in most models), those positions' inputs weigh
hundreds of times more than in XᵀX. Measured on the shared model: GPTQ through XᵀX lowered attn_v's
XᵀX error 3.6x below llama.cpp's imatrix rounding yet raised the perplexity of the whole file from 29.95
to 33.3 (Q4_0; Q2_K 32.5 -> 35.4), because the error it moved went where the sink's input lies.

The observer keeps each layer's attention inputs of the current chunk; at the chunk's end it recomputes
the attention probabilities from the float32 q/k weights (RoPE by the runtime's own kernel, causal,
the layer's window) and adds Xᵀ (Σ_h P_hᵀ P_h) X per kv head. Models whose q/k pass through a norm or
carry biases are not handled here (their attn_v keeps XᵀX).
"""
from __future__ import annotations

import re

import numpy as np

from ggq.runtime.imatrix import InputStatistics

_ATTN_Q = re.compile(r"^blk\.(\d+)\.attn_q\.weight$")


def supported(tf) -> bool:
    """Attention this module recomputes exactly: plain q/k projections (no q/k norm, no biases)."""
    spec = tf.params.spec
    return not spec.qk_norm and not getattr(spec, "qkv_bias", False)


class Statistics(InputStatistics):
    """InputStatistics plus, per attn_v weight, the attention-weighted Gram matrix of each kv head."""

    def __init__(self, gram: bool = False, tf=None, source=None):
        super().__init__(gram)
        self._tf, self._source = (tf, source) if gram and tf is not None and supported(tf) else (None, None)
        self._chunk: dict[int, list[np.ndarray]] = {}
        self.value_grams: dict[str, np.ndarray] = {}   # attn_v weight name -> float64 [n_kv, cols, cols]
        self.head_dim = tf.params.head_dim if self._tf is not None else 0

    def __getstate__(self):  # the model is not kept (the bench pickles the statistics)
        state = dict(self.__dict__)
        state["_tf"] = state["_source"] = None
        state["_chunk"] = {}
        return state

    def __call__(self, matrices, x: np.ndarray) -> None:
        super().__call__(matrices, x)
        m = _ATTN_Q.match(matrices[0].name) if self._tf is not None else None
        if m:
            self._chunk.setdefault(int(m.group(1)), []).append(np.array(x, np.float32))

    def end_chunk(self) -> None:
        """The chunk's attention inputs, all positions seen: add each layer's weighted Gram matrices."""
        for layer, rows in self._chunk.items():
            x = np.concatenate(rows)
            if x.shape[0] >= 16:  # as InputStatistics, generation-sized runs are not collected
                name = f"blk.{layer}.attn_v.weight"
                if name not in self.value_grams:
                    self.value_grams[name] = np.zeros((self._tf.params.n_head_kv, x.shape[1], x.shape[1]))
                self._add_layer_grams(layer, x, self.value_grams[name])
        self._chunk.clear()

    def _weight(self, name: str) -> np.ndarray:
        return self._source.raw(name).view(np.float32)  # [rows, cols], loaded once by SourceModel

    def _add_layer_grams(self, layer: int, x: np.ndarray, out: np.ndarray) -> None:
        """Add the chunk's Xᵀ (Σ_h P_hᵀ P_h) X of each kv head g to out[g] (float64)."""
        from ggq.runtime.kernels.nn import rope
        tf, p = self._tf, self._tf.params
        n, hd = x.shape[0], p.head_dim
        q = (x @ self._weight(f"blk.{layer}.attn_q.weight").T).reshape(n, p.n_head, hd)
        k = (x @ self._weight(f"blk.{layer}.attn_k.weight").T).reshape(n, p.n_head_kv, hd)
        q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
        rope(q, k, np.arange(n, dtype=np.int64), tf.inv_freq[layer], tf.pos_scale[layer], p.spec.rope_neox)
        q *= np.float32(p.attn_scale)
        t = np.arange(n)
        hidden = t[None, :] > t[:, None]
        if tf.window[layer]:
            hidden |= t[None, :] <= t[:, None] - tf.window[layer]
        per_kv = p.n_head // p.n_head_kv
        for g in range(p.n_head_kv):
            weights = np.zeros((n, n), np.float32)  # Σ_h P_hᵀ P_h over the query heads reading kv head g
            for h in range(g * per_kv, (g + 1) * per_kv):
                scores = np.where(hidden, -np.inf, q[:, h] @ k[:, g].T)
                probs = np.exp(scores - scores.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                weights += probs.T @ probs
            # float32 BLAS for one chunk, as InputStatistics' XᵀX; the chunks sum in float64
            np.add(out[g], x.T @ (weights @ x), out=out[g])

    def row_grams(self, weight_name: str) -> list[tuple[int, int, np.ndarray]] | None:
        """[(first row, end row, H)] for a weight whose row groups see different Hessians (attn_v: one
        per kv head, head_dim rows each), or None (one H for all rows: gram())."""
        grams = self.value_grams.get(weight_name)
        if grams is None:
            return None
        rows = self.head_dim
        return [(g * rows, (g + 1) * rows, grams[g]) for g in range(grams.shape[0])]
