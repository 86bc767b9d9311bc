"""The model on the GPU: the file's bytes uploaded once (matrices stay in their quantized blocks), segment
tables describing each launch's matrices, and the per-layer vectors stacked as [n_layer, size] arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from ggq.errors import GGQError
from ggq.runtime.cuda.kernels import TILE_ROWS
from ggq.runtime.cuda.quant import SUPPORTED, UNIT
from ggq.runtime.decode import _stack
from ggq.runtime.kernels.step import KINDS

DEVICE = "--device cuda"


@dataclass(frozen=True)
class Views:
    """The uploaded file as bytes, signed bytes, halves and floats (one allocation), and as 16- and 32-bit
    words for the decode matvec's word loads."""
    u8: object
    i8: object
    f16: object
    f32: object
    u16: object
    u32: object

    def args(self) -> tuple:
        return self.u8, self.i8, self.f16, self.f32


def upload_file(buffer: np.ndarray) -> Views:
    """The whole memory-mapped file, padded to 4 bytes, so tensor offsets stay the file's own."""
    size = -(-buffer.size // 4) * 4
    host = np.zeros(size, np.uint8)
    host[:buffer.size] = buffer
    u8 = cuda.to_device(host)
    return Views(u8, u8.view(np.int8), u8.view(np.float16), u8.view(np.float32), u8.view(np.uint16),
                 u8.view(np.uint32))


def _check(m) -> int:
    if m.type_name not in SUPPORTED:
        raise GGQError(f"tensor {m.name} has type {m.type_name}, which the CUDA backend cannot compute with "
                       f"(it runs {', '.join(SUPPORTED)})", DEVICE)
    if m.cols % UNIT:
        raise GGQError(f"tensor {m.name} has {m.cols} columns, not a multiple of {UNIT}", DEVICE)
    kind = KINDS.index(m.type_name)
    return kind


def segment_table(mats, per_launch_unit: int) -> np.ndarray:
    """int64 [n, 7]: (byte offset, rows, cols, kind, output column, first row or tile, bytes per row) of
    matrices launched together; per_launch_unit is 1 for matvec rows, TILE_ROWS for matmul tiles."""
    rows, first, out_col = [], 0, 0
    for m in mats:
        rows.append((m.offset, m.rows, m.cols, _check(m), out_col, first, m.data.nbytes // m.rows))
        first += -(-m.rows // per_launch_unit)
        out_col += m.rows
    return np.array(rows, np.int64)


@dataclass
class LaunchMats:
    """One launch's matrices for both paths: the device table and how many rows/tiles it spans."""
    matvec: object
    matmul: object
    rows: int
    tiles: int
    kinds: tuple = ()
    cols: int = 0


def _kinds(table: np.ndarray) -> tuple:
    return tuple(int(k) for k in table[:, 3])


def launch_mats(mats) -> LaunchMats:
    vec, mat = segment_table(mats, 1), segment_table(mats, TILE_ROWS)
    return LaunchMats(cuda.to_device(vec), cuda.to_device(mat), int(vec[:, 1].sum()),
                      int(sum(-(-m.rows // TILE_ROWS) for m in mats)), _kinds(vec), int(vec[0, 2]))


class DeviceWeights:
    """Everything per layer the kernels read, on the device."""

    def __init__(self, tf):
        p, w = tf.params, tf.weights
        layers, hd = w.layers, p.head_dim
        self.views = upload_file(tf.gguf.buffer())
        self.qkv = [launch_mats([l.wq, l.wk, l.wv]) for l in layers]
        self.wo = [launch_mats([l.wo]) for l in layers]
        self.gate_up = [launch_mats([l.ffn_gate, l.ffn_up]) for l in layers]
        self.down = [launch_mats([l.ffn_down]) for l in layers]
        self.output = launch_mats([w.output])
        self.embed = cuda.to_device(segment_table([w.token_embd], 1))
        n_q, n_kv = p.n_head * hd, p.n_head_kv * hd
        bias = np.concatenate([_stack(layers, "bq", n_q), _stack(layers, "bk", n_kv), _stack(layers, "bv", n_kv)],
                              axis=1)
        vectors = {"attn_norm": _stack(layers, "attn_norm", p.n_embd), "ffn_norm": _stack(layers, "ffn_norm", p.n_embd),
                   "attn_post": _stack(layers, "attn_post_norm", p.n_embd),
                   "ffn_post": _stack(layers, "ffn_post_norm", p.n_embd), "q_norm": _stack(layers, "q_norm", hd),
                   "k_norm": _stack(layers, "k_norm", hd), "bias": bias, "output_norm": w.output_norm[None, :],
                   "inv_freq": np.array(tf.inv_freq, np.float64)}
        self.vec = {name: cuda.to_device(np.ascontiguousarray(a)) for name, a in vectors.items()}
        self.pos_scale = [float(s) for s in tf.pos_scale]
        self.window = [int(v) for v in tf.window]
