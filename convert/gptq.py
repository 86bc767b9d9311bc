"""Error-compensating rounding into ordinary ggml blocks (GPTQ, Frantar et al. 2022, block form).

A weight W [rows, cols] multiplies inputs x; with H = XᵀX of its calibration inputs the output error
of a rounding Q is tr((W - Q) H (W - Q)ᵀ). GPTQ quantizes columns in order and moves each column's
rounding error onto the columns not yet quantized, in the direction H says they can absorb it.

Blocks are ggml's own: for each block of columns (32 for the legacy types, a 256-wide super-block for
the k-quants) the format's scale search picks the scales from the current, error-updated values, so
llama.cpp reads the result unchanged. The search weights column j by the diagonal of (U_ggᵀ U_gg)⁻¹
(U the upper Cholesky factor of H⁻¹, g the block's columns): the Hessian of the block's error once
the later columns compensate. Then
  - every legacy and k-quant type (convert/block_grids.py knows their grids): GPTQ proper, column by
    column inside the block on the fixed scales, each error fed to the block's later columns, the
    block's errors to the rest;
  - another type: the block's values as the quantizer rounds them, its error E = W_g - Q_g fed to the
    later columns as W_r -= (E U_gg⁻¹) U_gr, the column-by-column update for values fixed together.
"""
from __future__ import annotations

import numpy as np

from ggq.qtypes import QType

DAMP = 0.01  # fraction of the mean diagonal added to H (GPTQ's percdamp): keeps H⁻¹ well conditioned


def inverse_cholesky(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """Upper-triangular U with UᵀU = (H + damp·mean(diag H)·I)⁻¹; columns never seen get unit weight."""
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    diag = np.arange(h.shape[0])
    h[diag, diag] += damp * np.mean(np.diag(h))
    lower = np.linalg.cholesky(h)
    lower_inv = np.linalg.solve(lower, np.eye(h.shape[0]))
    h_inv = lower_inv.T @ lower_inv
    return np.linalg.cholesky(h_inv).T


def gptq_quantize(w: np.ndarray, h: np.ndarray, qt: QType, damp: float = DAMP,
                  importance: np.ndarray | None = None) -> np.ndarray:
    """W [rows, cols] float32 -> ggml blocks of type qt (uint8 [rows, row_bytes]), rounding errors
    compensated through H = XᵀX [cols, cols]. `importance` [cols], if given, weights the block scale
    searches instead of the conditional diagonal (e.g. the imatrix, as llama-quantize weights them)."""
    from ggq.convert.block_grids import GRIDS
    rows, cols = w.shape
    group = qt.block_size
    u = inverse_cholesky(h, damp)
    work = w.astype(np.float64)
    out = np.empty((rows, qt.row_bytes(cols)), np.uint8)
    block_bytes = qt.row_bytes(group)
    quantize_block = _block_by_columns if qt.name in GRIDS else _block_jointly
    for g0 in range(0, cols, group):
        fixed = None if importance is None else np.ascontiguousarray(importance[g0:g0 + group], np.float32)
        blocks = quantize_block(work, u, g0, g0 + group, qt, fixed)
        out[:, g0 // group * block_bytes:(g0 // group + 1) * block_bytes] = blocks
    return out


def _block_importance(u_gg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U_gg⁻¹, the scale search's per-column weights: diagonal of (U_ggᵀ U_gg)⁻¹)."""
    u_gg_inv = np.linalg.solve(u_gg, np.eye(u_gg.shape[0]))
    return u_gg_inv, (u_gg_inv * u_gg_inv).sum(axis=1).astype(np.float32)


def _block_jointly(work: np.ndarray, u: np.ndarray, g0: int, g1: int, qt: QType, fixed=None) -> np.ndarray:
    """One block of columns rounded together by the format's quantizer (a type whose grid
    block_grids.py does not describe); its error is then moved onto the later columns."""
    from ggq.quants import dequantize, quantize
    u_gg_inv, importance = _block_importance(u[g0:g1, g0:g1])
    current = work[:, g0:g1].astype(np.float32)
    blocks = quantize(current, qt, importance if fixed is None else fixed)
    if g1 < work.shape[1]:
        error = current.astype(np.float64) - dequantize(blocks, qt).astype(np.float64)
        work[:, g1:] -= (error @ u_gg_inv) @ u[g0:g1, g1:]
    return blocks


def _block_by_columns(work: np.ndarray, u: np.ndarray, g0: int, g1: int, qt: QType, fixed=None) -> np.ndarray:
    """One block: its scales chosen by the format's quantizer, then column by column each value
    rounded on that grid and its error moved onto the block's later columns (GPTQ proper), the block's
    errors onto the later blocks at the end."""
    from ggq.convert.block_grids import GRIDS, round_column
    from ggq.quants import quantize
    _, importance = _block_importance(u[g0:g1, g0:g1])
    blocks = quantize(work[:, g0:g1].astype(np.float32), qt, importance if fixed is None else fixed)
    a, b = GRIDS[qt.name].affine(blocks)
    levels = np.empty((work.shape[0], g1 - g0), np.int32)
    errors = np.empty((work.shape[0], g1 - g0), np.float64)
    for j in range(g0, g1):
        c = j - g0
        levels[:, c], values = round_column(work[:, j], a[:, c], b[:, c], qt.name)
        errors[:, c] = (work[:, j] - values) / u[j, j]
        work[:, j + 1:g1] -= np.outer(errors[:, c], u[j, j + 1:g1])
    GRIDS[qt.name].write(blocks, levels)
    if g1 < work.shape[1]:
        work[:, g1:] -= errors @ u[g0:g1, g1:]
    return blocks


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)ᵀ): the summed squared output error over the calibration inputs."""
    d = (w.astype(np.float64) - q.astype(np.float64))
    return float(np.einsum("ij,jk,ik->", d, h, d))
