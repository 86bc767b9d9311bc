"""Scale searches of the legacy formats (make_qx_quants, make_qkx3_quants), float for float as ggml-quants.c.

Every intermediate is float32 where ggml uses float, in ggml's order of operations (Numba widens
float32 op int to float64, so integers are converted to float32 explicitly). No fastmath: ggml-base
is built without -ffast-math and without FMA (baseline x86-64), so nothing here may be contracted.

Weight arrays are float32; an EMPTY array stands for ggml's NULL pointer (no importance given).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.quants.floats import f32_as_u32

F32 = np.float32
GROUP_MAX_EPS = np.float32(1e-15)


@njit(inline="always", cache=True, error_model="numpy")
def nearest_int(fval):
    """Round to nearest even via the 1.5*2^23 magic number, as ggml's nearest_int (|fval| < 2^22)."""
    bits = f32_as_u32(np.float32(fval) + np.float32(12582912.0))
    return np.int32(bits & np.uint32(0x007FFFFF)) - np.int32(0x00400000)


@njit(inline="always", cache=True, error_model="numpy")
def rmse_weight(x, rmse_type, qw, i):
    """The weight of x[i] in make_qx_quants' error: qw[i] if given, else by rmse_type."""
    if qw.size > 0:
        return qw[i]
    if rmse_type == 1:
        return x[i] * x[i]
    if rmse_type == 2:
        return F32(1.0)
    if rmse_type == 3:
        return abs(x[i])
    return np.sqrt(abs(x[i]))


@njit(cache=True, error_model="numpy")
def make_qx_quants(n, nmax, x, L, rmse_type, qw):
    """Symmetric scale for x[:n] with levels L in [0, 2*nmax) (ggml's make_qx_quants); returns the scale."""
    vmax = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / vmax
    if rmse_type == 0:
        for i in range(n):
            L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        return F32(1.0) / iscale
    return_early = rmse_type < 0
    if return_early:
        rmse_type = -rmse_type
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l + nmax
        w = rmse_weight(x, rmse_type, qw, i)
        fl = F32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 != 0 else F32(0.0)
    if return_early:
        return F32(0.5) * (scale + F32(1.0) / iscale) if suml2 > 0 else F32(1.0) / iscale
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / vmax
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            fl = F32(max(-nmax, min(nmax - 1, nearest_int(iscale * x[i]))))
            w = rmse_weight(x, rmse_type, qw, i)
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(inline="always", cache=True, error_model="numpy")
def _weight_or_x2(x, weights, i):
    return weights[i] if weights.size > 0 else x[i] * x[i]


@njit(cache=True, error_model="numpy")
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """Asymmetric scale and min for x[:n], levels L in [0, nmax] (ggml's make_qkx3_quants).

    Returns (scale, the_min) where the block decodes as scale * L - the_min.
    """
    vmin = x[0]
    vmax = x[0]
    sum_w = _weight_or_x2(x, weights, 0)
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < vmin:
            vmin = x[i]
        if x[i] > vmax:
            vmax = x[i]
        w = _weight_or_x2(x, weights, i)
        sum_w += w
        sum_x += w * x[i]
    if vmin > 0:
        vmin = F32(0.0)
    if vmax <= vmin:
        for i in range(n):
            L[i] = 0
        return F32(0.0), -vmin
    iscale = F32(nmax) / (vmax - vmin)
    scale = F32(1.0) / iscale
    best_mad = F32(0.0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - vmin))))
        diff = scale * F32(L[i]) + vmin - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_mad += _weight_or_x2(x, weights, i) * diff
    if nstep < 1:
        return scale, -vmin
    for step in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (vmax - vmin)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = max(0, min(nmax, nearest_int(iscale * (x[i] - vmin))))
            Laux[i] = l
            w = _weight_or_x2(x, weights, i)
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            mad = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                mad += _weight_or_x2(x, weights, i) * diff
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                vmin = this_min
    return scale, -vmin
