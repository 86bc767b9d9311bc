"""The tables that the compiled decode step (kernels/step.py) reads, built once per opened model.

    step = DecodeStep(transformer, exact=False)
    logits = step.run(pos)      # the token's embedding in transformer.ws.x[0] -> [1, n_vocab], cache updated

Matrices become rows of one int64 table (byte offset in the memory-mapped file, rows, bytes per row, kind,
kernel shape: tune.py sets that column for this machine);
per-layer vectors become [n_layer, size] float32 arrays (zeros for pieces the architecture lacks, with a
flag saying so); the work buffers are the transformer's own.
"""
from __future__ import annotations

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.kernels.step import KINDS, ROLES, decode_step, kinds_present
from ggq.runtime.tune import untuned_shapes


def _matrix_table(weights) -> np.ndarray:
    """One row per matrix: byte offset, rows, bytes per row, kind, kernel shape, prefetch distance
    (both untuned; tune.py)."""
    mats = [getattr(layer, role) for layer in weights.layers for role in ROLES] + [weights.output]
    table = np.array([(m.offset, m.rows, m.data.nbytes // m.rows, KINDS.index(m.type_name), 0, 0) for m in mats],
                     dtype=np.int64)
    table[:, 4] = untuned_shapes(table)
    return table


def _activation_row(p) -> np.ndarray:
    """Bytes for two activation rows of the widest matrix input in any form the steps quantize to:
    Q8_0/Q8_1 blocks, Q8_K super-blocks, or F16 values (GgmlStep's F16 weights)."""
    widest = max(p.n_embd, p.n_ff, p.n_head * p.head_dim)
    one = max(widest // 32 * 36, -(-widest // 256) * 292, 2 * widest)
    return np.empty(2 * one, np.uint8)  # the second half: the k-quants' lane-ordered copy (kernels/step.py)


def _stack(layers, attr: str, size: int) -> np.ndarray:
    """[n_layer, size] of a per-layer vector, zeros where the layer has none."""
    out = np.zeros((len(layers), size), np.float32)
    for i, layer in enumerate(layers):
        value = getattr(layer, attr)
        if value is not None:
            out[i] = value
    return out


class DecodeStep:
    """Everything decode_step needs for one model, as arrays and tuples made once."""

    def __init__(self, tf, exact: bool):
        p, w, ws = tf.params, tf.weights, tf.ws
        layers, hd = w.layers, p.head_dim
        self.blob = tf.gguf.buffer()
        self.mats = _matrix_table(w)
        self.vecs = (_stack(layers, "attn_norm", p.n_embd), _stack(layers, "ffn_norm", p.n_embd),
                     _stack(layers, "attn_post_norm", p.n_embd), _stack(layers, "ffn_post_norm", p.n_embd),
                     _stack(layers, "q_norm", hd), _stack(layers, "k_norm", hd),
                     _stack(layers, "bq", p.n_head * hd), _stack(layers, "bk", p.n_head_kv * hd),
                     _stack(layers, "bv", p.n_head_kv * hd), w.output_norm)
        self.rope = (np.array(tf.inv_freq, np.float64), np.array(tf.pos_scale, np.float64),
                     np.array(tf.window, np.int64), np.zeros(1, np.int64))
        self.caches = (tf.k_cache, tf.v_cache)
        self.dims = (p.n_head, p.n_head_kv, hd)
        spec = p.spec
        self.flags = (True if exact else None,  # True or None, not a bool: see kernels/step.matvec_present
                      spec.qkv_bias, spec.qk_norm, spec.post_norms, spec.rope_neox, float(p.rms_eps),
                      float(p.attn_scale), None if exact else True, kinds_present(self.mats))
        self.gelu = spec.activation == "gelu_tanh"
        self.final_softcap = float(p.final_softcap or 0.0)
        self.bufs = (ws.x[:1], ws.h[:1], ws.q[:1], ws.k[:1], ws.v[:1], ws.att[:1], ws.gate[:1], ws.up[:1],
                     ws.scores, _activation_row(p))
        self.logits = ws.logits
        self.spare_position = tf.ctx_size - 1  # tuning runs steps here: written before any read

    def run(self, pos: int) -> np.ndarray:
        """The token embedded in bufs[0] through the model at position pos; returns logits [1, n_vocab]."""
        decode_step(pos, self.blob, self.mats, self.vecs, self.rope, self.caches, self.dims, self.flags,
                    self.gelu, self.final_softcap, self.bufs, self.logits)
        return self.logits


class GgmlStep:
    """Everything kernels/ggml_step.ggml_step needs (the match_llamacpp mode), made once: the matrix
    table, per-layer vectors, rope constants as ggml computes them in float, the F16 KV cache."""

    def __init__(self, tf):
        from ggq.runtime.kernels.ggml_step import ggml_step
        p, w, ws = tf.params, tf.weights, tf.ws
        if p.spec.activation != "silu" or p.spec.post_norms or p.embed_scale != 1.0 or p.final_softcap:
            raise GGQError(f"match_llamacpp supports llama-style models (SwiGLU, no extra norms); "
                           f"not {p.arch}")
        layers, hd, half = w.layers, p.head_dim, p.rope_dims // 2
        self._step = ggml_step
        self.blob, self.mats = tf.gguf.buffer(), _repacked_column(_matrix_table(w), w)
        self.vecs = (_stack(layers, "attn_norm", p.n_embd), _stack(layers, "ffn_norm", p.n_embd),
                     _stack(layers, "q_norm", hd), _stack(layers, "k_norm", hd),
                     _stack(layers, "bq", p.n_head * hd), _stack(layers, "bk", p.n_head_kv * hd),
                     _stack(layers, "bv", p.n_head_kv * hd), w.output_norm)
        self.rope = _ggml_rope(p, w, half)
        self.caches = (tf.k_cache, tf.v_cache)
        self.dims = (p.n_head, p.n_head_kv, hd)
        self.flags = (p.spec.qkv_bias, p.spec.qk_norm, p.spec.rope_neox, float(p.rms_eps),
                      np.float32(p.attn_scale))
        self.bufs = (ws.x[:1], ws.h[:1], ws.q[:1], ws.k[:1], ws.v[:1], ws.att[:1], ws.gate[:1], ws.up[:1],
                     _activation_row(p))
        self.scratch = (np.empty((half, 2), np.float32), np.empty(hd, np.uint16), np.empty(hd, np.uint16),
                        np.empty(64, np.float32), np.empty(hd, np.float32))
        self.logits = ws.logits

    def run(self, pos: int, form: int = 0, last_form: int = 0) -> np.ndarray:
        """As DecodeStep.run; form/last_form: see kernels/ggml_step (prompt tokens, which llama.cpp
        runs through its batched kernels)."""
        self._step(pos, self.blob, self.mats, self.vecs, self.rope, self.caches, self.dims, self.flags,
                   self.bufs, self.scratch, self.logits, form, last_form)
        return self.logits


def _repacked_column(mats: np.ndarray, w) -> np.ndarray:
    """The table plus a column (6): 1 where llama.cpp's CPU backend repacks the matrix at load on an AVX2
    host (Q4_0 and Q4_K with rows a multiple of 8; never the token embedding, which it also reads
    by row, so a tied output matrix stays as stored)."""
    kinds = [KINDS.index("Q4_0"), KINDS.index("Q4_K")]
    flag = (np.isin(mats[:, 3], kinds) & (mats[:, 1] % 8 == 0)).astype(np.int64)
    if w.output is w.token_embd:
        flag[-1] = 0
    return np.column_stack([mats, flag])


def _ggml_rope(p, w, half: int):
    """Per layer: theta_scale = powf(base, -2/n_dims) (ggml's float rounding), the frequency scale, the
    frequency factors (ones without llama3 scaling) and the attention window."""
    from ggq.runtime.kernels.ggml_ops import rope_theta_scale
    n = p.n_layer
    bases = [p.rope_base_swa if p.is_swa(i) else p.rope_base for i in range(n)]
    theta_scale = np.array([rope_theta_scale(b, p.rope_dims) for b in bases], np.float32)
    freq_scale = np.array([1.0 if p.is_swa(i) else p.rope_scale for i in range(n)], np.float32)
    factors = np.ones((n, half), np.float32)
    if w.rope_freqs is not None:
        factors[[not p.is_swa(i) for i in range(n)]] = w.rope_freqs
    window = np.array([p.swa_window if p.is_swa(i) else 0 for i in range(n)], np.int64)
    return theta_scale, freq_scale, factors, window
