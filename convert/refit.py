"""After GPTQ: the blocks' fp16 scales refit to the levels chosen, through the weight's Hessian.

GPTQ fixes a block's scales before its columns are rounded (from values that the earlier blocks'
errors have moved), then picks levels that compensate each other. Given those levels, every value is
linear in its block's fp16 scale fields (v = d·(level term) for Q4_0, v = d·q + m for Q4_1, v = d·sc·q
- dmin·m for Q4_K, ...), so the scales that minimise the whole row's output error
(w - v)ᵀ H (w - v) are one least-squares solve per row, every block of the row together (H couples
them). The levels are then rounded again, with error feedback, on the new grid (gptq.round_on_grid).
A row keeps the new blocks only where its error fell, so a refit never makes a row worse.

    SCALE_FIELDS[type] = byte offsets of the fp16 fields a block's values are linear in (ggml-common.h)
"""
from __future__ import annotations

import numpy as np

from ggq.qtypes import QType

SCALE_FIELDS = {
    "Q4_0": (0,), "Q5_0": (0,), "Q8_0": (0,),
    "Q4_1": (0, 2), "Q5_1": (0, 2),
    "Q4_K": (0, 2), "Q5_K": (0, 2), "Q2_K": (80, 82),
    "Q6_K": (208,), "Q3_K": (108,),
}
_ONE, _ZERO = (np.array([v], np.float16).view(np.uint8) for v in (1.0, 0.0))


def row_errors(w: np.ndarray, blocks: np.ndarray, qt: QType, h: np.ndarray) -> np.ndarray:
    """Each row's (w - v)ᵀ H (w - v) [rows], v the blocks' values."""
    from ggq.quants import dequantize
    e = w - dequantize(blocks, qt).astype(np.float64)
    return np.einsum("ij,ij->i", e @ h, e)


def _levels(blocks: np.ndarray, qt: QType) -> np.ndarray:
    """The stored levels q of every value (v = a·q + b), [rows·blocks, block_size]; 0 where a = 0."""
    from ggq.convert.block_grids import GRIDS
    from ggq.quants import dequantize
    a, b = GRIDS[qt.name].affine(blocks)
    v = dequantize(blocks, qt).reshape(a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a != 0, np.rint((v - b) / a), 0.0)


def _features(blocks: np.ndarray, qt: QType, rows: int) -> np.ndarray:
    """[fields, rows, cols]: each value's derivative by each fp16 scale field of its block (the value
    with that field 1 and the others 0), the levels and integer sub-block scales as stored."""
    from ggq.convert.block_grids import GRIDS
    flat = blocks.reshape(-1, qt.type_size)
    q = _levels(flat, qt)
    fields = SCALE_FIELDS[qt.name]
    out = np.empty((len(fields), rows, blocks.shape[1] // qt.type_size * qt.block_size))
    for i, at in enumerate(fields):
        probe = flat.copy()
        for other in fields:
            probe[:, other:other + 2] = _ONE if other == at else _ZERO
        a, b = GRIDS[qt.name].affine(probe)
        out[i] = (a * q + b).reshape(rows, -1)
    return out


def _normal_equations(phi: np.ndarray, w: np.ndarray, h: np.ndarray, bs: int):
    """(A [rows, K, K], c [rows, K]) of min_θ (w - Φθ)ᵀ H (w - Φθ) per row, K = blocks · fields,
    unknown k = block · fields + field."""
    n_f, rows, cols = phi.shape
    nb = cols // bs
    c = (phi * (w @ h)[None]).reshape(n_f, rows, nb, bs).sum(-1).transpose(1, 2, 0).reshape(rows, -1)
    a = np.empty((rows, nb, n_f, nb, n_f))
    for g in range(nb):
        span = slice(g * bs, (g + 1) * bs)
        for f in range(n_f):
            through_h = phi[f][:, span] @ h[span, :]  # [rows, cols]
            a[:, :, :, g, f] = (phi * through_h[None]).reshape(n_f, rows, nb, bs).sum(-1).transpose(1, 2, 0)
    return a.reshape(rows, nb * n_f, nb * n_f), c


def refit_scales(w: np.ndarray, blocks: np.ndarray, qt: QType, h: np.ndarray) -> np.ndarray:
    """Blocks with each row's fp16 scale fields set by the H-weighted least-squares fit to w, the levels
    kept (a new array)."""
    rows = w.shape[0]
    phi = _features(blocks, qt, rows)
    a, c = _normal_equations(phi, w, h, qt.block_size)
    diag = np.einsum("rkk->rk", a)
    # a field no value depends on (a block of zero levels) gets a unit equation: θ = 0, harmless
    dead = diag <= 1e-12 * np.maximum(diag.max(axis=1, keepdims=True), 1e-300)
    a[np.nonzero(dead)[0], np.nonzero(dead)[1], np.nonzero(dead)[1]] = 1.0
    c[dead] = 0.0
    theta = np.linalg.solve(a, c[..., None])[..., 0]
    theta = np.clip(theta, -65504.0, 65504.0).astype(np.float16)
    out = blocks.copy()
    flat = out.reshape(-1, qt.type_size)
    fields = SCALE_FIELDS[qt.name]
    per_block = theta.reshape(-1, len(fields))
    for i, at in enumerate(fields):
        flat[:, at:at + 2] = np.ascontiguousarray(per_block[:, i]).view(np.uint8).reshape(-1, 2)
    return out
