"""The CUDA backend of a Transformer: the same model math as kernels/step.py's decode step (the same
spec flags of params.ARCHS), on the GPU.

    backend = CudaBackend(transformer)
    logits = backend.forward(ids, pos, logits, all_logits)   # a prompt: batched matmul kernels
    logits = backend.decode(token, pos)                      # one token: the captured decode graph
    token = backend.next_token(token, pos)                   # the same, greedy, only the id comes back

The decode step is one list of launches, made once and captured as a CUDA graph (launch.Replay); the
token id and its position travel in `state` (3 int64 on the device: token, position, greedy next token). Weights are
dequantized inside the dot products. Decode activations are rounded to int8 blocks for the dp4a row functions
(matvec_int.py) unless exact=True, as on the CPU; everything else, prompts included, is float32.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
from numba import cuda

from ggq.runtime.cuda import attention as at
from ggq.runtime.cuda import attention_tiles as atl
from ggq.runtime.cuda import kernels as kn
from ggq.runtime.cuda import matmul_int as mi
from ggq.runtime.cuda import matvec as mv
from ggq.runtime.cuda import matvec_pairs as mp
from ggq.runtime.cuda.launch import Launch, Replay, run_all
from ggq.runtime.cuda.upload import DeviceWeights

BATCH = 512                      # prompt tokens per pass
PROMPT_GRAPHS = 4                # captured prompt passes kept (one per token count and setting)


class Buffers:
    """Device work buffers for up to BATCH tokens, the KV cache and the decode state, made once."""

    def __init__(self, p, ctx: int):
        f32, hd = np.float32, p.head_dim
        self.n_q, self.n_kv = p.n_head * hd, p.n_head_kv * hd
        self.x = cuda.device_array((BATCH, p.n_embd), f32)
        self.h = cuda.device_array((BATCH, p.n_embd), f32)
        self.qkv = cuda.device_array((BATCH, self.n_q + 2 * self.n_kv), f32)
        self.att = cuda.device_array((BATCH, self.n_q), f32)
        self.gu = cuda.device_array((BATCH, 2 * p.n_ff), f32)
        self.logits = cuda.device_array((BATCH, p.n_vocab), f32)
        self.scores = cuda.device_array((BATCH, p.n_head, ctx), f32)
        self.ids = cuda.device_array(BATCH, np.int64)
        k_max = max(p.n_embd, p.n_ff, self.n_q)          # the prompt path's int8 activations (matmul_int.py)
        self.xq = cuda.device_array((BATCH, k_max // 4), np.int32)
        self.xd = cuda.device_array((BATCH, k_max // mv.QBLOCK), f32)
        self.xs = cuda.device_array((BATCH, k_max // mv.QBLOCK), f32)
        self.state = cuda.to_device(np.zeros(3, np.int64))
        self.sumsq = cuda.to_device(np.zeros(2 * p.n_layer + 1, np.float64))   # see CudaBackend._decode_launches
        cache = (p.n_layer, p.n_head_kv, ctx, hd)
        self.k_cache = cuda.to_device(np.zeros(cache, f32))
        self.v_cache = cuda.to_device(np.zeros(cache, f32))
        self.dims = cuda.to_device(np.array([p.n_head, p.n_head_kv, hd, p.rope_dims // 2], np.int64))
        self.flags = cuda.to_device(np.array([p.spec.qkv_bias, p.spec.qk_norm, p.spec.rope_neox], np.int64))


def _sm_count() -> int:
    """Multiprocessors of the current GPU (the simulator has no device: one)."""
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except AttributeError:
        return 1


class CudaBackend:
    def __init__(self, tf):
        self.params = p = tf.params
        self.w = DeviceWeights(tf)
        self.b = Buffers(p, tf.ctx_size)
        self.eps, self.attn_scale = float(p.rms_eps), float(p.attn_scale)
        self.gelu = p.spec.activation == "gelu_tanh"
        self.softcap = float(p.final_softcap or 0.0)
        self.host_state = cuda.pinned_array(3, np.int64)
        self.host_logits = cuda.pinned_array((1, p.n_vocab), np.float32)
        self.sm_count = _sm_count()
        self.per_sm = int(os.environ.get("GGQ_CUDA_PER_SM", 4))   # at most; fewer where fewer fit (_fit_grids)
        # int8 activations with dp4a, as the CPU runtime's default path; exact=True keeps float32 ones
        ints = os.environ.get("GGQ_CUDA_INT", "1") == "1"
        self.int_dots = ints and not tf.exact and p.n_embd % mv.QBLOCK == 0 and p.n_ff % mv.QBLOCK == 0
        # The 2026-12-08 prompt path (int8 tiles, key-tiled attention, a graph per pass) is opt-in until a GPU
        # has run it: it was built and checked under the simulator and an offline compile only (bench/RESULTS.md,
        # cuda_vs_llamacpp); the default stays the path measured on the H200. GGQ_CUDA_PROMPT_INT=1,
        # GGQ_CUDA_ATT_TILES=1, GGQ_CUDA_PROMPT_GRAPH=1 turn its parts on.
        # prompts: matmul_int's int8 tiles where a launch's formats all have an unpacker
        self.prompt_int = (self.int_dots and os.environ.get("GGQ_CUDA_PROMPT_INT", "0") == "1"
                           and (p.n_head * p.head_dim) % mv.QBLOCK == 0)
        self.mm_tokens = os.environ.get("GGQ_CUDA_MM_TOKENS", "auto")    # matmul_int.kernel's choice
        # matvec_pairs.py: "1" every int launch, "auto" launches with 2+ rows a warp, "0" none
        self.row_pairs = os.environ.get("GGQ_CUDA_ROW_PAIRS", "0")
        # prompt attention: attention_tiles (key tiles shared by a block's queries) or attention.attend
        self.att_tiles = os.environ.get("GGQ_CUDA_ATT_TILES", "0") == "1" and p.head_dim <= atl.MAX_HEAD_DIM
        self.sumsq_norms = not p.spec.post_norms   # gemma3's post-norms write x in their own kernel
        self.replay = Replay(self._decode_launches())
        self._captured = False
        # prompt passes as CUDA graphs too, one per token count (positions and ids are read on the device):
        # Python launches each of a pass's ~10 kernels a layer at tens of us apiece otherwise
        self.prompt_graph = os.environ.get("GGQ_CUDA_PROMPT_GRAPH", "0") == "1"
        self._prompt_graphs: dict = {}

    # ---- shared by both paths ------------------------------------------------------------------------
    def _attention_launches(self, i: int, n: int) -> list[Launch]:
        """q/k/v finishing and attention of layer i for n tokens (rows 0..n-1 of the buffers)."""
        p, b, v = self.params, self.b, self.w.vec
        block = max(32, min(128, -(-p.head_dim // 32) * 32))
        finish = Launch(at.qkv_finish, (n, p.n_head + 2 * p.n_head_kv), block, 0,
                        (b.qkv, v["bias"][i], v["q_norm"][i], v["k_norm"][i], v["inv_freq"][i],
                         self.w.pos_scale[i], b.state, b.k_cache[i], b.v_cache[i], b.dims, b.flags, self.eps,
                         self.attn_scale))
        if self.att_tiles:
            attend = Launch(atl.attend_tiles(p.head_dim), (-(-n // atl.QT), p.n_head), atl.THREADS, 0,
                            (b.qkv, b.k_cache[i], b.v_cache[i], b.state, self.w.window[i], n, b.att))
        else:
            attend = Launch(at.attend, (n, p.n_head), kn.THREADS, 0,
                            (b.qkv, b.k_cache[i], b.v_cache[i], b.state, self.w.window[i], b.scores, b.att))
        return [finish, attend]

    def _post_norm(self, name: str, i: int, n: int) -> list[Launch]:
        """gemma3: x += rmsnorm(h) * w after attention and FFN (others add straight into x)."""
        if not self.params.spec.post_norms:
            return []
        return [Launch(kn.add_rmsnorm, (n,), kn.ROW_THREADS, 0, (self.b.x, self.b.h, self.w.vec[name][i], self.eps))]

    # ---- decode: one token, a fixed list of launches -------------------------------------------------
    def _matvec(self, mats, x, up, norm_w, prep, out, accumulate, softcap=0.0, ss_in=-1, ss_out=-1,
                int_dots=False) -> Launch:
        grid = mv.launch_blocks(mats.rows, kn.MATVEC_WARPS, self.sm_count, self.per_sm)
        pairs = self.row_pairs == "1" or (self.row_pairs == "auto" and mats.rows >= 2 * grid * kn.MATVEC_WARPS)
        kernel = (mp.matvec_int_pairs if pairs else mv.matvec_int) if int_dots else mv.matvec
        return Launch(kernel, (grid,), kn.MATVEC_WARPS * kn.WARP, mv.shared_bytes(x.shape[1], int_dots),
                      (mats.matvec, *mv.matvec_args(self.w.views), x, up, norm_w, self.eps, prep, out, accumulate,
                       softcap, self.b.sumsq, ss_in, ss_out))

    def _decode_attention(self, i: int) -> Launch:
        p, b, v = self.params, self.b, self.w.vec
        shape = (p.n_head, p.n_head_kv, p.head_dim, p.rope_dims // 2,
                 int(p.spec.qkv_bias), int(p.spec.qk_norm), int(p.spec.rope_neox))
        return Launch(at.attend_decode(p.head_dim), (p.n_head,), at.ATT_WARPS * kn.WARP, 0,
                      (b.qkv[0:1], v["bias"][i], v["q_norm"][i], v["k_norm"][i], v["inv_freq"][i],
                       self.w.pos_scale[i], b.state, b.k_cache[i], b.v_cache[i], *shape, self.eps,
                       self.attn_scale, self.w.window[i], b.att[0:1]))

    def _decode_launches(self) -> list[Launch]:
        """The step's launches. Norms of the residual x take x's sum of squares from b.sumsq: slot 2i is
        x entering layer i (written by embed, then by the previous layer's down matvec), 2i + 1 x after
        layer i's attention (written by wo), 2 n_layer the final x; the matvecs that read x normalize it
        without a reduction of their own first (one dependent round trip less per launch)."""
        p, b, w, v = self.params, self.b, self.w, self.w.vec
        one = slice(0, 1)
        x, h, qkv, att, gu = b.x[one], b.h[one], b.qkv[one], b.att[one], b.gu[one]
        gate, up = gu[:, :p.n_ff], gu[:, p.n_ff:]
        post, ss, ints = p.spec.post_norms, self.sumsq_norms, self.int_dots
        norm = kn.PREP_NORM_SS if ss else kn.PREP_NORM
        act = kn.PREP_GELU if self.gelu else kn.PREP_SILU
        plan = [Launch(kn.embed, (1,), kn.THREADS, 0, (b.state[0:1], w.embed, *w.views.args(),
                                                       np.float32(p.embed_scale), x, b.sumsq))]
        for i in range(p.n_layer):
            plan.append(self._matvec(w.qkv[i], x, x, v["attn_norm"][i], norm, qkv, False, ss_in=2 * i, int_dots=ints))
            plan.append(self._decode_attention(i))
            plan.append(self._matvec(w.wo[i], att, att, v["attn_norm"][i], kn.PREP_COPY, h if post else x, not post,
                                     ss_out=2 * i + 1 if ss else -1, int_dots=ints))
            plan += self._post_norm("attn_post", i, 1)
            plan.append(self._matvec(w.gate_up[i], x, x, v["ffn_norm"][i], norm, gu, False, ss_in=2 * i + 1,
                                     int_dots=ints))
            plan.append(self._matvec(w.down[i], gate, up, v["ffn_norm"][i], act, h if post else x, not post,
                                     ss_out=2 * i + 2 if ss else -1, int_dots=ints))
            plan += self._post_norm("ffn_post", i, 1)
        plan.append(self._matvec(w.output, x, x, v["output_norm"][0], norm, b.logits[one], False, self.softcap,
                                 ss_in=2 * p.n_layer, int_dots=ints))
        plan.append(Launch(at.argmax_token, (1,), kn.ARGMAX_THREADS, 0, (b.logits[one], b.state)))
        return plan

    @property
    def launches_per_token(self) -> int:
        return len(self.replay.launches)

    def _fit_grids(self) -> None:
        """After the first (compiling) run: matvec grids cut to the blocks an SM holds at the compiled
        registers, so that a grid-striding launch runs in one wave (at 80 registers 3 blocks of 256 fit,
        and a 4-an-SM grid ran its last quarter as a second wave)."""
        fitted = []
        for lc in self.replay.launches:
            if lc.kernel in (mv.matvec, mv.matvec_int, mp.matvec_int_pairs) and lc.grid[0] > 1:
                per_sm = mv.blocks_that_fit(lc.kernel, lc.block, self.per_sm)
                rows = int(lc.args[0].copy_to_host()[:, 1].sum())
                lc = replace(lc, grid=(mv.launch_blocks(rows, lc.block // kn.WARP, self.sm_count, per_sm),))
            fitted.append(lc)
        self.replay.launches = fitted

    def _step(self, token: int, pos: int) -> None:
        self.host_state[0], self.host_state[1] = token, pos
        stream = self.replay.stream
        self.b.state.copy_to_device(self.host_state, stream=stream)
        if not self._captured:                       # first token: compile and load, then capture
            run_all(self.replay.launches, stream)
            self._fit_grids()
            stream.synchronize()
            self.replay.capture()
            self._captured = True
        self.replay.run()

    def decode(self, token: int, pos: int) -> np.ndarray:
        """Logits [1, n_vocab] of `token` at `pos` (a host buffer the next call overwrites)."""
        self._step(token, pos)
        self.b.logits[0:1].copy_to_host(self.host_logits, stream=self.replay.stream)
        self.replay.stream.synchronize()
        return self.host_logits

    def next_token(self, token: int, pos: int) -> int:
        """The greedy next token after `token` at `pos`: the argmax computed on the device."""
        self._step(token, pos)
        self.b.state.copy_to_host(self.host_state, stream=self.replay.stream)
        self.replay.stream.synchronize()
        return int(self.host_state[2])

    # ---- prompts: batched kernels, launched from Python per pass -------------------------------------
    def _matmul(self, mats, src, n: int, out, accumulate: bool, prep: int = kn.PREP_COPY, norm_w=None,
                softcap: float = 0.0) -> list[Launch]:
        """out (+)= prep(src) . W^T for n tokens. prep: PREP_COPY (src as it is), PREP_NORM (rmsnorm(src) *
        norm_w), PREP_SILU (act(gate) * up, src = [gate | up]). With int dots and an unpacker for every
        format of the launch: one quantize_rows (prep fused) and matmul_int's int8 tiles; else the prep
        kernel into a float buffer and kernels.matmul's float tiles."""
        b, p = self.b, self.params
        cols = mats.cols
        if self.prompt_int and all(k in mi.INT_KINDS for k in mats.kinds):
            w = norm_w if norm_w is not None else self.w.vec["attn_norm"][0]
            quant = Launch(mi.quantize_rows, (n,), mi.QUANT_THREADS, 0,
                           (src, cols, prep, w, self.eps, self.gelu, b.xq, b.xd, b.xs))
            kernel, tile_tokens = mi.kernel(n, mats.tiles, self.sm_count, self.mm_tokens)
            return [quant, Launch(kernel, (-(-n // tile_tokens), mats.tiles), mi.THREADS, 0,
                                  (mats.matmul, *mv.matvec_args(self.w.views)[:5], b.xq, b.xd, b.xs, n, out,
                                   accumulate, softcap))]
        plan, x = [], src
        if prep == kn.PREP_NORM:
            plan, x = [Launch(kn.rmsnorm_rows, (n,), kn.ROW_THREADS, 0, (src, norm_w, self.eps, b.h))], b.h
        elif prep == kn.PREP_SILU:
            plan = [Launch(kn.gate_act, (-(-p.n_ff // kn.ROW_THREADS), n), kn.ROW_THREADS, 0, (src, p.n_ff, self.gelu))]
            x = src[:, :p.n_ff]
        grid = (-(-n // kn.TILE_TOKENS), mats.tiles)
        return plan + [Launch(kn.matmul, grid, 256, 0, (mats.matmul, *self.w.views.args(), x, n, out, accumulate,
                                                        softcap))]

    def _prompt_launches(self, n: int) -> list[Launch]:
        p, b, w, v = self.params, self.b, self.w, self.w.vec
        post = p.spec.post_norms
        norm, act = kn.PREP_NORM, kn.PREP_SILU
        plan = [Launch(kn.embed, (n,), kn.THREADS, 0, (b.ids, w.embed, *w.views.args(), np.float32(p.embed_scale),
                                                       b.x, b.sumsq))]
        for i in range(p.n_layer):
            plan += self._matmul(w.qkv[i], b.x, n, b.qkv, False, norm, v["attn_norm"][i])
            plan += self._attention_launches(i, n)
            plan += self._matmul(w.wo[i], b.att, n, b.h if post else b.x, not post)
            plan += self._post_norm("attn_post", i, n)
            plan += self._matmul(w.gate_up[i], b.x, n, b.gu, False, norm, v["ffn_norm"][i])
            plan += self._matmul(w.down[i], b.gu, n, b.h if post else b.x, not post, act)
            plan += self._post_norm("ffn_post", i, n)
        return plan

    def _logit_launches(self, n: int, all_logits: bool) -> list[Launch]:
        b, w, v = self.b, self.w, self.w.vec
        if not all_logits:                            # the last token's row only, as one matvec
            last = b.x[n - 1:n]
            return [self._matvec(w.output, last, last, v["output_norm"][0], kn.PREP_NORM, b.logits[0:1], False,
                                 self.softcap)]
        return self._matmul(w.output, b.x, n, b.logits, False, kn.PREP_NORM, v["output_norm"][0], self.softcap)

    def _prompt_pass(self, n: int, stream) -> None:
        """The prompt launches for n tokens: the first time (per setting) launched one by one, which
        compiles and loads them, and captured; later replayed as one graph."""
        if not self.prompt_graph:
            run_all(self._prompt_launches(n), stream)
            return
        key = (n, self.prompt_int, self.att_tiles, self.mm_tokens)
        replay = self._prompt_graphs.get(key)
        if replay is not None:
            replay.run()
            return
        replay = Replay(self._prompt_launches(n), share=self.replay)
        run_all(replay.launches, stream)
        stream.synchronize()
        replay.capture()
        if len(self._prompt_graphs) >= PROMPT_GRAPHS:
            self._prompt_graphs.pop(next(iter(self._prompt_graphs)))
        self._prompt_graphs[key] = replay

    def forward(self, ids: np.ndarray, pos: int, logits: np.ndarray, all_logits: bool) -> np.ndarray:
        """The prompt `ids` at positions pos.. (BATCH tokens a pass) into logits (host [n or 1, n_vocab])."""
        stream = self.replay.stream
        for start in range(0, len(ids), BATCH):
            chunk = np.ascontiguousarray(ids[start:start + BATCH], np.int64)
            n, last = len(chunk), start + BATCH >= len(ids)
            self.b.ids[:n].copy_to_device(chunk, stream=stream)
            self.host_state[1] = pos + start
            self.b.state.copy_to_device(self.host_state, stream=stream)
            self._prompt_pass(n, stream)
            if all_logits or last:
                run_all(self._logit_launches(n, all_logits), stream)
                rows = n if all_logits else 1
                target = logits[start:start + n] if all_logits else logits
                self.b.logits[:rows].copy_to_host(target, stream=stream)
            stream.synchronize()
        return logits
