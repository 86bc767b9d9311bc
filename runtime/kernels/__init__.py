"""Numba kernels of the runtime, one module per family.

    floats, legacy, kquants   matvec_<t>(w, x, out) and decode_rows_<t>(w, r0, out) per weight type
    nn                        rmsnorm, rope, attention over the KV cache, gated activations

The table below says, per weight type, which module holds its kernels and how the raw uint8 rows are
viewed before they are passed (float formats as float32 / uint16 elements, block formats as bytes).
"""
from __future__ import annotations

import importlib

import numba
import numpy as np

# A cached kernel that calls parallel ones is linked against symbols of Numba's threading layer
# (allocate_sched, ...) that exist only once the layer has started; loading one before that aborts
# the process ("LLVM ERROR: Symbol not found: allocate_sched"). Start the layer before any kernel loads.
numba.get_num_threads()

# float kernels may reassociate and fuse multiply-adds, so that LLVM vectorizes their dot products
# (never the quantizers: their rounding must stay exactly ggml's)
FASTMATH = {"reassoc", "contract"}

# type name -> (kernel module, element view of the raw rows)
WEIGHT_KERNELS: dict[str, tuple[str, type]] = {
    "F32": ("floats", np.float32), "F16": ("floats", np.uint16), "BF16": ("floats", np.uint16),
    "Q4_0": ("legacy", np.uint8), "Q4_1": ("legacy", np.uint8), "Q5_0": ("legacy", np.uint8),
    "Q5_1": ("legacy", np.uint8), "Q8_0": ("legacy", np.uint8),
    "Q2_K": ("kquants", np.uint8), "Q3_K": ("kquants", np.uint8), "Q4_K": ("kquants", np.uint8),
    "Q5_K": ("kquants", np.uint8), "Q6_K": ("kquants", np.uint8),
}


def weight_kernels(type_name: str):
    """(matvec, decode_rows, element dtype) for a weight type; KeyError if the runtime has none."""
    module_name, view = WEIGHT_KERNELS[type_name]
    module = importlib.import_module(f"ggq.runtime.kernels.{module_name}")
    suffix = type_name.lower()
    return getattr(module, f"matvec_{suffix}"), getattr(module, f"decode_rows_{suffix}"), view
