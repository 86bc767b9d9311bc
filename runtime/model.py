"""The transformer over a KV cache: `Transformer.forward(tokens, pos)` runs a prompt (block weights times
8-bit activations in prompt kernels that take many tokens at once, as llama.cpp does; float weights, or
everything with exact=True, through float32 BLAS on dequantized tiles; attention in kernels/attention_tile.py), and
`Transformer.decode(token, pos)` runs one generated token through the compiled step of kernels/step.py
(fused dequantize-and-dot kernels; activations rounded to 8-bit blocks as llama.cpp does, unless exact).

Everything is allocated once when the model is opened (work buffers for `n_batch` tokens, the float32
KV cache for `ctx_size` positions), so decoding one token allocates no arrays. A prompt longer than
n_batch is run n_batch tokens at a time.

One layer, in the order of the math (llama; the other architectures switch pieces on via params.ARCHS):
    h = rmsnorm(x) ; q, k, v = h Wq, h Wk, h Wv (+ biases) ; q, k = rmsnorm per head (qk_norm)
    q, k = rope(q, k) ; attn = softmax(q k^T * scale + causal/sliding mask) v ; h = attn Wo
    x = x + post_norm(h)
    h = rmsnorm(x) ; h = act(h Wgate) * (h Wup) ; x = x + post_norm(h Wdown)
"""
from __future__ import annotations

import mmap

import numpy as np

from ggq.errors import GGQError
from ggq.gguf_read import GGUFFile
from ggq.runtime.backend import Backend
from ggq.runtime.cuda import check_device, cuda_backend
from ggq.runtime.decode import DecodeStep, GgmlStep
from ggq.runtime.kernels.attention_tile import prompt_attention
from ggq.runtime.kernels.ggml_step import FORM_BATCH, FORM_FA_TILED, FORM_Q4K_GEMM, FORM_TILED
from ggq.runtime.kernels.nn import attention, gelu_tanh_mul, rmsnorm, rope, silu_mul, softcap
from ggq.runtime.params import ModelParams, read_params
from ggq.runtime.weights import Layer, embed, linear, linears, load_weights

ACTIVATIONS = {"silu": silu_mul, "gelu_tanh": gelu_tanh_mul}
DEFAULT_BATCH = 512  # prompt tokens per batch: llama.cpp's default n_ubatch
LLAMACPP_UBATCH = 512  # llama.cpp's default n_ubatch (the match_llamacpp mode follows its grouping)


def kv_buffer(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zeroed float32 array whose memory becomes resident only where positions are written: an
    anonymous mapping with transparent huge pages off (with them, the first write into each head's
    slab of the cache made 2 MB resident, the whole cache after one token)."""
    count, size = int(np.prod(shape)), np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(count * size, 1))
    no_huge_pages = getattr(mmap, "MADV_NOHUGEPAGE", None)  # Linux only; elsewhere pages are small
    if no_huge_pages is not None:
        buf.madvise(no_huge_pages)
    return np.frombuffer(buf, dtype, count).reshape(shape)


class Workspace:
    """Work buffers for up to `n` tokens at once, made once."""

    def __init__(self, p: ModelParams, n: int, ctx: int):
        f32 = np.float32
        self.x = np.empty((n, p.n_embd), f32)
        self.h = np.empty((n, p.n_embd), f32)
        self.q = np.empty((n, p.n_head * p.head_dim), f32)
        self.k = np.empty((n, p.n_head_kv * p.head_dim), f32)
        self.v = np.empty((n, p.n_head_kv * p.head_dim), f32)
        self.att = np.empty((n, p.n_head * p.head_dim), f32)
        self.gate = np.empty((n, p.n_ff), f32)
        self.up = np.empty((n, p.n_ff), f32)
        self.arange = np.arange(n, dtype=np.int64)
        self.positions = np.empty(n, np.int64)
        self.token = np.empty(1, np.int64)  # the generated token's id, for decode
        self.scores = np.empty((p.n_head, ctx), f32)
        self.logits = np.empty((1, p.n_vocab), f32)


class Transformer:
    """A model opened for inference: hyperparameters, weight views, KV cache and work buffers."""

    def __init__(self, gguf: GGUFFile, ctx_size: int | None = None, n_batch: int = DEFAULT_BATCH,
                 exact: bool = False, match_llamacpp: bool = False, device: str = "cpu"):
        check_device(device)
        self.gguf = gguf
        self.exact = exact  # decode with float32 activations too, instead of llama.cpp's 8-bit integer dots
        # every token (prompt ones too) through llama.cpp's own CPU arithmetic, F16 KV cache (decode.GgmlStep)
        self.match_llamacpp = match_llamacpp
        if exact and match_llamacpp:
            raise GGQError("exact and match_llamacpp exclude each other")
        self.params = p = read_params(gguf.metadata, gguf.tensors)
        self.weights = load_weights(gguf, p, integer_prompts=not exact)
        self.ctx_size = int(ctx_size or min(p.n_ctx_train, 4096))
        if self.ctx_size <= 0:
            raise GGQError(f"context size must be positive, got {self.ctx_size}")
        self.n_batch = n_batch
        self._allocate(np.uint16 if match_llamacpp else np.float32)  # F16 bit patterns, as llama.cpp's cache
        self.activation = ACTIVATIONS[p.spec.activation]
        self.cache_tokens: list[int] = []  # what the KV cache holds (kept by the generation loop)
        # prompt path only: called with (matrices, input) before matmuls of that input (imatrix collection)
        self.input_observer = None
        self._rope_tables()
        # the compiled one-token path: made on first use, or at once for match_llamacpp (it may refuse the model)
        self._step: DecodeStep | GgmlStep | None = GgmlStep(self) if match_llamacpp else None
        # another device computes the whole model (runtime/backend.py); None: this module's CPU path
        self.backend: Backend | None = cuda_backend(self) if device == "cuda" else None

    def _allocate(self, kv_type) -> None:
        """The KV cache and the work buffers for ctx_size positions; a context too large for this
        machine's memory is the user's input, so it is one GGQError, not an OSError from mmap."""
        p = self.params
        shape = (p.n_layer, p.n_head_kv, self.ctx_size, p.head_dim)
        try:
            self.k_cache = kv_buffer(shape, kv_type)
            self.v_cache = kv_buffer(shape, kv_type)
            self.ws = Workspace(p, self.n_batch, self.ctx_size)
        except (OSError, MemoryError, ValueError, OverflowError) as e:
            need = 2 * int(np.prod(shape, dtype=np.float64)) * np.dtype(kv_type).itemsize
            reason = getattr(e, "strerror", None) or type(e).__name__
            raise GGQError(f"a context of {self.ctx_size} positions needs {need / 2**30:.1f} GiB of KV cache; "
                           f"cannot allocate it ({reason}): choose a smaller context size") from None

    def _rope_tables(self) -> None:
        """Per layer: inverse frequencies, position multiplier and attention window."""
        p, w = self.params, self.weights
        exponents = np.arange(0, p.rope_dims, 2, dtype=np.float64) / p.rope_dims
        factors = 1.0 if w.rope_freqs is None else w.rope_freqs.astype(np.float64)  # llama3 scaling
        global_freq = p.rope_base ** -exponents / factors
        local_freq = p.rope_base_swa ** -exponents
        self.inv_freq = [local_freq if p.is_swa(i) else global_freq for i in range(p.n_layer)]
        self.pos_scale = [1.0 if p.is_swa(i) else p.rope_scale for i in range(p.n_layer)]
        self.window = [p.swa_window if p.is_swa(i) else 0 for i in range(p.n_layer)]

    def forward(self, tokens, pos: int, all_logits: bool = False) -> np.ndarray:
        """Run tokens at positions pos, pos+1, ... (the cache must hold positions < pos already).

        Returns logits [n_tokens, n_vocab] if all_logits, else [1, n_vocab] for the last token (a view of
        a buffer that the next call overwrites).
        """
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        n = ids.shape[0]
        if n == 0 or pos < 0 or pos + n > self.ctx_size:
            raise GGQError(f"{n} tokens at position {pos} do not fit the context of {self.ctx_size}")
        logits = np.empty((n, self.params.n_vocab), np.float32) if all_logits else self.ws.logits
        if self.backend is not None:
            return self.backend.forward(ids, pos, logits, all_logits)
        if self.match_llamacpp:
            return self._forward_as_llamacpp(ids, pos, logits, all_logits)
        for start in range(0, n, self.n_batch):
            chunk = ids[start:start + self.n_batch]
            last = start + len(chunk) == n
            out = logits[start:start + len(chunk)] if all_logits else (logits if last else None)
            self._batch(chunk, pos + start, out)
        return logits

    def _forward_as_llamacpp(self, ids, pos: int, logits: np.ndarray, all_logits: bool) -> np.ndarray:
        """The prompt one token at a time through GgmlStep: the same bits as llama.cpp's batched prompt.
        llama.cpp splits a prompt into micro-batches of LLAMACPP_UBATCH tokens; in each, its repacked
        Q4_K kernel takes whole groups of 4 rows in one form (gemm) and the rest in another (gemv),
        its other k-quant matmuls change kernel at 8 rows (tiled), F16 ones at 2 (tinyBLAS), flash
        attention at 64 (tiled), and the last layer's feed-forward part only runs the rows whose
        logits are wanted."""
        for start in range(0, len(ids), LLAMACPP_UBATCH):
            chunk = ids[start:start + LLAMACPP_UBATCH]
            n = len(chunk)
            grouped = n - n % 4
            batch = (FORM_BATCH if n >= 2 else 0) | (FORM_TILED if n >= 8 else 0) | (FORM_FA_TILED if n >= 64 else 0)
            for t, tok in enumerate(chunk):
                self._embed_one(int(tok))
                form = batch | (FORM_Q4K_GEMM if t < grouped else 0)
                out = self._step.run(pos + start + t, form, form if all_logits else 0)
                if all_logits:
                    logits[start + t] = out[0]
        return logits

    def decode(self, token: int, pos: int) -> np.ndarray:
        """One generated token at position pos through the compiled decode step (8-bit activations
        unless exact); returns logits [1, n_vocab], a buffer the next call overwrites."""
        if not 0 <= pos < self.ctx_size:
            raise GGQError(f"position {pos} is outside the context of {self.ctx_size}")
        if self.backend is not None:
            return self.backend.decode(token, pos)
        step = self.compiled_step()
        self._embed_one(token)
        return step.run(pos)

    def warm_up(self) -> None:
        """Compile (and tune) the one-token step now, e.g. before an interactive session takes its first
        message: with a fresh Numba cache that takes tens of seconds, which would otherwise stall the
        first answer after its first word. Runs one step at the spare last position, which any later
        use writes before it reads."""
        if self.backend is None and not self.match_llamacpp:
            step = self.compiled_step()
            self._embed_one(0)
            step.run(step.spare_position)

    def compiled_step(self) -> DecodeStep | GgmlStep:
        """The compiled one-token step, made on first use with its kernel shapes tuned for this machine
        (runtime/tune.py: cached per CPU; the first model on a new machine measures them, running
        steps at a spare position)."""
        if self._step is None:
            import numba
            from ggq import blas_core
            from ggq.runtime.tune import tune
            self._step = DecodeStep(self, self.exact)
            tune(self._step, numba.get_num_threads())
            blas_core.tune_at_first_use((512, self.params.n_embd, self.params.n_ff))  # prompts, next process on
        return self._step

    def _embed_one(self, token: int) -> None:
        """The token's embedding into ws.x[0], the input of the one-token steps."""
        x, ids = self.ws.x[:1], self.ws.token
        ids[0] = token
        embed(self.weights.token_embd, ids, x)
        if self.params.embed_scale != 1.0:
            x *= np.float32(self.params.embed_scale)

    def _batch(self, ids: np.ndarray, pos: int, logits: np.ndarray | None) -> None:
        p, w, ws = self.params, self.weights, self.ws
        n = ids.shape[0]
        x, h = ws.x[:n], ws.h[:n]
        embed(w.token_embd, ids, x)
        if p.embed_scale != 1.0:
            x *= np.float32(p.embed_scale)
        np.add(ws.arange[:n], pos, out=ws.positions[:n])
        for i, layer in enumerate(w.layers):
            self._attention(i, layer, x, h, pos)
            self._feed_forward(layer, x, h)
        if logits is None:
            return
        rows = x if logits.shape[0] == n else x[n - 1:]
        normed = h[:rows.shape[0]]
        rmsnorm(rows, w.output_norm, p.rms_eps, normed)
        linear(w.output, normed, logits, w.tile)
        if p.final_softcap:
            softcap(logits, p.final_softcap)

    def _attention(self, i: int, layer: Layer, x: np.ndarray, h: np.ndarray, pos: int) -> None:
        p, ws, tile = self.params, self.ws, self.weights.tile
        n, hd = x.shape[0], p.head_dim
        q, k, v, att = ws.q[:n], ws.k[:n], ws.v[:n], ws.att[:n]
        rmsnorm(x, layer.attn_norm, p.rms_eps, h)
        if self.input_observer is not None:
            self.input_observer((layer.wq, layer.wk, layer.wv), h)
        linears((layer.wq, layer.wk, layer.wv), h, (q, k, v), tile)
        if layer.bq is not None:
            q += layer.bq
            k += layer.bk
            v += layer.bv
        if layer.q_norm is not None:
            rmsnorm(q.reshape(-1, hd), layer.q_norm, p.rms_eps, q.reshape(-1, hd))
            rmsnorm(k.reshape(-1, hd), layer.k_norm, p.rms_eps, k.reshape(-1, hd))
        positions = ws.positions[:n]
        rope(q.reshape(n, p.n_head, hd), k.reshape(n, p.n_head_kv, hd), positions, self.inv_freq[i],
             self.pos_scale[i], p.spec.rope_neox)
        q *= np.float32(p.attn_scale)
        self.k_cache[i, :, pos:pos + n] = k.reshape(n, p.n_head_kv, hd).transpose(1, 0, 2)
        self.v_cache[i, :, pos:pos + n] = v.reshape(n, p.n_head_kv, hd).transpose(1, 0, 2)
        if n == 1:
            attention(q.reshape(n, p.n_head, hd), self.k_cache[i], self.v_cache[i], pos, self.window[i],
                      ws.scores, att.reshape(n, p.n_head, hd))
        else:
            prompt_attention(q.reshape(n, p.n_head, hd), self.k_cache[i], self.v_cache[i], pos, self.window[i],
                             att.reshape(n, p.n_head, hd))
        if self.input_observer is not None:
            self.input_observer((layer.wo,), att)
        linear(layer.wo, att, h, tile)
        if layer.attn_post_norm is not None:
            rmsnorm(h, layer.attn_post_norm, p.rms_eps, h)
        x += h

    def _feed_forward(self, layer: Layer, x: np.ndarray, h: np.ndarray) -> None:
        p, ws, tile = self.params, self.ws, self.weights.tile
        n = x.shape[0]
        gate, up = ws.gate[:n], ws.up[:n]
        rmsnorm(x, layer.ffn_norm, p.rms_eps, h)
        if self.input_observer is not None:
            self.input_observer((layer.ffn_gate, layer.ffn_up), h)
        linears((layer.ffn_gate, layer.ffn_up), h, (gate, up), tile)
        self.activation(gate, up)
        if self.input_observer is not None:
            self.input_observer((layer.ffn_down,), gate)
        linear(layer.ffn_down, gate, h, tile)
        if layer.ffn_post_norm is not None:
            rmsnorm(h, layer.ffn_post_norm, p.rms_eps, h)
        x += h


def open_model(path, ctx_size: int | None = None, n_batch: int = DEFAULT_BATCH, exact: bool = False,
               match_llamacpp: bool = False, device: str = "cpu") -> Transformer:
    """Open a GGUF file and prepare it for inference (the file stays memory-mapped)."""
    from ggq.gguf_read import open_gguf
    gguf = open_gguf(path)
    try:
        return Transformer(gguf, ctx_size=ctx_size, n_batch=n_batch, exact=exact, match_llamacpp=match_llamacpp,
                           device=device)
    except BaseException:
        gguf.close()
        raise
