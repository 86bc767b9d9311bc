"""Prompt-path float matmuls through numpy's BLAS, spread over the runtime's threads.

OpenBLAS's own worker threads busy-wait for a while after every call, and Numba's threads do the same
after a parallel kernel: letting both own the cores made prefill several times slower than either alone.
So BLAS runs single-threaded inside each of a few Python worker threads (numpy releases the GIL), the
rows of the weight tile split between them, and Numba's kernels run in between, alone.

    matmul_split(x, rows, out_cols)       # out_cols[T, R] = x[T, n] @ rows[R, n].T
    attention_split(q, k_cache, v_cache, pos0, window, out)   # a prompt's attention, heads in parallel
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_SETTERS = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads_64_", "openblas_set_num_threads64_", "openblas_set_num_threads")


def _openblas_thread_setter():
    """numpy's bundled OpenBLAS's thread-count setter (thread-local where the library has one), or None
    (another BLAS, such as Accelerate on macOS, which does not spin)."""
    here = os.path.dirname(np.__file__)
    for path in glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*")) + \
            glob.glob(os.path.join(here, ".dylibs", "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                return setter
    return None


_SET_BLAS_THREADS = _openblas_thread_setter()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _worker_init() -> None:
    if _SET_BLAS_THREADS is not None:
        _SET_BLAS_THREADS(1)


def _workers() -> tuple[ThreadPoolExecutor, int]:
    """A pool of as many workers as Numba has threads now (recreated when that changes)."""
    global _pool, _pool_size
    n = numba.get_num_threads()
    if _pool is None or _pool_size != n:
        if _pool is not None:
            _pool.shutdown()
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="ggq-blas", initializer=_worker_init), n
    return _pool, n


def matmul_split(x: np.ndarray, rows: np.ndarray, out_cols: np.ndarray) -> None:
    """out_cols[T, R] = x[T, n] @ rows[R, n].T, the R rows shared out between the workers."""
    pool, n = _workers()
    bounds = np.linspace(0, rows.shape[0], n + 1).astype(int)
    jobs = [pool.submit(np.matmul, x, rows[a:b].T, out=out_cols[:, a:b])
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for job in jobs:
        job.result()


@functools.lru_cache(maxsize=4)
def _mask(n_q: int, pos0: int, window: int) -> np.ndarray:
    """[n_q, pos0 + n_q] additive mask: 0 where query pos0 + i may see key j, -inf elsewhere (causal,
    and within the window if one is set). Made once per prompt batch, shared by every head and layer
    (building it per head, with boolean indexing, took a third of a prompt's attention time)."""
    query_pos = np.arange(pos0, pos0 + n_q)[:, None]
    key_pos = np.arange(pos0 + n_q)[None, :]
    hidden = key_pos > query_pos
    if window > 0:
        hidden |= key_pos <= query_pos - window
    return np.where(hidden, np.float32(-np.inf), np.float32(0.0))


def _attend_head(q_h, k, v, pos0: int, window: int, out_h) -> None:
    """One query head over its kv head: softmax(q k^T + causal/window mask) v, as two BLAS products."""
    n_k = pos0 + q_h.shape[0]
    scores = q_h @ k[:n_k].T                                   # [T, n_k]
    scores += _mask(q_h.shape[0], pos0, window)
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    np.matmul(scores, v[:n_k], out=out_h)


def attention_split(q, k_cache, v_cache, pos0: int, window: int, out) -> None:
    """The prompt path's attention (same contract as kernels.nn.attention, T > 1), heads shared out
    between the workers: q [T, H, D] scaled, caches [H_kv, ctx, D] holding positions < pos0 + T."""
    pool, _ = _workers()
    n_head, group = q.shape[1], q.shape[1] // k_cache.shape[0]
    jobs = [pool.submit(_attend_head, q[:, h], k_cache[h // group], v_cache[h // group], pos0, window, out[:, h])
            for h in range(n_head)]
    for job in jobs:
        job.result()
