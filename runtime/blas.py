"""Prompt-path float matmuls through numpy's BLAS, spread over the runtime's threads.

OpenBLAS's own worker threads busy-wait for a while after every call, and Numba's threads do the same
after a parallel kernel: letting both own the cores made prefill several times slower than either alone.
So BLAS runs single-threaded inside each of a few Python worker threads (numpy releases the GIL), the
rows of the weight tile split between them, and Numba's kernels run in between, alone.

    matmul_split(x, rows, out_cols)       # out_cols[T, R] = x[T, n] @ rows[R, n].T
"""
from __future__ import annotations

import ctypes
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
