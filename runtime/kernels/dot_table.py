"""Weight type -> (activation format, matvec, matmat) for the integer-dot kernels, as ggml-cpu's
type_traits_cpu[type].vec_dot_type pairs them (ggml-cpu.c): the activation row is quantized with
actquant.quantize_activations(x, fmt) (or the QUANTIZERS kernel) and dotted in the weight's native
blocks. Kernels are imported on first use (compiling/loading Numba code takes a while).

    fmt, matvec, matmat = dot_kernels("Q4_K")
    xq = quantize_activations(x, fmt); matvec(w, xq, out)
"""
from __future__ import annotations

import importlib

# weight type -> (vec_dot_type, kernel module under ggq.runtime.kernels)
DOT_TYPES: dict[str, tuple[str, str]] = {
    "Q4_0": ("Q8_0", "dot_legacy"), "Q4_1": ("Q8_1", "dot_legacy"),
    "Q5_0": ("Q8_0", "dot_legacy"), "Q5_1": ("Q8_1", "dot_legacy"),
    "Q8_0": ("Q8_0", "dot_legacy"),
    "Q2_K": ("Q8_K", "dot_kquants"), "Q3_K": ("Q8_K", "dot_kquants"), "Q4_K": ("Q8_K", "dot_kquants"),
    "Q5_K": ("Q8_K", "dot_kquants"), "Q6_K": ("Q8_K", "dot_kquants"),
}

# types whose matmat is a prompt kernel (vecir_tile: row groups against many tokens), faster than
# float32 BLAS on dequantized rows; the others' matmat runs matvec's rows token by token
PROMPT_TYPES = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"})


def dot_kernels(type_name: str):
    """(activation format, matvec_<t>, matmat_<t>) for a weight type; KeyError if it has none."""
    fmt, module_name = DOT_TYPES[type_name]
    module = importlib.import_module(f"ggq.runtime.kernels.{module_name}")
    suffix = type_name.lower()
    return fmt, getattr(module, f"matvec_{suffix}"), getattr(module, f"matmat_{suffix}")
