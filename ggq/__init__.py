"""ggq: a GGUF toolkit in Python.

    import ggq
    m = ggq.load("model.gguf")
    print(m.chat([{"role": "user", "content": "What is the capital of France?"}]))
"""
from __future__ import annotations

from ggq import blas_core
from ggq.errors import GGQError

blas_core.apply()  # OpenBLAS's kernel set measured for this CPU, before anything loads numpy

__version__ = "0.1.0"
__all__ = ["GGQError", "load", "__version__"]


def load(path, **options):
    """Open a GGUF model for generation (see ggq.runtime.api.Model)."""
    from ggq.openmp_spin import use_short_spin_for
    use_short_spin_for(path, bool(options.get("exact")) and options.get("device", "cpu") == "cpu")
    from ggq.runtime.api import load as _load
    return _load(path, **options)
