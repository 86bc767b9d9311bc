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
# scale refits after the GPTQ pass (convert/refit.py), each followed by re-rounding. Off by default: on
# the shared model's Q4_0, 2 rounds lowered mean KLD only 0.0644 -> 0.0623 (PPL 29.349 -> 29.347) for
# 3-5x the convert time
REFITS = 0


def damped(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """H with unseen columns given unit weight and damp·mean(diag H) added to the diagonal: the matrix
    GPTQ's rounding (and the scale refit) minimise the error through."""
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    diag = np.arange(h.shape[0])
    h[diag, diag] += damp * np.mean(np.diag(h))
    return h


def inverse_cholesky(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """Upper-triangular U with UᵀU = damped(H)⁻¹. Each intermediate is dropped once used (for ffn_down
    of a 1.1B model every one is 254 MB); inv(L) is solve(L, I) without the identity argument (numpy
    runs the same LAPACK gesv on the same identity, so the same bits)."""
    lower = np.linalg.cholesky(damped(h, damp))
    lower_inv = np.linalg.inv(lower)
    del lower
    product = lower_inv.T @ lower_inv
    del lower_inv
    return np.linalg.cholesky(product).T


def gptq_quantize(w: np.ndarray, h: np.ndarray, qt: QType, damp: float = DAMP,
                  importance: np.ndarray | None = None, refits: int = REFITS) -> np.ndarray:
    """W [rows, cols] float32 -> ggml blocks of type qt (uint8 [rows, row_bytes]), rounding errors
    compensated through H = XᵀX [cols, cols]. `importance` [cols], if given, weights the block scale
    searches instead of the conditional diagonal (e.g. the imatrix, as llama-quantize weights them).
    Then, for the types block_grids.py describes, `refits` rounds of scale refit + re-rounding."""
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
    if qt.name in GRIDS and refits:
        out = _refit(w.astype(np.float64), damped(h, damp), u, out, qt, refits)
    return out


def _refit(w: np.ndarray, h: np.ndarray, u: np.ndarray, blocks: np.ndarray, qt: QType, rounds: int) -> np.ndarray:
    """Scales refit to the levels (convert/refit.py), levels re-rounded on them with error feedback;
    each row keeps whichever blocks have the lower error through H."""
    from ggq.convert.refit import refit_scales, row_errors
    best, best_err = blocks, row_errors(w, blocks, qt, h)
    for _ in range(rounds):
        candidate = round_on_grid(w, u, refit_scales(w, best, qt, h), qt)
        err = row_errors(w, candidate, qt, h)
        better = err < best_err
        if not better.any():
            break
        best = np.where(better[:, None], candidate, best)
        best_err = np.where(better, err, best_err)
    return best


def round_on_grid(w: np.ndarray, u: np.ndarray, blocks: np.ndarray, qt: QType) -> np.ndarray:
    """GPTQ's column pass on the grids of `blocks` (scales kept): new levels, a new array."""
    group, block_bytes = qt.block_size, qt.row_bytes(qt.block_size)
    work = w.copy()
    out = blocks.copy()
    for g0 in range(0, w.shape[1], group):
        span = slice(g0 // group * block_bytes, (g0 // group + 1) * block_bytes)
        part = np.ascontiguousarray(out[:, span])
        _round_columns(work, u, g0, g0 + group, part, qt)
        out[:, span] = part
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
    """One block: its scales chosen by the format's quantizer, then its columns rounded on that grid."""
    from ggq.quants import quantize
    _, importance = _block_importance(u[g0:g1, g0:g1])
    blocks = quantize(work[:, g0:g1].astype(np.float32), qt, importance if fixed is None else fixed)
    _round_columns(work, u, g0, g1, blocks, qt)
    return blocks


def _round_columns(work: np.ndarray, u: np.ndarray, g0: int, g1: int, blocks: np.ndarray, qt: QType) -> None:
    """Column by column, each value rounded on the block's grid and its error moved onto the block's
    later columns (GPTQ proper); the levels written into `blocks`, the block's errors moved onto the
    later blocks at the end."""
    from ggq.convert.block_grids import GRIDS, round_column
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


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)ᵀ): the summed squared output error over the calibration inputs."""
    d = (w.astype(np.float64) - q.astype(np.float64))
    return float(np.einsum("ij,jk,ik->", d, h, d))
