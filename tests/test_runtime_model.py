"""The runtime's forward pass on tiny random models of each architecture, written as F32 GGUF files.

Oracle: an independent float64 numpy forward pass written below from the published architecture math in
the Hugging Face layout (rotate-half rope, HF q/k row order, Gemma's (1 + w) norms). The GGUF writer
applies what llama.cpp's converter does (llama q/k row permutation, Gemma norm weights + 1), so the test
also checks that the runtime reads those conventions back correctly.
"""
from __future__ import annotations

import numpy as np
import pytest

from ggq.gguf_read import open_gguf
from ggq.gguf_write import TensorSpec, write_gguf
from ggq.runtime.model import Transformer

VOCAB, EMBD, HEADS, KV_HEADS, FF = 50, 64, 4, 2, 96

CONFIGS = {
    # llama3-style rope frequency factors exercise the rope_freqs tensor
    "llama": dict(head_dim=16, layers=2, rope_base=10000.0, neox=False, bias=False, qk_norm=False,
                  gemma=False, tied=False, freq_factors=True, window=0, pattern=0, softcap=0.0),
    "qwen2": dict(head_dim=16, layers=2, rope_base=1e6, neox=True, bias=True, qk_norm=False,
                  gemma=False, tied=True, freq_factors=False, window=0, pattern=0, softcap=0.0),
    # layer 0 slides over 3 positions with rope base 10000, layer 1 is global with rope base 1e6
    "gemma3": dict(head_dim=32, layers=2, rope_base=1e6, neox=True, bias=False, qk_norm=True,
                   gemma=True, tied=True, freq_factors=False, window=3, pattern=2, softcap=30.0),
}


def random_weights(cfg: dict, rng: np.random.Generator) -> dict:
    """HF-layout parameters (float64)."""
    hd, L = cfg["head_dim"], cfg["layers"]

    def m(*shape, scale=0.2):
        return rng.standard_normal(shape) * scale

    w = {"embed": m(VOCAB, EMBD, scale=1.0), "norm": 1 + m(EMBD, scale=0.1), "layers": []}
    if not cfg["tied"]:
        w["lm_head"] = m(VOCAB, EMBD)
    if cfg["freq_factors"]:
        w["freq_factors"] = rng.uniform(1.0, 8.0, hd // 2)
    for _ in range(L):
        layer = {"q": m(HEADS * hd, EMBD), "k": m(KV_HEADS * hd, EMBD), "v": m(KV_HEADS * hd, EMBD),
                 "o": m(EMBD, HEADS * hd), "gate": m(FF, EMBD), "up": m(FF, EMBD), "down": m(EMBD, FF),
                 "in_norm": 1 + m(EMBD, scale=0.1), "ffn_norm": 1 + m(EMBD, scale=0.1)}
        if cfg["bias"]:
            layer.update(bq=m(HEADS * hd), bk=m(KV_HEADS * hd), bv=m(KV_HEADS * hd))
        if cfg["qk_norm"]:
            layer.update(q_norm=m(hd, scale=0.1), k_norm=m(hd, scale=0.1))
        if cfg["gemma"]:
            layer.update(post_attn=m(EMBD, scale=0.1), post_ffn=m(EMBD, scale=0.1))
        w["layers"].append(layer)
    return w


# ---- the oracle: HF-layout math in float64 -------------------------------------------------------
def rms(x, weight, eps, gemma):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * (1.0 + weight) if gemma else y * weight


def rope_rotate_half(x, positions, base, factors):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2) / d)
    if factors is not None:
        inv_freq = inv_freq / factors
    angles = positions[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :]
    rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * cos + rotated * sin


def oracle_logits(cfg: dict, w: dict, tokens: list[int], eps: float) -> np.ndarray:
    hd, gemma, n = cfg["head_dim"], cfg["gemma"], len(tokens)
    positions = np.arange(n, dtype=np.float64)
    x = w["embed"][tokens] * (np.sqrt(EMBD) if gemma else 1.0)
    for i, lw in enumerate(w["layers"]):
        sliding = cfg["pattern"] > 0 and i % cfg["pattern"] < cfg["pattern"] - 1
        h = rms(x, lw["in_norm"], eps, gemma)
        q, k, v = h @ lw["q"].T, h @ lw["k"].T, h @ lw["v"].T
        if cfg["bias"]:
            q, k, v = q + lw["bq"], k + lw["bk"], v + lw["bv"]
        q, k, v = q.reshape(n, HEADS, hd), k.reshape(n, KV_HEADS, hd), v.reshape(n, KV_HEADS, hd)
        if cfg["qk_norm"]:
            q, k = rms(q, lw["q_norm"], eps, gemma), rms(k, lw["k_norm"], eps, gemma)
        base = 10000.0 if sliding else cfg["rope_base"]
        q = rope_rotate_half(q, positions, base, w.get("freq_factors"))
        k = rope_rotate_half(k, positions, base, w.get("freq_factors"))
        rep = HEADS // KV_HEADS
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        qi, ki = np.arange(n)[:, None], np.arange(n)[None, :]
        allowed = (ki <= qi) & ((qi - ki < cfg["window"]) if sliding else True)
        scores = np.where(allowed[None], scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", p, v).reshape(n, HEADS * hd) @ lw["o"].T
        x = x + (rms(o, lw["post_attn"], eps, gemma) if gemma else o)
        h = rms(x, lw["ffn_norm"], eps, gemma)
        g = h @ lw["gate"].T
        if gemma:
            act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
        else:
            act = g / (1 + np.exp(-g))
        f = (act * (h @ lw["up"].T)) @ lw["down"].T
        x = x + (rms(f, lw["post_ffn"], eps, gemma) if gemma else f)
    x = rms(x, w["norm"], eps, gemma)
    logits = x @ (w["embed"] if cfg["tied"] else w["lm_head"]).T
    if cfg["softcap"]:
        logits = cfg["softcap"] * np.tanh(logits / cfg["softcap"])
    return logits


# ---- GGUF writing, as llama.cpp's converter lays the tensors out ----------------------------------
def permute_for_gguf(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(arch: str, cfg: dict, w: dict) -> dict[str, np.ndarray]:
    norm = (lambda a: a + 1.0) if cfg["gemma"] else (lambda a: a)  # Gemma: converter stores 1 + w
    perm = (lambda a, h: permute_for_gguf(a, h)) if arch == "llama" else (lambda a, h: a)
    t = {"token_embd.weight": w["embed"], "output_norm.weight": norm(w["norm"])}
    if not cfg["tied"]:
        t["output.weight"] = w["lm_head"]
    if cfg["freq_factors"]:
        t["rope_freqs.weight"] = w["freq_factors"]
    for i, lw in enumerate(w["layers"]):
        b = f"blk.{i}."
        t.update({b + "attn_norm.weight": norm(lw["in_norm"]), b + "attn_q.weight": perm(lw["q"], HEADS),
                  b + "attn_k.weight": perm(lw["k"], KV_HEADS), b + "attn_v.weight": lw["v"],
                  b + "attn_output.weight": lw["o"], b + "ffn_norm.weight": norm(lw["ffn_norm"]),
                  b + "ffn_gate.weight": lw["gate"], b + "ffn_up.weight": lw["up"],
                  b + "ffn_down.weight": lw["down"]})
        if cfg["bias"]:
            t.update({b + "attn_q.bias": lw["bq"], b + "attn_k.bias": lw["bk"], b + "attn_v.bias": lw["bv"]})
        if cfg["qk_norm"]:
            t.update({b + "attn_q_norm.weight": norm(lw["q_norm"]), b + "attn_k_norm.weight": norm(lw["k_norm"])})
        if cfg["gemma"]:
            t.update({b + "post_attention_norm.weight": norm(lw["post_attn"]),
                      b + "post_ffw_norm.weight": norm(lw["post_ffn"])})
    return {name: a.astype(np.float32) for name, a in t.items()}


def write_model(path, arch: str, cfg: dict, w: dict, eps: float) -> None:
    meta = {"general.architecture": arch, f"{arch}.block_count": cfg["layers"],
            f"{arch}.context_length": 64, f"{arch}.embedding_length": EMBD,
            f"{arch}.feed_forward_length": FF, f"{arch}.attention.head_count": HEADS,
            f"{arch}.attention.head_count_kv": KV_HEADS, f"{arch}.rope.freq_base": cfg["rope_base"],
            f"{arch}.attention.layer_norm_rms_epsilon": eps,
            f"{arch}.attention.key_length": cfg["head_dim"], f"{arch}.attention.value_length": cfg["head_dim"]}
    if cfg["window"]:
        meta[f"{arch}.attention.sliding_window"] = cfg["window"]
        meta[f"{arch}.attention.sliding_window_pattern"] = cfg["pattern"]
    if cfg["softcap"]:
        meta[f"{arch}.final_logit_softcapping"] = cfg["softcap"]
    tensors = gguf_tensors(arch, cfg, w)
    specs = [TensorSpec(name, a.shape, "F32") for name, a in tensors.items()]
    write_gguf(path, meta, specs, iter(tensors.values()))


def run_against_oracle(arch: str, tmp_path, **options) -> tuple[np.ndarray, np.ndarray]:
    """The arch's tiny model written as F32 GGUF and run by Transformer(**options) on 9 tokens (a
    prefill of 6, then 3 decode steps): (ggq's logits, the float64 oracle's)."""
    cfg, eps = CONFIGS[arch], 1e-6
    w = random_weights(cfg, np.random.default_rng(len(arch)))
    path = tmp_path / f"{arch}.gguf"
    write_model(path, arch, cfg, w, eps)
    tokens = [3, 17, 42, 0, 8, 8, 49, 21, 5]
    with open_gguf(path) as gguf:
        tf = Transformer(gguf, ctx_size=16, **options)
        prefill = tf.forward(tokens[:6], 0, all_logits=True)
        steps = [tf.decode(t, 6 + j)[0].copy() for j, t in enumerate(tokens[6:])]
    return np.vstack([prefill] + steps), oracle_logits(cfg, w, tokens, eps)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_forward_matches_numpy_oracle(arch, tmp_path):
    got, expected = run_against_oracle(arch, tmp_path, n_batch=4)  # prefill of 6 runs as batches of 4 + 2
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * scale + 1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_match_llamacpp_mode_matches_numpy_oracle(arch, tmp_path):
    """The match_llamacpp step (ggml's ops, F16 KV cache, flash attention, prompt a token at a time) on
    the same tiny models: close to the float64 oracle, within the F16 rounding of q, k and v."""
    got, expected = run_against_oracle(arch, tmp_path, match_llamacpp=True)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3 * scale)  # measured: 9e-4 (llama), 8e-4 (qwen2)


def test_match_llamacpp_mode_refuses_gemma3(tmp_path):
    from ggq.errors import GGQError
    cfg = CONFIGS["gemma3"]
    path = tmp_path / "gemma3.gguf"
    write_model(path, "gemma3", cfg, random_weights(cfg, np.random.default_rng(0)), 1e-6)
    with open_gguf(path) as gguf, pytest.raises(GGQError, match="match_llamacpp supports llama-style"):
        Transformer(gguf, ctx_size=16, match_llamacpp=True)


def _quantized_model(path, arch: str, qtype: str, eps: float):
    """The arch's tiny model with every 2-D weight stored as qtype; returns the HF-layout weights as
    the gguf package dequantizes them (the oracle's view of the file)."""
    import gguf as gguf_py

    from ggq.quants import quantize
    cfg = CONFIGS[arch]
    w = random_weights(cfg, np.random.default_rng(7))
    tensors = gguf_tensors(arch, cfg, w)
    blocks = {n: quantize(a, qtype) if a.ndim == 2 else a for n, a in tensors.items()}
    specs = [TensorSpec(n, a.shape, qtype if a.ndim == 2 else "F32") for n, a in tensors.items()]
    meta_path = path.with_suffix(".f32.gguf")
    write_model(meta_path, arch, cfg, w, eps)  # same metadata; only the tensor types differ below
    with open_gguf(meta_path) as f:
        meta = {k: v for k, v in f.metadata.items() if not k.startswith("GGUF.")}
    write_gguf(path, meta, specs, iter(blocks.values()))
    seen = {n: gguf_py.quants.dequantize(b, gguf_py.GGMLQuantizationType[qtype]).astype(np.float64)
            if b.dtype == np.uint8 else b.astype(np.float64) for n, b in blocks.items()}
    return cfg, w, seen


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_decode_step_matches_oracle_on_the_dequantized_weights(qtype, tmp_path):
    """The compiled one-token step on quantized weights, against the float64 oracle run on the weights
    as gguf-py dequantizes them. exact=True (float activations) must agree to float32 rounding; the
    default path (activations rounded to 8 bits, as llama.cpp does) within what that rounding costs."""
    arch, eps = "llama", 1e-6
    path = tmp_path / f"{qtype}.gguf"
    cfg, w, seen = _quantized_model(path, arch, qtype, eps)
    for i, lw in enumerate(w["layers"]):  # the oracle's weights: what the file holds, in HF row order
        b = f"blk.{i}."
        lw.update(q=unpermute(seen[b + "attn_q.weight"], HEADS), k=unpermute(seen[b + "attn_k.weight"], KV_HEADS),
                  v=seen[b + "attn_v.weight"], o=seen[b + "attn_output.weight"], gate=seen[b + "ffn_gate.weight"],
                  up=seen[b + "ffn_up.weight"], down=seen[b + "ffn_down.weight"])
    w["embed"], w["lm_head"] = seen["token_embd.weight"], seen["output.weight"]
    tokens = [3, 17, 42, 0, 8, 8, 49]
    expected = oracle_logits(cfg, w, tokens, eps)[-3:]
    scale = np.abs(expected).max()
    for exact, tol in ((True, 2e-5), (False, 3e-2)):
        with open_gguf(path) as gguf:
            tf = Transformer(gguf, ctx_size=16, n_batch=4, exact=exact)
            tf.forward(tokens[:4], 0)
            got = np.vstack([tf.decode(t, 4 + j)[0].copy() for j, t in enumerate(tokens[4:])])
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol * scale + 1e-5, err_msg=f"exact={exact}")



def test_step_compiled_for_its_kinds_gives_the_all_kinds_bits(tmp_path):
    """The decode step compiles the kernels of its model's weight kinds only (kernels/step.kinds_present:
    None for the others, whose branches Numba drops). Same logits, bit for bit, as the step with every
    kind's branch kept; and the kinds it keeps are the file's (the gguf package's reading of it)."""
    import gguf as gguf_py

    from ggq.runtime.kernels.step import ALL_KINDS, KINDS
    path = tmp_path / "Q4_1.gguf"
    _quantized_model(path, "llama", "Q4_1", 1e-6)
    file_kinds = {t.tensor_type.name for t in gguf_py.GGUFReader(path).tensors if len(t.shape) == 2}
    logits = []
    for everything in (False, True):
        with open_gguf(path) as gguf:
            tf = Transformer(gguf, ctx_size=16, n_batch=4)
            tf.forward([3, 17, 42], 0)
            step = tf.compiled_step()
            has = step.flags[-1]
            assert {KINDS[i] for i, flag in enumerate(has) if flag} == file_kinds
            if everything:
                step.flags = step.flags[:-1] + (ALL_KINDS,)
            logits.append(tf.decode(5, 3)[0].copy())
    assert np.array_equal(logits[0], logits[1])

def unpermute(w, n_head):
    """Inverse of permute_for_gguf: interleaved pairs -> HF rotate-half rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
