"""One decode step, a single token through every layer, as one compiled function: Python is called once
per token, not once per operation (a 30-layer model makes ~500 kernel calls a token, and Python's
dispatch of each costs about as much as the kernel's own work on a small model).

The weight matrices are described as data: byte offset into the memory-mapped file, rows, bytes per row,
a kind code (KINDS), and the kernel shape and prefetch distance chosen for it on this machine (shapes.py,
runtime/tune.py).
`matvec_present` dispatches on the kind to the fused kernels of floats/legacy/
kquants (float activations, `exact`) or to the integer-dot kernels of dot_legacy/dot_kquants (activations
quantized to Q8_0/Q8_1/Q8_K first, as ggml-cpu does). Per-layer matrices are numbered role by role
(ROLES), the output matrix last.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.runtime.kernels import dot_kquants as dk
from ggq.runtime.kernels import dot_legacy as dl
from ggq.runtime.kernels import floats as fl
from ggq.runtime.kernels import kquants as kq
from ggq.runtime.kernels import legacy as lg
from ggq.runtime.kernels.actquant import quantize_q8_0, quantize_q8_1, quantize_q8_k
from ggq.runtime.kernels.nn import attention, gelu_tanh_mul, rmsnorm, rope, silu_mul, softcap
from ggq.runtime.kernels.vecir import X_LANES, q8_k_lane_order

# k-quant activations in lane order (vecir.q8_k_lane_order) in the second half of the activation row
# buffer, once per matvec, where the kernels take them so (the x86 forms); None: as quantized
K_LANES = True if X_LANES else None
KINDS = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) = range(len(KINDS))
ROLES = ("wq", "wk", "wv", "wo", "ffn_gate", "ffn_up", "ffn_down")
WQ, WK, WV, WO, GATE, UP, DOWN = range(len(ROLES))
N_ROLES = len(ROLES)  # matrices per layer in the table; the output matrix follows the last layer's


@njit(cache=True)
def _matvec_float_act(kind, w, x, out, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k):
    """Fused dequantize-and-dot with float32 activations. Each kind's flag is True or None (see
    matvec_present): Numba drops the branches of None, so the kernels of absent kinds are not compiled."""
    if q4_0 is not None:  # pruned where None
        if kind == Q4_0:
            lg.matvec_q4_0(w, x, out)
            return
    if q4_1 is not None:  # pruned where None
        if kind == Q4_1:
            lg.matvec_q4_1(w, x, out)
            return
    if q5_0 is not None:  # pruned where None
        if kind == Q5_0:
            lg.matvec_q5_0(w, x, out)
            return
    if q5_1 is not None:  # pruned where None
        if kind == Q5_1:
            lg.matvec_q5_1(w, x, out)
            return
    if q8_0 is not None:  # pruned where None
        if kind == Q8_0:
            lg.matvec_q8_0(w, x, out)
            return
    if q2_k is not None:  # pruned where None
        if kind == Q2_K:
            kq.matvec_q2_k(w, x, out)
            return
    if q3_k is not None:  # pruned where None
        if kind == Q3_K:
            kq.matvec_q3_k(w, x, out)
            return
    if q4_k is not None:  # pruned where None
        if kind == Q4_K:
            kq.matvec_q4_k(w, x, out)
            return
    if q5_k is not None:  # pruned where None
        if kind == Q5_K:
            kq.matvec_q5_k(w, x, out)
            return
    if q6_k is not None:  # pruned where None
        if kind == Q6_K:
            kq.matvec_q6_k(w, x, out)
            return


@njit(cache=True)
def _matvec_int_dot(kind, shape, pf, w, x, out, xq, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k):
    """Activations quantized to the weight's vec_dot_type, then integer dots in its native blocks, in
    the kernel shape and prefetch distance chosen for this matrix (shapes.py, runtime/tune.py)."""
    x2, q2 = x.reshape((1, x.shape[0])), xq.reshape((1, xq.shape[0]))
    xk = xq  # the k-quants' activations
    if kind == Q4_1 or kind == Q5_1:
        quantize_q8_1(x2, q2)
    elif kind >= Q2_K:
        quantize_q8_k(x2, q2)
        if K_LANES is not None:
            xk = xq[xq.shape[0] // 2:]
            q8_k_lane_order(xq, xk, x.shape[0] // 256)
    else:
        quantize_q8_0(x2, q2)
    if q4_0 is not None:  # pruned where None
        if kind == Q4_0:
            dl.matvec_q4_0(w, xq, out, shape, pf)
            return
    if q4_1 is not None:  # pruned where None
        if kind == Q4_1:
            dl.matvec_q4_1(w, xq, out, shape, pf)
            return
    if q5_0 is not None:  # pruned where None
        if kind == Q5_0:
            dl.matvec_q5_0(w, xq, out, shape, pf)
            return
    if q5_1 is not None:  # pruned where None
        if kind == Q5_1:
            dl.matvec_q5_1(w, xq, out, shape, pf)
            return
    if q8_0 is not None:  # pruned where None
        if kind == Q8_0:
            dl.matvec_q8_0(w, xq, out, shape, pf)
            return
    if q2_k is not None:  # pruned where None
        if kind == Q2_K:
            dk.matvec_q2_k(w, xk, out, shape, pf, K_LANES)
            return
    if q3_k is not None:  # pruned where None
        if kind == Q3_K:
            dk.matvec_q3_k(w, xk, out, shape, pf, K_LANES)
            return
    if q4_k is not None:  # pruned where None
        if kind == Q4_K:
            dk.matvec_q4_k(w, xk, out, shape, pf, K_LANES)
            return
    if q5_k is not None:  # pruned where None
        if kind == Q5_K:
            dk.matvec_q5_k(w, xk, out, shape, pf, K_LANES)
            return
    if q6_k is not None:  # pruned where None
        if kind == Q6_K:
            dk.matvec_q6_k(w, xk, out, shape, pf, K_LANES)
            return


@njit(cache=True)
def _matvec_float_weights(kind, pf, w, x, out, f32, f16, bf16):
    if f32 is not None:
        if kind == F32:
            fl.matvec_f32(w.view(np.float32), x, out)
    if f16 is not None:
        if kind == F16:
            fl.matvec_f16(w.view(np.uint16), x, out, pf)
    if bf16 is not None:
        if kind == BF16:
            fl.matvec_bf16(w.view(np.uint16), x, out, pf)


@njit(cache=True)
def matvec_present(blob, mats, m, x, out, xq, exact, int_dots, has):
    """out = W_m @ x for matrix m of the table mats [n, 6] = (byte offset, rows, row bytes, kind, shape,
    prefetch distance in bytes: 0 for none).
    Of exact and int_dots one is True, the other None: float32 activations for every type, or 8-bit
    ones for block types. None is a type of its own, so Numba prunes the branch it guards, and a step
    compiles the kernels of one arithmetic only (both made a cold start a fifth longer). `has` does the
    same for the weight kinds: one entry per KINDS, True where the model has that kind, else None
    (kinds_present), so a step compiles the kernels of its model's kinds only (all of them: 41 s of a
    60 s cold start on Zen 5)."""
    off, rows, row_bytes, kind, shape, pf = mats[m, 0], mats[m, 1], mats[m, 2], mats[m, 3], mats[m, 4], mats[m, 5]
    w = blob[off:off + rows * row_bytes].reshape((rows, row_bytes))
    if kind <= BF16:
        _matvec_float_weights(kind, pf, w, x, out, has[0], has[1], has[2])
    elif exact is not None:
        _matvec_float_act(kind, w, x, out, has[3], has[4], has[5], has[6], has[7], has[8], has[9], has[10], has[11], has[12])
    elif int_dots is not None:
        _matvec_int_dot(kind, shape, pf, w, x, out, xq, has[3], has[4], has[5], has[6], has[7], has[8], has[9], has[10], has[11], has[12])


ALL_KINDS = (True,) * len(KINDS)


@njit(cache=True)
def matvec_any(blob, mats, m, x, out, xq, exact, int_dots):
    """matvec_present with every kind's kernels compiled (the match_llamacpp step, tests)."""
    matvec_present(blob, mats, m, x, out, xq, exact, int_dots, ALL_KINDS)


def kinds_present(mats: np.ndarray) -> tuple:
    """matvec_present's `has`: True for each KINDS entry that a row of mats has, else None."""
    kinds = set(int(k) for k in mats[:, 3])
    return tuple(True if i in kinds else None for i in range(len(KINDS)))


@njit(cache=True)
def _attention_block(i, pos, blob, mats, vecs, rope_tab, caches, dims, flags, bufs):
    attn_norm, ffn_norm, attn_post, ffn_post, q_norm, k_norm, bq, bk, bv, out_norm = vecs
    inv_freq, pos_scale, window, positions = rope_tab
    k_cache, v_cache = caches
    n_head, n_kv, hd = dims
    exact, qkv_bias, qk_norm, post_norms, neox, eps, attn_scale, int_dots, has = flags
    x, h, q, k, v, att, gate, up, scores, xq = bufs
    base = i * N_ROLES
    rmsnorm(x, attn_norm[i], eps, h)
    matvec_present(blob, mats, base + WQ, h[0], q[0], xq, exact, int_dots, has)
    matvec_present(blob, mats, base + WK, h[0], k[0], xq, exact, int_dots, has)
    matvec_present(blob, mats, base + WV, h[0], v[0], xq, exact, int_dots, has)
    if qkv_bias:
        q[0] += bq[i]
        k[0] += bk[i]
        v[0] += bv[i]
    qh, kh = q.reshape((n_head, hd)), k.reshape((n_kv, hd))
    if qk_norm:
        rmsnorm(qh, q_norm[i], eps, qh)
        rmsnorm(kh, k_norm[i], eps, kh)
    rope(q.reshape((1, n_head, hd)), k.reshape((1, n_kv, hd)), positions, inv_freq[i], pos_scale[i], neox)
    q[0] *= np.float32(attn_scale)
    k_cache[i, :, pos, :] = kh
    v_cache[i, :, pos, :] = v.reshape((n_kv, hd))
    attention(q.reshape((1, n_head, hd)), k_cache[i], v_cache[i], pos, window[i], scores,
              att.reshape((1, n_head, hd)))
    matvec_present(blob, mats, base + WO, att[0], h[0], xq, exact, int_dots, has)
    if post_norms:
        rmsnorm(h, attn_post[i], eps, h)
    x[0] += h[0]


@njit(cache=True)
def _feed_forward_block(i, blob, mats, vecs, flags, gelu, bufs):
    attn_norm, ffn_norm, attn_post, ffn_post, q_norm, k_norm, bq, bk, bv, out_norm = vecs
    exact, qkv_bias, qk_norm, post_norms, neox, eps, attn_scale, int_dots, has = flags
    x, h, q, k, v, att, gate, up, scores, xq = bufs
    base = i * N_ROLES
    rmsnorm(x, ffn_norm[i], eps, h)
    matvec_present(blob, mats, base + GATE, h[0], gate[0], xq, exact, int_dots, has)
    matvec_present(blob, mats, base + UP, h[0], up[0], xq, exact, int_dots, has)
    if gelu:
        gelu_tanh_mul(gate, up)
    else:
        silu_mul(gate, up)
    matvec_present(blob, mats, base + DOWN, gate[0], h[0], xq, exact, int_dots, has)
    if post_norms:
        rmsnorm(h, ffn_post[i], eps, h)
    x[0] += h[0]


@njit(cache=True)
def decode_step(pos, blob, mats, vecs, rope_tab, caches, dims, flags, gelu, final_softcap, bufs, logits):
    """x (bufs[0], the token's embedding, [1, n_embd]) through every layer at position pos, the KV cache
    updated, then logits [1, n_vocab] = output @ rmsnorm(x)."""
    n_layer = rope_tab[1].shape[0]
    rope_tab[3][0] = pos
    for i in range(n_layer):
        _attention_block(i, pos, blob, mats, vecs, rope_tab, caches, dims, flags, bufs)
        _feed_forward_block(i, blob, mats, vecs, flags, gelu, bufs)
    x, h, xq = bufs[0], bufs[1], bufs[9]
    output_norm, exact, eps, int_dots, has = vecs[9], flags[0], flags[5], flags[7], flags[8]
    rmsnorm(x, output_norm, eps, h)
    matvec_present(blob, mats, n_layer * N_ROLES, h[0], logits[0], xq, exact, int_dots, has)
    if final_softcap > 0.0:
        softcap(logits, final_softcap)
