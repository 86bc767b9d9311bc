"""ggq's CUDA backend (numba.cuda): `ggq.load(path, device="cuda")`, `--device cuda` on the command line.

Optional: it needs an NVIDIA GPU and numba's CUDA target (`pip install "ggq[cuda]"`, which adds
numba-cuda). Nothing here is imported by the CPU runtime unless a CUDA device is asked for.
"""
from __future__ import annotations

from ggq.errors import GGQError

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise GGQError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")


def cuda_backend(tf):
    """The CUDA backend for an opened Transformer; one GGQError line if this machine cannot run it."""
    if tf.match_llamacpp:
        raise GGQError("match_llamacpp reproduces llama.cpp's CPU arithmetic; it has no CUDA form",
                       "--device cuda")
    import numpy as np
    if not hasattr(np, "row_stack"):
        # numba-cuda 0.30 registers an overload of np.row_stack when it first compiles; numpy 2.5 removed
        # that alias of vstack, and the registration fails with an AttributeError
        np.row_stack = np.vstack
    try:
        from numba import cuda
    except ImportError as e:
        raise GGQError(f"numba's CUDA target is not installed ({e}); pip install 'ggq[cuda]'",
                       "--device cuda") from None
    try:
        available = cuda.is_available()
    except Exception as e:  # noqa: BLE001 - a broken driver or toolkit: report it, do not trace back
        raise GGQError(f"CUDA is not usable here: {type(e).__name__}: {e}", "--device cuda") from None
    if not available:
        raise GGQError("no CUDA GPU or driver found on this machine", "--device cuda")
    from ggq.runtime.cuda.backend import CudaBackend
    return CudaBackend(tf)
