"""Error-compensating rounding into ordinary ggml blocks (GPTQ, Frantar et al. 2022, block form).

A weight W [rows, cols] multiplies inputs x; with H = XᵀX of its calibration inputs the output error
of a rounding Q is tr((W - Q) H (W - Q)ᵀ). GPTQ quantizes columns in order and moves each column's
rounding error onto the columns not yet quantized, in the direction H says they can absorb it.

Here the unit of rounding is one ggml block of columns (32 for the legacy types, a 256-wide
super-block for the k-quants): its block scales are chosen jointly by the format's own scale search, so
the bytes are exactly what ggq's (llama.cpp's) quantizer writes for those values and llama.cpp reads
them unchanged. With U the upper Cholesky factor of H⁻¹ and g the block's columns, r the later ones:

    E = W_g - Q_g;   W_r -= (E U_gg⁻¹) U_gr

which is the column-by-column GPTQ update for a block whose values were fixed together. The scale
search weights column j by the diagonal of (U_ggᵀ U_gg)⁻¹, the Hessian of the block's error once the
later columns compensate (its diagonal, since the quantizers take one weight per column).
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


def gptq_quantize(w: np.ndarray, h: np.ndarray, qt: QType, damp: float = DAMP) -> np.ndarray:
    """W [rows, cols] float32 -> ggml blocks of type qt (uint8 [rows, row_bytes]), rounding errors
    compensated through H = XᵀX [cols, cols]."""
    from ggq.quants import dequantize, quantize
    rows, cols = w.shape
    group = qt.block_size
    u = inverse_cholesky(h, damp)
    work = w.astype(np.float64)
    out = np.empty((rows, qt.row_bytes(cols)), np.uint8)
    block_bytes = qt.row_bytes(group)
    for g0 in range(0, cols, group):
        g1 = g0 + group
        u_gg_inv = np.linalg.solve(u[g0:g1, g0:g1], np.eye(group))
        importance = (u_gg_inv * u_gg_inv).sum(axis=1).astype(np.float32)
        current = work[:, g0:g1].astype(np.float32)
        blocks = quantize(current, qt, importance)
        out[:, g0 // group * block_bytes:(g0 // group + 1) * block_bytes] = blocks
        if g1 < cols:
            error = current.astype(np.float64) - dequantize(blocks, qt).astype(np.float64)
            work[:, g1:] -= (error @ u_gg_inv) @ u[g0:g1, g1:]
    return out


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)ᵀ): the summed squared output error over the calibration inputs."""
    d = (w.astype(np.float64) - q.astype(np.float64))
    return float(np.einsum("ij,jk,ik->", d, h, d))
