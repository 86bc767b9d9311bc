"""How long Numba's OpenMP workers busy-wait after a parallel kernel before they sleep (GOMP_SPINCOUNT,
in spins). libgomp reads it once, when it loads, and Numba loads it as soon as ggq.runtime.kernels is
imported (runtime/kernels/__init__.py starts the threading layer), so it is set before that.

A decode step is ~270 parallel kernels with serial work between them, and a worker that fell asleep
wakes through a futex (slow under KVM): on 2 Zen 4 cores the shared model's Q4_0 decode ran 199 / 197
tok/s at 10,000 spins and 214 / 214 at 1,000,000, prompts unchanged. But where prompts run numpy's BLAS
between Numba kernels (exact=True, F32 weights: runtime/blas.py), spinning workers starve the BLAS
threads: Q4_K_M exact pp512 581 -> 365 tok/s. So the long spin is the default, and the entry points that
know the model and mode before the runtime loads (ggq.load, the CLI) ask for the short one for those.
A value the user set always wins. No numpy or Numba here.
"""
from __future__ import annotations

import os
import sys

LONG_SPIN, SHORT_SPIN = "1000000", "10000"
RUNTIME_KERNELS = "ggq.runtime.kernels"  # once imported, libgomp has read the spin
_USER_SET = "GOMP_SPINCOUNT" in os.environ  # this module is imported before ggq sets it


def default_spin() -> None:
    """The long spin, unless something (the user, use_short_spin_for) set one."""
    os.environ.setdefault("GOMP_SPINCOUNT", LONG_SPIN)


def use_short_spin_for(path, exact: bool) -> None:
    """Before the runtime loads: the short spin where the prompts of this model and mode run BLAS.
    Nothing where the user set a spin or the runtime's threads have started already."""
    if _USER_SET or RUNTIME_KERNELS in sys.modules:
        return
    if exact or has_float32_matrices(path):
        os.environ["GOMP_SPINCOUNT"] = SHORT_SPIN


def has_float32_matrices(path) -> bool:
    """Whether the GGUF file at path has F32 weight matrices (their prompt matmuls run through BLAS,
    runtime/weights.py). False for anything that is not a readable GGUF file: opening it reports that."""
    if not os.path.isfile(path):
        return False
    from ggq.errors import GGQError
    from ggq.gguf_read import open_gguf
    try:
        with open_gguf(path) as f:
            return any(t.qtype.name == "F32" and len(t.shape) == 2 for t in f.tensors.values())
    except (GGQError, OSError, ValueError):
        return False
