"""Decode mat-vec speed per weight type: the integer-dot kernels (activations quantized to Q8_0/Q8_1/Q8_K,
ggq.runtime.kernels.dot_table) against the float-activation kernels (fused dequantize-and-dot,
ggq.runtime.kernels.weight_kernels), in GB/s of weight bytes read per second, 1 and 2 threads; and
llama.cpp's whole-model decode for scale (llama-bench tg: file bytes x tokens/s, an upper bound on the
weight bytes it streams per second, attention and everything else included).

    /work/main/.venv/bin/python -P bench/kernel_speed.py [--types Q4_0,Q4_K] [--llama Q4_0,Q4_K_M,Q8_0]

Shapes: legacy types 1536x576 (SmolLM2 ffn_gate/up) and 49152x576 (token_embd/output); k-quants need
rows of a multiple of 256, so 576x1536 (ffn_down) and 49152x512. Weights: ggq.quants.quantize of
N(0,1) values (4096 rows, tiled to the large shape). Times are the best of repeated calls (wall clock),
the integer path's time includes quantizing the activation row.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
REF = Path.home() / ".cache" / "ggq-bench" / "ref"


def best_time(fn, budget_s: float = 0.6) -> float:
    fn()
    best, total = float("inf"), 0.0
    while total < budget_s or best == float("inf"):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total = min(best, elapsed), total + elapsed
    return best


def weights(type_name: str, rows: int, n: int) -> np.ndarray:
    from ggq.quants import quantize
    base = quantize(np.random.default_rng(0).standard_normal((min(rows, 4096), n), dtype=np.float32), type_name)
    return np.ascontiguousarray(np.tile(base, (-(-rows // base.shape[0]), 1))[:rows])


def measure(type_name: str, rows: int, n: int, threads: list[int]) -> list[object]:
    import numba

    from ggq.runtime.kernels import weight_kernels
    from ggq.runtime.kernels.actquant import QUANTIZERS, act_row_bytes
    from ggq.runtime.kernels.dot_table import dot_kernels
    w = weights(type_name, rows, n)
    x = np.random.default_rng(1).standard_normal((1, n), dtype=np.float32)
    out = np.empty(rows, np.float32)
    fmt, matvec, _ = dot_kernels(type_name)
    quantize_x = QUANTIZERS[fmt, "x86"]
    xq = np.empty((1, act_row_bytes(fmt, n)), np.uint8)
    float_matvec, _, _ = weight_kernels(type_name)

    def integer_path():
        quantize_x(x, xq)
        matvec(w, xq[0], out)

    cells = [type_name, f"{rows}x{n}", f"{w.nbytes / 1e6:.1f}"]
    for t in threads:
        numba.set_num_threads(t)
        t_int = best_time(integer_path)
        t_float = best_time(lambda: float_matvec(w, x[0], out))
        cells += [f"{t_int * 1e6:.0f} us / {w.nbytes / t_int / 1e9:.1f}", f"{w.nbytes / t_float / 1e9:.1f}"]
    return cells


def llama_bench(names: list[str], threads: list[int]) -> list[list[object]]:
    from bench.llamacpp import tool
    rows = []
    for name in names:
        path = REF / f"SmolLM2-{name}.gguf"
        if not path.is_file():
            rows.append([name, "missing"] + ["-"] * len(threads))
            continue
        cells = [name, f"{path.stat().st_size / 1e6:.1f}"]
        for t in threads:
            out = subprocess.run([str(tool("llama-bench")), "-m", str(path), "-t", str(t), "-p", "0", "-n", "64",
                                  "-r", "3", "-o", "csv"], capture_output=True, text=True, check=True).stdout
            tps = float(re.findall(r'"([0-9.]+)","[0-9.]+"\s*$', out.strip(), re.M)[-1])
            cells.append(f"{tps:.1f} tok/s / {path.stat().st_size * tps / 1e9:.1f}")
        rows.append(cells)
        print(cells, flush=True)
    return rows


def main() -> None:
    import numba
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(LEGACY + KQUANTS))
    ap.add_argument("--llama", default="Q4_0,Q5_0,Q8_0,Q4_K_M,Q6_K", help="reference files to llama-bench ('' to skip)")
    args = ap.parse_args()
    threads = [1, 2]
    headers = ["type", "shape", "MB"]
    for t in threads:
        headers += [f"int-dot {t} thr: time / GB/s", f"float-act {t} thr GB/s"]
    rows = []
    for name in args.types.split(","):
        shapes = [(1536, 576), (49152, 576)] if name in LEGACY else [(576, 1536), (49152, 512)]
        for r, n in shapes:
            rows.append(measure(name, r, n, threads))
            print(rows[-1], flush=True)
    body = (f"### Decode mat-vec kernels: integer dot vs float activations\n\n"
            f"`{command_line()}` at {git_revision()} on {machine()}; numba {numba.__version__}. GB/s = weight "
            f"bytes (10^9) per second, best of repeated calls; the integer path includes quantizing the "
            f"activation row. Other jobs shared the 2 cores while this ran: 2-thread numbers suffer most.\n\n"
            + markdown_table(headers, rows))
    if args.llama:
        llama_rows = llama_bench(args.llama.split(","), threads)
        body += ("\n\nllama.cpp (llama-bench tg64, same machine): tokens/s and file bytes x tokens/s in GB/s, "
                 "whole model decode\n\n" + markdown_table(["file", "MB"] + [f"{t} thr" for t in threads], llama_rows))
    write_section("kernel_speed", body)
    print(body)


if __name__ == "__main__":
    main()
