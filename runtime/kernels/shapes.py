"""Kernel shapes, as data: the choices a decode matvec can run with, all giving the same bits.

Every matrix of the decode step's table (kernels/step.py) carries one shape value, which its kernel
family reads as follows:

    legacy (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0)   rows per step: rows that share each activation block load and
                                        keep independent accumulator chains (vecir._legacy_rows; 2 and
                                        8: two rows a 512-bit vector, vecir_pairs)
    kquant (Q2_K .. Q6_K)               rows per parallel work item (the unit threads split rows by)
    float  (F32 F16 BF16)               unused (0)

A row's arithmetic is the same for every shape (each output is one row's dot product in ggml's order),
so a shape changes speed only: tests/test_runtime_dot.py asserts the bits for every value below.
Which one is fastest depends on the core (prefetchers, out-of-order window, cache sizes), so
runtime/tune.py measures the candidates on the machine the model runs on; UNTUNED is the choice
without tuning (GGQ_TUNE=0), the shape ggq used before it could tune.
"""
from __future__ import annotations

from ggq.runtime.kernels.vecir_isa import HAVE_ZMM_VNNI

# compiled forms (vecir rows<N>_<t>; others run one row at a time). 16 rows never won by more than noise
# (Xeon: 32 by 10 %; Zen 5: 1 by 3-5x) and cost compile time, so it is not among them.
LEGACY_ROW_STEPS = (1, 4, 32)
# rows two to a 512-bit vector (vecir_pairs; x86 with AVX512-VNNI only). 1 Zen 5 thread, Q4_0 rows of
# 576: 256-bit 1 / 4 / 32 rows 15 / 14 / 12 GB/s, pairs 2 / 8 rows 22 / 27 GB/s
LEGACY_PAIRED_STEPS = (2, 8)
KQUANT_CHUNKS = (4, 16, 64)

# kernel family -> candidate shapes, and the untuned choice
CANDIDATES: dict[str, tuple[int, ...]] = {
    "legacy": LEGACY_ROW_STEPS + (LEGACY_PAIRED_STEPS if HAVE_ZMM_VNNI else ()),
    "kquant": KQUANT_CHUNKS, "float": (0,)}
UNTUNED: dict[str, int] = {"legacy": 32, "kquant": 16, "float": 0}

FAMILY: dict[str, str] = {
    "F32": "float", "F16": "float", "BF16": "float",
    "Q4_0": "legacy", "Q4_1": "legacy", "Q5_0": "legacy", "Q5_1": "legacy", "Q8_0": "legacy",
    "Q2_K": "kquant", "Q3_K": "kquant", "Q4_K": "kquant", "Q5_K": "kquant", "Q6_K": "kquant",
}

# Software prefetch distance of the decode matvecs, in bytes ahead of each weight load (0: none; the
# untuned choice). One value for a whole step, measured per model. On 2 Zen 5 cores, decode steps
# interleaved in one process (tok/s at 0 / 1024 / 4096 / 16384): shared model Q8_0 123 / 142 / 167 /
# 185, Q6_K 161 / 177 / 187 / 192, Q4_0 128 / 169 / 187 / 165, F16 122 / 124 / 124 / 123; 1.1B q4_k_m
# 37.1 / 37.7 / 42.3 / 41.4: the hardware prefetchers ramp up again on every small matrix. Like a
# shape, it changes speed only.
PREFETCH_CANDIDATES = (0, 4096, 16384)  # 1024 was never clearly best, and a candidate costs tuning time
UNTUNED_PREFETCH = 0
# the distance the shapes are timed at, before the distance itself is: several rows a step stream from
# memory well only with it (Zen 5, one thread, a 64 MB Q4_0 matrix, 8 rows paired: 7.6 GB/s at 0,
# 21.5 at 4096; one row 12.0 / 12.8), so timed at 0 they lost to one row that then kept the distance low
SHAPE_TIMING_PREFETCH = 4096
