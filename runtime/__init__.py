"""ggq.runtime: the Numba CPU runtime for GGUF models."""
