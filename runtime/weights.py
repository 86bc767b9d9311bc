"""Model weights as views into the memory-mapped GGUF file: matrices stay in their quantized blocks.

    w = load_weights(gguf, params)      # ModelWeights: token_embd, output, output_norm, layers[i].<role>
    matvec(w.layers[0].wq, x, out)      # one token: fused dequantize-and-dot kernel
    linear(w.layers[0].wq, X, out, w.tile)   # many tokens: integer dots with 8-bit activations (m.matmat),
                                        # or float: dequantize a tile of rows, then BLAS (runtime/blas.py)
    embed(w.token_embd, ids, out)       # rows of the embedding table as float32

Only 1-D tensors (norm weights, biases, rope frequency factors) are converted to float32 arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.blas import matmul_split
from ggq.runtime.kernels import WEIGHT_KERNELS, weight_kernels
from ggq.runtime.kernels.actquant import quantize_prompt
from ggq.runtime.kernels.dot_table import PROMPT_TYPES, dot_kernels
from ggq.runtime.kernels.float_tile import FLOAT_MATMAT
from ggq.runtime.params import TENSORS, ModelParams

TILE_ROWS = 2048  # rows dequantized at a time for prefill matmuls


@dataclass
class Matrix:
    name: str
    type_name: str
    rows: int
    cols: int
    data: np.ndarray           # [rows, cols] float32 (F32), [rows, cols] uint16 (F16/BF16), or blocks uint8
    matvec: Callable
    decode_rows: Callable
    offset: int = 0            # byte offset of the data in the file (the compiled decode step's table)
    # the prompt kernel (many tokens at once): integer dots with activations quantized to act_format
    # (kernels/dot_table), or float32 for the float types (act_format None; kernels/float_tile); None
    # where prompts run as dequantized tiles through BLAS (block types with exact)
    act_format: str | None = None
    matmat: Callable | None = None


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: Matrix
    wk: Matrix
    wv: Matrix
    wo: Matrix
    ffn_norm: np.ndarray
    ffn_gate: Matrix
    ffn_up: Matrix
    ffn_down: Matrix
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None
    k_norm: np.ndarray | None = None
    attn_post_norm: np.ndarray | None = None
    ffn_post_norm: np.ndarray | None = None


@dataclass
class ModelWeights:
    token_embd: Matrix
    output: Matrix
    output_norm: np.ndarray
    rope_freqs: np.ndarray | None
    layers: list[Layer] = field(default_factory=list)
    tile: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # prefill scratch (flat)


def _matrix_of(gguf, name: str, rows: int, cols: int, integer_prompts: bool) -> Matrix:
    info = gguf.tensors.get(name)
    if info is None:
        raise GGQError(f"missing tensor {name}")
    if info.shape != (rows, cols):
        raise GGQError(f"tensor {name} has shape {info.shape}, expected {(rows, cols)}")
    if info.qtype.name not in WEIGHT_KERNELS:
        raise GGQError(f"tensor {name} has type {info.qtype.name}, which the runtime cannot compute with")
    matvec, decode_rows, view = weight_kernels(info.qtype.name)
    m = Matrix(name, info.qtype.name, rows, cols, gguf.raw(name).view(view), matvec, decode_rows, info.offset)
    if info.qtype.name in FLOAT_MATMAT:
        m.matmat = FLOAT_MATMAT[info.qtype.name]
    elif integer_prompts and info.qtype.name in PROMPT_TYPES:
        m.act_format, _, m.matmat = dot_kernels(info.qtype.name)
    return m


def _vector(gguf, name: str, size: int, required: bool = True) -> np.ndarray | None:
    info = gguf.tensors.get(name)
    if info is None:
        if required:
            raise GGQError(f"missing tensor {name}")
        return None
    if info.shape != (size,):
        raise GGQError(f"tensor {name} has shape {info.shape}, expected {(size,)}")
    if info.qtype.name not in ("F32", "F16", "BF16"):
        raise GGQError(f"tensor {name} has type {info.qtype.name}; 1-D tensors must be float")
    out = np.empty((1, size), np.float32)
    _, decode_rows, view = weight_kernels(info.qtype.name)
    decode_rows(gguf.raw(name).reshape(1, -1).view(view), 0, out)
    return out[0]


def _layer(gguf, p: ModelParams, i: int, integer_prompts: bool) -> Layer:
    def name(role: str) -> str:
        return TENSORS[role].format(i=i)

    def matrix(name, rows, cols):
        return _matrix_of(gguf, name, rows, cols, integer_prompts)

    q_size, kv_size, spec = p.n_head * p.head_dim, p.n_head_kv * p.head_dim, p.spec
    return Layer(
        attn_norm=_vector(gguf, name("attn_norm"), p.n_embd),
        wq=matrix(name("wq"), q_size, p.n_embd), wk=matrix(name("wk"), kv_size, p.n_embd),
        wv=matrix(name("wv"), kv_size, p.n_embd), wo=matrix(name("wo"), p.n_embd, q_size),
        ffn_norm=_vector(gguf, name("ffn_norm"), p.n_embd),
        ffn_gate=matrix(name("ffn_gate"), p.n_ff, p.n_embd),
        ffn_up=matrix(name("ffn_up"), p.n_ff, p.n_embd),
        ffn_down=matrix(name("ffn_down"), p.n_embd, p.n_ff),
        bq=_vector(gguf, name("bq"), q_size, spec.qkv_bias), bk=_vector(gguf, name("bk"), kv_size, spec.qkv_bias),
        bv=_vector(gguf, name("bv"), kv_size, spec.qkv_bias),
        q_norm=_vector(gguf, name("q_norm"), p.head_dim, spec.qk_norm),
        k_norm=_vector(gguf, name("k_norm"), p.head_dim, spec.qk_norm),
        attn_post_norm=_vector(gguf, name("attn_post_norm"), p.n_embd, spec.post_norms),
        ffn_post_norm=_vector(gguf, name("ffn_post_norm"), p.n_embd, spec.post_norms),
    )


def load_weights(gguf, p: ModelParams, integer_prompts: bool = True) -> ModelWeights:
    """Every tensor the model needs, checked against the hyperparameters; nothing is dequantized.
    integer_prompts: prompts multiply block weights with 8-bit activations, as decode and llama.cpp do
    (else dequantized float32 tiles through BLAS, as `exact` asks)."""
    token_embd = _matrix_of(gguf, TENSORS["token_embd"], p.n_vocab, p.n_embd, integer_prompts)
    has_output = TENSORS["output"] in gguf.tensors
    output = _matrix_of(gguf, TENSORS["output"], p.n_vocab, p.n_embd, integer_prompts) if has_output else token_embd
    w = ModelWeights(token_embd=token_embd, output=output,
                     output_norm=_vector(gguf, TENSORS["output_norm"], p.n_embd),
                     rope_freqs=_vector(gguf, TENSORS["rope_freqs"], p.rope_dims // 2, required=False),
                     layers=[_layer(gguf, p, i, integer_prompts) for i in range(p.n_layer)])
    widest = max(p.n_embd, p.n_ff, p.n_head * p.head_dim)
    w.tile = np.empty(TILE_ROWS * widest, np.float32)
    return w


def matvec(m: Matrix, x: np.ndarray, out: np.ndarray) -> None:
    """out[rows] = m @ x for one float32 vector x[cols]."""
    m.matvec(m.data, x, out)


def matmul(m: Matrix, x: np.ndarray, out: np.ndarray, tile: np.ndarray) -> None:
    """out[T, rows] = x[T, cols] @ m.T; quantized rows are widened a tile at a time into `tile` (flat)."""
    if m.type_name == "F32":
        matmul_split(x, m.data, out)
        return
    step = tile.size // m.cols
    for r0 in range(0, m.rows, step):
        r1 = min(m.rows, r0 + step)
        rows = tile[:(r1 - r0) * m.cols].reshape(r1 - r0, m.cols)
        m.decode_rows(m.data, r0, rows)
        matmul_split(x, rows, out[:, r0:r1])


def linear(m: Matrix, x: np.ndarray, out: np.ndarray, tile: np.ndarray) -> None:
    """out = x @ m.T for x [T, cols]: the matvec kernel for one token; for more, integer dots with 8-bit
    activations where the matrix has them (m.matmat), else dequantized tiles + BLAS."""
    linears((m,), x, (out,), tile)


def linears(ms, x: np.ndarray, outs, tile: np.ndarray) -> None:
    """linear(m, x, out) for several matrices of one input: x is quantized once per activation format."""
    quantized: dict[str, np.ndarray] = {}
    for m, out in zip(ms, outs):
        if m.act_format is not None:  # one token too, so that a row's result does not depend on the batch
            if m.act_format not in quantized:
                quantized[m.act_format] = quantize_prompt(x, m.act_format)
            m.matmat(m.data, quantized[m.act_format], out)
        elif x.shape[0] == 1:
            matvec(m, x[0], out[0])
        elif m.matmat is not None:
            m.matmat(m.data, x, out)
        else:
            matmul(m, x, out, tile)


def embed(m: Matrix, ids: np.ndarray, out: np.ndarray) -> None:
    """out[t] = row ids[t] of the embedding table, as float32."""
    for t, tok in enumerate(ids):
        if not 0 <= tok < m.rows:
            raise GGQError(f"token id {tok} is outside the vocabulary of {m.rows}")
        m.decode_rows(m.data, int(tok), out[t:t + 1])
