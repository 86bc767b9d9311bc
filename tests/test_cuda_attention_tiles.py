"""The tiled prompt attention (runtime/cuda/attention_tiles.py) under Numba's CUDA simulator, against the
CPU runtime's attention kernel (runtime/kernels/nn.py) on the same finished q/k/v.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_cuda_kernels import _cpu_attention  # sets NUMBA_ENABLE_CUDASIM before numba.cuda is imported

from numba import cuda  # noqa: E402

from ggq.runtime.cuda import attention as at  # noqa: E402
from ggq.runtime.cuda import attention_tiles as atl  # noqa: E402


@pytest.mark.parametrize("n, pos0, window, hd", [(11, 0, 0, 16), (3, 37, 0, 20), (11, 30, 13, 16)])
def test_tiled_attention_matches_the_cpu_kernel(n, pos0, window, hd):
    """Two query tiles (the second partly empty), keys across key tiles after cached positions, a sliding
    window (whole key tiles masked for the later queries), a head size that is no multiple of 4 x 8;
    2 q heads per kv head."""
    rng = np.random.default_rng(31)
    n_head, n_kv, ctx, eps = 4, 2, pos0 + n + 1, 1e-6
    width = (n_head + 2 * n_kv) * hd
    qkv = rng.standard_normal((n, width)).astype(np.float32)
    kc, vc = (np.zeros((n_kv, ctx, hd), np.float32) for _ in range(2))
    kc[:, :pos0], vc[:, :pos0] = rng.standard_normal((2, n_kv, pos0, hd))
    inv_freq = 10000.0 ** -(np.arange(0, hd, 2) / hd)
    zeros, ones = np.zeros(width, np.float32), np.ones(hd, np.float32)
    d_qkv, d_k, d_v = cuda.to_device(qkv), cuda.to_device(kc), cuda.to_device(vc)
    state = cuda.to_device(np.array([0, pos0, 0], np.int64))
    dims = cuda.to_device(np.array([n_head, n_kv, hd, hd // 2], np.int64))
    flags = cuda.to_device(np.array([0, 0, 0], np.int64))
    at.qkv_finish[(n, n_head + 2 * n_kv), 32](d_qkv, cuda.to_device(zeros), cuda.to_device(ones),
                                              cuda.to_device(ones), cuda.to_device(inv_freq), 1.0, state, d_k,
                                              d_v, dims, flags, eps, 1 / math.sqrt(hd))
    att = cuda.to_device(np.full((n, n_head * hd), np.nan, np.float32))
    atl.attend_tiles(hd)[(-(-n // atl.QT), n_head), atl.THREADS](d_qkv, d_k, d_v, state, window, n, att)
    _, _, expected = _cpu_attention(qkv, kc, vc, pos0, n_head, n_kv, hd, inv_freq, False, zeros, None, ones,
                                    window, eps)
    np.testing.assert_allclose(att.copy_to_host(), expected, rtol=1e-5, atol=1e-5)
