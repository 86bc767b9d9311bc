"""Each distinct launch of a file's decode step timed alone: 200 copies captured in one CUDA graph and
replayed (warm caches, graph launch overheads as in the real step), beside an empty kernel and an empty
kernel with matvec's arguments; registers and local memory per thread of each kernel.

    python3 -P bench/cuda_kernel_probe.py FILE.gguf [POS]
"""
from __future__ import annotations

import sys
import time

import ggq
from numba import cuda

from ggq.runtime.cuda.launch import Launch, Replay

COPIES = 200


@cuda.jit
def empty(out):
    if cuda.threadIdx.x == 0 and cuda.blockIdx.x == 0:
        out[0] = 1


@cuda.jit
def empty_wide(segs, u8, i8, u16, u32, f16, f32, x, up, norm_w, eps, prep, out, accumulate, softcap, sumsq, ss_in,
               ss_out):
    if cuda.threadIdx.x == 0 and cuda.blockIdx.x == 0:
        out[0, 0] = 1


def graph_time(launch: Launch) -> float:
    """Microseconds per copy of launch in a graph of COPIES."""
    r = Replay([launch] * COPIES)
    for lc in r.launches[:2]:
        lc.on(r.stream)
    r.stream.synchronize()
    r.capture()
    r.run()
    r.stream.synchronize()
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        r.run()
        r.stream.synchronize()
        best = min(best, time.perf_counter() - t)
    return best / COPIES * 1e6


def regs(kernel) -> str:
    try:
        return f"regs {kernel.get_regs_per_thread()} local {kernel.get_local_mem_per_thread()}"
    except Exception as e:  # noqa: BLE001
        return f"regs ? ({type(e).__name__})"


def main() -> None:
    m = ggq.load(sys.argv[1], ctx_size=256, device="cuda")
    b = m.transformer.backend
    pos = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    b.next_token(1, pos)
    launches = b.replay.launches
    first = launches[1]
    print(f"empty: {graph_time(Launch(empty, (72,), 256, 0, (b.b.state,))):.2f} us", flush=True)
    wide = Launch(empty_wide, first.grid, first.block, first.shared_bytes, first.args)
    print(f"empty, matvec's args: {graph_time(wide):.2f} us", flush=True)
    seen = {}
    for i, lc in enumerate(launches[:8] + launches[-2:]):
        key = (getattr(lc.kernel, "__name__", str(lc.kernel)), lc.grid, lc.block)
        if key in seen:
            continue
        seen[key] = graph_time(lc)
        print(f"launch {i}: {key} shared {lc.shared_bytes}: {seen[key]:.2f} us; {regs(lc.kernel)}", flush=True)
    t = time.perf_counter()
    for p in range(pos, pos + 64):
        b.next_token(1, p)
    print(f"whole step: {(time.perf_counter() - t) / 64 * 1e6:.1f} us per token ({len(launches)} launches)", flush=True)


if __name__ == "__main__":
    main()
