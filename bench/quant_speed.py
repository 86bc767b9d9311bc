"""Quantize / dequantize throughput of ggq.quants per type (issue acceptance 4): MB/s of float32 values
(4 bytes each, in for quantize, out for dequantize) on one random float32 matrix, single-threaded
(numba.set_num_threads(1)) and on all cores. A first call on a few rows compiles (or loads from
Numba's cache) the kernels; its time is reported separately as "first call" and is not in the MB/s.

    /work/main/.venv/bin/python -P bench/quant_speed.py [--rows 4096] [--cols 4096] [--types Q4_0,Q4_K]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

MIN_CALLS, MAX_SECONDS = 3, 8.0  # best of at least 3 calls (the machine is shared), unless that takes long


def best_time(fn, *args) -> float:
    best, total, calls = float("inf"), 0.0, 0
    while calls < MIN_CALLS and total < MAX_SECONDS or total < 1.0:
        start = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - start
        best, total, calls = min(best, elapsed), total + elapsed, calls + 1
    return best


def measure(name: str, x: np.ndarray, threads: list[int]) -> list[object]:
    """One table row: first-call time, then quantize and dequantize MB/s per thread count."""
    import numba

    from ggq import quants
    mb = x.size * 4 / 1e6
    try:
        start = time.perf_counter()
        blocks = quants.dequantize(quants.quantize(x[:8], name), name)  # compile / load the cache
        first = time.perf_counter() - start
    except (ImportError, AttributeError, NotImplementedError):
        return [name, "not implemented"] + ["-"] * (2 * len(threads))
    blocks = quants.quantize(x, name)
    cells = []
    for n in threads:
        numba.set_num_threads(n)
        cells.append(f"{mb / best_time(quants.quantize, x, name):.0f}")
        cells.append(f"{mb / best_time(quants.dequantize, blocks, name):.0f}")
    return [name, f"{first:.1f} s"] + cells


def main() -> None:
    import numba

    from ggq.qtypes import QTYPES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--types", default=",".join(QTYPES))
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((args.rows, args.cols), dtype=np.float32)
    threads = [1, numba.config.NUMBA_NUM_THREADS]
    headers = ["type", "first call (compile)"]
    for n in threads:
        headers += [f"quantize MB/s, {n} thr", f"dequantize MB/s, {n} thr"]
    rows = []
    for name in args.types.split(","):
        rows.append(measure(name, x, threads))
        print(rows[-1], flush=True)
    table = markdown_table(headers, rows)
    body = (f"### Quantize / dequantize speed (acceptance 4)\n\n"
            f"`{command_line()}` at {git_revision()} on {machine()}; numba {numba.__version__}.\n"
            f"{args.rows} x {args.cols} float32 N(0,1) matrix, no importance; MB/s = float32 megabytes "
            f"(10^6) per second, best of >= 3 calls (fewer where they took over 8 s); first call = compile or cache load on 8 rows. "
            f"Other jobs shared the machine while this ran, so treat the numbers as lower bounds.\n\n{table}")
    write_section("quant_speed", body)
    print(table)


if __name__ == "__main__":
    main()
