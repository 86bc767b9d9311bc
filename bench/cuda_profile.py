"""A few decode steps of a file through the CUDA backend, for `ncu` (per-kernel times of one token).

    ncu --clock-control none --print-summary per-kernel python3 -P bench/cuda_profile.py FILE.gguf [STEPS [START]]

START (default 0) is the first step's position: attention's cost grows with it (tg128 averages ~64).
"""
from __future__ import annotations

import sys
import time

import ggq

m = ggq.load(sys.argv[1], ctx_size=256, device="cuda")
backend = m.transformer.backend
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
start = time.perf_counter()
for pos in range(first, first + steps):
    backend.next_token(1, pos)
print(f"{steps} steps in {time.perf_counter() - start:.4f} s; {backend.launches_per_token} kernels per token; "
      f"graph: {backend.replay.graph is not None} {backend.replay.graph_error}")
