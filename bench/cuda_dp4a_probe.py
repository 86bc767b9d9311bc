"""Does a linked one-line CUDA C++ shim (__dp4a) work from numba.cuda here, and is it inlined (LTO)?

    python3 -P bench/cuda_dp4a_probe.py      # on the GPU machine: prints correctness and ns per dp4a
"""
from __future__ import annotations

import time

import numpy as np

if not hasattr(np, "row_stack"):        # as runtime/cuda/__init__.py: numba-cuda 0.30 needs it on numpy 2.5
    np.row_stack = np.vstack
from numba import cuda, int32  # noqa: E402

SRC = 'extern "C" __device__ int ggq_dp4a(int *r, int a, int b, int c) { *r = __dp4a(a, b, c); return 0; }'


def probe(lto: bool) -> None:
    dp4a = cuda.declare_device("ggq_dp4a", int32(int32, int32, int32), link=[cuda.CUSource(SRC)])

    @cuda.jit(lto=lto)
    def k(a, b, out, iters):
        i = cuda.grid(1)
        acc = int32(0)
        x, y = a[i % a.size], b[i % b.size]
        for _ in range(iters):
            acc = dp4a(x, y, acc)
            x ^= acc
        out[i] = acc

    a = np.random.default_rng(0).integers(-2**31, 2**31 - 1, 4096, dtype=np.int64).astype(np.int32)
    b = np.random.default_rng(1).integers(-2**31, 2**31 - 1, 4096, dtype=np.int64).astype(np.int32)
    out = cuda.device_array(4096, np.int32)
    k[16, 256](cuda.to_device(a), cuda.to_device(b), out, 1)
    got = out.copy_to_host()
    ai, bi = a.view(np.int8).reshape(-1, 4).astype(np.int32), b.view(np.int8).reshape(-1, 4).astype(np.int32)
    ok = np.array_equal(got, (ai * bi).sum(1).astype(np.int32))
    n = 132 * 2048
    out = cuda.device_array(n, np.int32)
    da, db = cuda.to_device(a), cuda.to_device(b)
    k[n // 256, 256](da, db, out, 10)
    cuda.synchronize()
    t = time.perf_counter()
    k[n // 256, 256](da, db, out, 20000)
    cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"lto={lto}: correct={ok}; {dt * 1e9 / (20000 * n) * 132 * 4:.3f} ns per dp4a per SM-quarter "
          f"({dt * 1e3:.1f} ms)", flush=True)


for lto in (False, True):
    try:
        probe(lto)
    except Exception as e:  # noqa: BLE001 - a probe: say what failed
        print(f"lto={lto}: {type(e).__name__}: {str(e)[:800]}", flush=True)
