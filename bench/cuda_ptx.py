"""Compile the prompt path's CUDA kernels to PTX here, without a GPU, and report ptxas's registers: catches
typing errors that Numba's CUDA simulator (which runs the kernels as Python) cannot, before a device call.

    LD_LIBRARY_PATH=<nvrtc lib> CUDA_HOME=<toolkit with nvvm> python -P bench/cuda_ptx.py OUT_DIR

Needs numba-cuda's compile_ptx (libnvvm, libnvrtc: e.g. the nvidia-cuda-nvcc and nvidia-cuda-nvrtc
wheels installed to a private folder) and ptxas on PATH. The linked __dp4a shim cannot be linked here,
so its Python twin (four byte products) stands in: registers are close, instruction counts are not.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
from numba import cuda, int8, int32  # noqa: E402
from numba import types as T  # noqa: E402

import ggq.runtime.cuda.matvec_int as mvi  # noqa: E402


@cuda.jit(device=True, inline=True)
def _dp4a_twin(a, b, c):
    s = c
    for k in range(4):
        s += int32(int8((a >> (8 * k)) & 255)) * int32(int8((b >> (8 * k)) & 255))
    return int32(s)


mvi.dp4a = _dp4a_twin
from ggq.runtime.cuda import attention_tiles as atl  # noqa: E402
from ggq.runtime.cuda import matmul_int as mi  # noqa: E402


def arr(dt, nd=1):
    return T.Array(dt, nd, "C")


f32, i64 = T.float32, T.int64
MATMUL = (arr(i64, 2), arr(T.uint8), arr(T.int8), arr(T.uint16), arr(T.uint32), arr(T.float16), arr(T.int32, 2),
          arr(f32, 2), arr(f32, 2), i64, T.Array(f32, 2, "A"), T.boolean, T.float64)
KERNELS = {
    "matmul_int_wide": (mi._KERNELS[mi.WIDE][0], MATMUL),
    "matmul_int_narrow": (mi._KERNELS[mi.NARROW][0], MATMUL),
    "quantize_rows": (mi.quantize_rows, (T.Array(f32, 2, "A"), i64, i64, arr(f32), T.float64, T.boolean,
                                         arr(T.int32, 2), arr(f32, 2), arr(f32, 2))),
    "attend_tiles_64": (atl.attend_tiles(64), (arr(f32, 2), T.Array(f32, 3, "A"), T.Array(f32, 3, "A"), arr(i64),
                                               i64, i64, arr(f32, 2))),
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (kernel, sig) in KERNELS.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        path = out / f"{name}.ptx"
        path.write_text(ptx)
        done = subprocess.run(["ptxas", "-arch=sm_90", "-c", "-v", str(path), "-o", str(path.with_suffix(".o"))],
                              capture_output=True, text=True)
        info = [l.split("info    : ")[-1] for l in done.stderr.splitlines() if "Used" in l or "spill" in l]
        print(name, "|", "; ".join(info) or done.stderr.strip()[-300:], flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
