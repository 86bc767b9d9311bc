"""ggq.runtime: the Numba CPU runtime for GGUF models.

Numba's compiled-kernel cache goes to $NUMBA_CACHE_DIR, else ~/.cache/ggq/numba/<sources> (set here,
before any kernel module is imported, because Numba fixes a function's cache location when it is
decorated). <sources> is a digest of ggq's own .py files: Numba checks only the timestamp of the file
that defines a cached function, not of the intrinsics and helpers it inlines from other modules, so
after an upgrade that changed only runtime/kernels/vecir.py it would keep running the old kernels.
"""
from __future__ import annotations

import os
import sys

from ggq import openmp_spin, tune_cache


def _configure_numba_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = str(tune_cache.default_numba_cache())
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # read-only home: Numba falls back to __pycache__ or compiles each run
    os.environ["NUMBA_CACHE_DIR"] = path
    if "numba" in sys.modules:  # imported already (e.g. by ggq.quants): tell its live config too
        sys.modules["numba"].config.CACHE_DIR = path


_configure_numba_cache()
openmp_spin.default_spin()
