"""One token through the model with llama.cpp's CPU arithmetic, bit for bit (the `match_llamacpp` mode).

The same walk as kernels/step.py's decode_step, with ggml_ops' kernels in place of nn's: ggml's
RMSNorm, rope and SwiGLU, flash attention over an F16 KV cache, and every matrix through the 8-bit
integer dots (activations quantized as ggml-cpu quantizes them). A prompt is fed one token at a time:
llama.cpp's batched prompt gives each token the same arithmetic (its batched matmuls, tinyBLAS and
the vec_dot loops, sum each output in the order of the one-row dot; flash attention treats each query
row alone), so the prompt's results are the same bits as well.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.runtime.kernels import dot_ggml_x86 as gx
from ggq.runtime.kernels import ggml_ops as go
from ggq.runtime.kernels.actquant import quantize_q8_0, quantize_q8_k
from ggq.runtime.kernels.step import DOWN, F16, GATE, N_ROLES, Q4_0, Q4_K, Q6_K, UP, WK, WO, WQ, WV, matvec_any

# which of llama.cpp's matmul kernels a prompt token goes through (0: the one-row kernels)
FORM_Q4K_GEMM = 1  # repacked Q4_K, the token in one of its micro-batch's whole groups of 4 rows
FORM_TILED = 2     # tiled k-quant matmul: a micro-batch of 8 rows or more (Q6_K here)
FORM_BATCH = 4     # any batch of 2 rows or more: F16 through llamafile's tinyBLAS
FORM_FA_TILED = 8  # a micro-batch of 64 rows or more: flash attention's tiled form


@njit(cache=True)
def matvec(blob, mats, m, x, out, xq, form):
    """out = W_m @ x with 8-bit activations, each kind in llama.cpp's x86 order (other legacy kinds:
    the dot_legacy kernels already follow it). mats[m, 6]: llama.cpp repacks this matrix (Q4_0, Q4_K
    on AVX2 hosts). form: which of llama.cpp's kernels would take this row (FORM_* bits; 0: the
    one-row kernels of decode)."""
    kind, repacked = mats[m, 3], mats[m, 6] != 0
    if kind != Q4_K and kind != Q6_K and kind != F16 and not (kind == Q4_0 and repacked):
        matvec_any(blob, mats, m, x, out, xq, None, True)  # 8-bit activations (see step.matvec_any)
        return
    off, rows, row_bytes = mats[m, 0], mats[m, 1], mats[m, 2]
    w = blob[off:off + rows * row_bytes].reshape((rows, row_bytes))
    if kind == Q4_0:
        quantize_q8_0(x.reshape((1, x.shape[0])), xq.reshape((1, xq.shape[0])))
        gx.matvec_q4_0_repacked(w, xq, out)
        return
    if kind == F16:
        gx.matvec_f16(w.view(np.uint16), x, xq.view(np.uint16), out, form & FORM_BATCH != 0)
        return
    quantize_q8_k(x.reshape((1, x.shape[0])), xq.reshape((1, xq.shape[0])))
    if kind == Q4_K:
        gx.matvec_q4_k(w, xq, out, form & FORM_Q4K_GEMM != 0)
    else:
        gx.matvec_q6_k(w, xq, out, form & FORM_TILED != 0)


@njit(cache=True)
def _attention(i, pos, blob, mats, vecs, rope_tab, caches, dims, flags, bufs, scratch, form):
    attn_norm, q_norm, k_norm, bq, bk, bv = vecs[0], vecs[2], vecs[3], vecs[4], vecs[5], vecs[6]
    theta_scale, freq_scale, factors, window = rope_tab
    k_cache, v_cache = caches
    n_head, n_kv, hd = dims
    qkv_bias, qk_norm, neox, eps, attn_scale = flags
    x, h, q, k, v, att, gate, up, xq = bufs
    table, qh, vkq, lanes, acc = scratch
    base = i * N_ROLES
    go.rmsnorm(x, attn_norm[i], eps, h)
    matvec(blob, mats, base + WQ, h[0], q[0], xq, form)
    matvec(blob, mats, base + WK, h[0], k[0], xq, form)
    matvec(blob, mats, base + WV, h[0], v[0], xq, form)
    if qkv_bias:
        q[0] += bq[i]
        k[0] += bk[i]
        v[0] += bv[i]
    qh2, kh2 = q.reshape((n_head, hd)), k.reshape((n_kv, hd))
    if qk_norm:
        go.rmsnorm(qh2, q_norm[i], eps, qh2)
        go.rmsnorm(kh2, k_norm[i], eps, kh2)
    go.rope_table(pos, theta_scale[i], freq_scale[i], factors[i], table)
    go.rope(qh2, table, neox)
    go.rope(kh2, table, neox)
    vh2 = v.reshape((n_kv, hd))
    for g in range(n_kv):
        for d in range(hd):
            k_cache[i, g, pos, d] = go.f16_bits(kh2[g, d])
            v_cache[i, g, pos, d] = go.f16_bits(vh2[g, d])
    if form & FORM_FA_TILED:
        go.flash_attention_tiled(qh2, k_cache[i], v_cache[i], pos + 1, window[i], attn_scale, lanes, acc,
                                 att.reshape((n_head, hd)))
    else:
        go.flash_attention(qh2, k_cache[i], v_cache[i], pos + 1, window[i], attn_scale, qh, vkq, lanes,
                           att.reshape((n_head, hd)))
    matvec(blob, mats, base + WO, att[0], h[0], xq, form)
    x[0] += h[0]


@njit(cache=True)
def _feed_forward(i, blob, mats, vecs, flags, bufs, form):
    ffn_norm, eps = vecs[1], flags[3]
    x, h, q, k, v, att, gate, up, xq = bufs
    base = i * N_ROLES
    go.rmsnorm(x, ffn_norm[i], eps, h)
    matvec(blob, mats, base + GATE, h[0], gate[0], xq, form)
    matvec(blob, mats, base + UP, h[0], up[0], xq, form)
    go.swiglu(gate, up)
    matvec(blob, mats, base + DOWN, gate[0], h[0], xq, form)
    x[0] += h[0]


@njit(cache=True)
def ggml_step(pos, blob, mats, vecs, rope_tab, caches, dims, flags, bufs, scratch, logits, form, last_form):
    """x (bufs[0], the token's embedding, [1, n_embd]) through every layer at position pos, the F16 KV
    cache updated, then logits [1, n_vocab] = output @ rmsnorm(x). form: the k-quant kernels that
    llama.cpp would use for this token (see matvec); last_form: the same for the last layer's
    feed-forward part and the output, which llama.cpp runs only for the rows whose logits it keeps."""
    n_layer = rope_tab[0].shape[0]
    for i in range(n_layer):
        _attention(i, pos, blob, mats, vecs, rope_tab, caches, dims, flags, bufs, scratch, form)
        _feed_forward(i, blob, mats, vecs, flags, bufs, form if i < n_layer - 1 else last_form)
    form = last_form
    x, h, xq = bufs[0], bufs[1], bufs[8]
    go.rmsnorm(x, vecs[7], flags[3], h)
    matvec(blob, mats, n_layer * N_ROLES, h[0], logits[0], xq, form)
