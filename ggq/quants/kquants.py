"""K-quant kernels (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K), bit-exact with ggml-quants.c.

One module per format holds the Numba kernels; this module is the face `ggq.quants` dispatches to:
    quantize_<name>(x: f32[rows, n], importance: f32[n] or f32[0], out: u8[rows, nbytes])
    dequantize_<name>(blocks: u8[rows, nbytes], out: f32[rows, n])
Without importance the results equal llama-quantize without an imatrix (ggml's quantize_row_*_ref);
with importance they equal ggml's quant_weights path (quantize_row_*_impl).
"""
from ggq.quants.q2_k import dequantize_q2_k, quantize_q2_k
from ggq.quants.q3_k import dequantize_q3_k, quantize_q3_k
from ggq.quants.q45_k import dequantize_q4_k, dequantize_q5_k, quantize_q4_k, quantize_q5_k
from ggq.quants.q68_k import dequantize_q6_k, dequantize_q8_k, quantize_q6_k, quantize_q8_k

__all__ = [
    "quantize_q2_k", "dequantize_q2_k", "quantize_q3_k", "dequantize_q3_k",
    "quantize_q4_k", "dequantize_q4_k", "quantize_q5_k", "dequantize_q5_k",
    "quantize_q6_k", "dequantize_q6_k", "quantize_q8_k", "dequantize_q8_k",
]
