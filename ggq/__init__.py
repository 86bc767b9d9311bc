"""ggq: a GGUF toolkit in Python.

    import ggq
    m = ggq.load("model.gguf")
    print(m.chat([{"role": "user", "content": "What is the capital of France?"}]))
"""
from __future__ import annotations

from ggq.errors import GGQError

__version__ = "0.1.0"
__all__ = ["GGQError", "load", "__version__"]


def load(path, **options):
    """Open a GGUF model for generation (see ggq.runtime.api.Model)."""
    from ggq.runtime.api import load as _load
    return _load(path, **options)
