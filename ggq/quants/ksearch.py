"""Scale searches shared by the k-quants, following ggml-quants.c operation for operation.

Bit-exactness with ggml needs the same float32 arithmetic in the same order: every intermediate is
float32 (Numba would widen float32 * int64 or float32 * python-float to float64, so integers are cast
with `f32(...)` before they meet a float), sums run in ggml's loop order, and comparisons keep ggml's
strictness (< vs <=). Arrays named L hold quant levels with ggml's element type (int8 or uint8), so
out-of-range values wrap exactly as the C stores do.

All kernels use error_model="numpy": ggml divides by zero in a few degenerate cases and expects
IEEE inf/nan, not an exception.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ggq.quants.floats import f32_as_u32, fp16_bits_to_fp32, fp32_to_fp16_bits

f32 = np.float32
GROUP_MAX_EPS = np.float32(1e-15)


@njit(inline="always", cache=True, error_model="numpy")
def nearest_int(fval):
    """Round float32 to nearest int (ties to even) with ggml's 1.5 * 2^23 trick: adding the magic
    number leaves the rounded integer in the low mantissa bits."""
    val = f32(f32(fval) + f32(12582912.0))
    return np.int64(f32_as_u32(val) & np.uint32(0x007FFFFF)) - np.int64(0x00400000)


@njit(inline="always", cache=True, error_model="numpy")
def clamp(v, lo, hi):
    """ggml's MAX(lo, MIN(hi, v)) for integers."""
    if v > hi:
        v = hi
    if v < lo:
        v = lo
    return v


@njit(inline="always", cache=True, error_model="numpy")
def _qx_weight(qw, x, i, rmse_type):
    """The error weight make_qx_quants uses for element i (explicit weights win)."""
    if qw.shape[0] > 0:
        return qw[i]
    if rmse_type == 1:
        return f32(x[i] * x[i])
    if rmse_type == 2:
        return f32(1.0)
    if rmse_type == 3:
        return f32(abs(x[i]))
    return f32(np.sqrt(f32(abs(x[i]))))


@njit(inline="always", cache=True, error_model="numpy")
def _qx_sums(n, nmax, x, iscale, qw, rmse_type):
    """Weighted sums of l*x and l*l for the levels iscale gives (make_qx_quants' inner loop)."""
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        l = clamp(nearest_int(f32(iscale * x[i])), -nmax, nmax - 1)
        w = _qx_weight(qw, x, i, rmse_type)
        fl = f32(l)
        sumlx += f32(f32(w * x[i]) * fl)
        suml2 += f32(f32(w * fl) * fl)
    return sumlx, suml2


@njit(cache=True, error_model="numpy")
def make_qx_quants(n, nmax, x, L, rmse_type, qw):
    """Symmetric scale search (ggml make_qx_quants): L[i] = level + nmax (int8), returns the scale.
    `qw` empty means the rmse_type weighting."""
    fmax = f32(0.0)
    amax = f32(0.0)
    for i in range(n):
        ax = f32(abs(x[i]))
        if ax > amax:
            amax = ax
            fmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(f32(-nmax) / fmax)
    if rmse_type == 0:
        for i in range(n):
            l = nearest_int(f32(iscale * x[i]))
            L[i] = nmax + clamp(l, -nmax, nmax - 1)
        return f32(f32(1.0) / iscale)
    return_early = False
    if rmse_type < 0:
        rmse_type = -rmse_type
        return_early = True
    for i in range(n):
        L[i] = clamp(nearest_int(f32(iscale * x[i])), -nmax, nmax - 1) + nmax
    sumlx, suml2 = _qx_sums(n, nmax, x, iscale, qw, rmse_type)
    scale = f32(sumlx / suml2) if suml2 != f32(0.0) else f32(0.0)
    if return_early:
        if suml2 > f32(0.0):
            return f32(f32(0.5) * f32(scale + f32(f32(1.0) / iscale)))
        return f32(f32(1.0) / iscale)
    best = f32(scale * sumlx)
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = f32(f32(-f32(f32(nmax) + f32(f32(0.1) * f32(step)))) / fmax)
        sumlx, suml2 = _qx_sums(n, nmax, x, iscale, qw, rmse_type)
        if suml2 > f32(0.0) and f32(sumlx * sumlx) > f32(best * suml2):
            for i in range(n):
                L[i] = nmax + clamp(nearest_int(f32(iscale * x[i])), -nmax, nmax - 1)
            scale = f32(sumlx / suml2)
            best = f32(scale * sumlx)
    return scale


@njit(cache=True, error_model="numpy")
def make_q3_quants(n, nmax, x, L, do_rmse):
    """Q3_K's symmetric search with x^2 weights and coordinate-wise refinement (ggml make_q3_quants)."""
    fmax = f32(0.0)
    amax = f32(0.0)
    for i in range(n):
        ax = f32(abs(x[i]))
        if ax > amax:
            amax = ax
            fmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(f32(-nmax) / fmax)
    if do_rmse:
        sumlx = f32(0.0)
        suml2 = f32(0.0)
        for i in range(n):
            l = clamp(nearest_int(f32(iscale * x[i])), -nmax, nmax - 1)
            L[i] = l
            w = f32(x[i] * x[i])
            sumlx += f32(f32(w * x[i]) * f32(l))
            suml2 += f32(f32(w * f32(l)) * f32(l))
        for _ in range(5):
            n_changed = 0
            for i in range(n):
                w = f32(x[i] * x[i])
                li = f32(L[i])
                slx = f32(sumlx - f32(f32(w * x[i]) * li))
                if slx > f32(0.0):
                    sl2 = f32(suml2 - f32(f32(w * li) * li))
                    new_l = clamp(nearest_int(f32(f32(x[i] * sl2) / slx)), -nmax, nmax - 1)
                    if new_l != L[i]:
                        fn = f32(new_l)
                        slx = f32(slx + f32(f32(w * x[i]) * fn))
                        sl2 = f32(sl2 + f32(f32(w * fn) * fn))
                        if sl2 > f32(0.0) and f32(f32(slx * slx) * suml2) > f32(f32(sumlx * sumlx) * sl2):
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
            if n_changed == 0:
                break
        for i in range(n):
            L[i] += nmax
        return f32(sumlx / suml2) if suml2 > f32(0.0) else f32(0.0)
    for i in range(n):
        L[i] = clamp(nearest_int(f32(iscale * x[i])), -nmax, nmax - 1) + nmax
    return f32(f32(1.0) / iscale)


@njit(inline="always", cache=True, error_model="numpy")
def _min_max(x, n):
    lo = x[0]
    hi = x[0]
    for i in range(1, n):
        if x[i] < lo:
            lo = x[i]
        if x[i] > hi:
            hi = x[i]
    return lo, hi


@njit(inline="always", cache=True, error_model="numpy")
def _qkx_error(n, x, weights, L, scale, lo, use_mad):
    """Weighted |error| (use_mad) or squared error of levels L under (scale, lo), in element order."""
    total = f32(0.0)
    for i in range(n):
        diff = f32(f32(f32(scale * f32(L[i])) + lo) - x[i])
        diff = f32(abs(diff)) if use_mad else f32(diff * diff)
        total += f32(weights[i] * diff)
    return total


@njit(cache=True, error_model="numpy")
def make_qkx_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, strict_empty):
    """Asymmetric (scale, min) search of ggml's make_qkx2_quants (strict_empty=False: a constant
    group is detected by max == min) and make_qkx3_quants (strict_empty=True: max <= min); with
    explicit weights the two are otherwise identical. Returns (scale, the_min) with the_min = -min."""
    lo, hi = _min_max(x, n)
    sum_w = weights[0]
    sum_x = f32(sum_w * x[0])
    for i in range(1, n):
        w = weights[i]
        sum_w += w
        sum_x += f32(w * x[i])
    if lo > f32(0.0):
        lo = f32(0.0)
    if (hi <= lo) if strict_empty else (hi == lo):
        for i in range(n):
            L[i] = 0
        return f32(0.0), f32(-lo)
    iscale = f32(f32(nmax) / f32(hi - lo))
    scale = f32(f32(1.0) / iscale)
    for i in range(n):
        L[i] = clamp(nearest_int(f32(iscale * f32(x[i] - lo))), 0, nmax)
    best_error = _qkx_error(n, x, weights, L, scale, lo, use_mad)
    if nstep < 1:
        return scale, f32(-lo)
    for step in range(nstep + 1):
        iscale = f32(f32(f32(rmin + f32(rdelta * f32(step))) + f32(nmax)) / f32(hi - lo))
        sum_l = f32(0.0)
        sum_l2 = f32(0.0)
        sum_xl = f32(0.0)
        for i in range(n):
            l = clamp(nearest_int(f32(iscale * f32(x[i] - lo))), 0, nmax)
            Laux[i] = l
            w = weights[i]
            fl = f32(l)
            sum_l += f32(w * fl)
            sum_l2 += f32(f32(w * fl) * fl)
            sum_xl += f32(f32(w * fl) * x[i])
        D = f32(f32(sum_w * sum_l2) - f32(sum_l * sum_l))
        if D > f32(0.0):
            this_scale = f32(f32(f32(sum_w * sum_xl) - f32(sum_x * sum_l)) / D)
            this_min = f32(f32(f32(sum_l2 * sum_x) - f32(sum_l * sum_xl)) / D)
            if this_min > f32(0.0):
                this_min = f32(0.0)
                this_scale = f32(sum_xl / sum_l2)
            cur_error = _qkx_error(n, x, weights, Laux, this_scale, this_min, use_mad)
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                lo = this_min
    return scale, f32(-lo)


@njit(cache=True, error_model="numpy")
def _qp_refine(n, nmax, x, L, quant_weights, iscale):
    """make_qp_quants' second half: levels for the chosen iscale, then up to 5 rounds of
    coordinate-wise moves that raise (sum w*l*x)^2 / (sum w*l*l); returns the fitted scale."""
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(f32(iscale * x[i])))
        L[i] = l & 0xFF
        w = quant_weights[i]
        sumlx += f32(f32(w * x[i]) * f32(l))
        suml2 += f32(f32(w * f32(l)) * f32(l))
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            li = f32(L[i])
            slx = f32(sumlx - f32(f32(w * x[i]) * li))
            sl2 = f32(suml2 - f32(f32(w * li) * li))
            if slx > f32(0.0) and sl2 > f32(0.0):
                new_l = min(nmax, nearest_int(f32(f32(x[i] * sl2) / slx)))
                if new_l != L[i]:
                    fn = f32(new_l)
                    slx = f32(slx + f32(f32(w * x[i]) * fn))
                    sl2 = f32(sl2 + f32(f32(w * fn) * fn))
                    if f32(f32(slx * slx) * suml2) > f32(f32(sumlx * sumlx) * sl2):
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return f32(sumlx / suml2) if suml2 > f32(0.0) else f32(0.0)


@njit(cache=True, error_model="numpy")
def make_qp_quants(n, nmax, x, L, quant_weights):
    """Quantize non-negative block scales to 0..nmax with weighted refinement (ggml make_qp_quants);
    L is uint8 (negative levels wrap as in C). Returns the scale of the scales."""
    fmax = f32(0.0)
    for i in range(n):
        fmax = fmax if fmax > x[i] else x[i]
    if fmax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(f32(nmax) / fmax)
    for i in range(n):
        L[i] = nearest_int(f32(iscale * x[i])) & 0xFF
    scale = f32(f32(1.0) / iscale)
    best_mse = f32(0.0)
    for i in range(n):
        diff = f32(x[i] - f32(scale * f32(L[i])))
        best_mse += f32(f32(quant_weights[i] * diff) * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = f32(f32(f32(f32(0.1) * f32(step)) + f32(nmax)) / fmax)
        scale_is = f32(f32(1.0) / iscale_is)
        mse = f32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(f32(iscale_is * x[i])))
            diff = f32(x[i] - f32(scale_is * f32(l)))
            mse += f32(f32(quant_weights[i] * diff) * diff)
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    return _qp_refine(n, nmax, x, L, quant_weights, iscale)


@njit(inline="always", cache=True, error_model="numpy")
def set_scale_min_k4(scales, j, ls, lm):
    """Pack 6-bit scale ls and min lm of sub-block j (of 8) into Q4_K/Q5_K's 12 scale bytes
    (bytes must start zeroed for j >= 4, which ORs into bytes written for j < 4)."""
    if j < 4:
        scales[j] = ls & 0xFF
        scales[j + 4] = lm & 0xFF
    else:
        scales[j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
        scales[j - 4] |= ((ls >> 4) << 6) & 0xFF
        scales[j] |= ((lm >> 4) << 6) & 0xFF


@njit(inline="always", cache=True, error_model="numpy")
def get_scale_min_k4(j, q):
    """Unpack (scale, min) of sub-block j from Q4_K/Q5_K's 12 scale bytes (ggml get_scale_min_k4)."""
    if j < 4:
        return np.int64(q[j] & 63), np.int64(q[j + 4] & 63)
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4)
    return np.int64(d), np.int64(m)


@njit(inline="always", cache=True)
def put_fp16(blk, offset, value):
    """Store value as little-endian fp16 (ggml's GGML_FP32_TO_FP16 rounding) at blk[offset]."""
    h = fp32_to_fp16_bits(f32(value))
    blk[offset] = h & 0xFF
    blk[offset + 1] = h >> 8


@njit(inline="always", cache=True)
def get_fp16(blk, offset):
    """Read a little-endian fp16 at blk[offset] as float32."""
    return fp16_bits_to_fp32(np.uint16(blk[offset]) | (np.uint16(blk[offset + 1]) << np.uint16(8)))
