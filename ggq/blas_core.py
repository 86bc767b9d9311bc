"""Which of OpenBLAS's kernel sets runs the prompt path's matmuls: measured per CPU, not guessed.

numpy's bundled OpenBLAS picks its kernels from the CPU it detects, and its table lags new chips: on
an AMD EPYC Zen 5 (OpenBLAS 0.3.31) it picks the AVX2 Haswell kernels, 100 GFLOP/s a thread, where its
AVX-512 SkylakeX kernels run at 180. Which set is fastest is a property of the core (Zen 4 runs
512-bit vectors as two halves, Zen 5 and Intel's server cores natively), so `tune()` times each set
the CPU can run, each in a fresh process (OpenBLAS reads OPENBLAS_CORETYPE once, when it loads), and
caches the winner per CPU model beside the kernel shapes (runtime/tune.py's ggq-tune.json).
`apply()` sets OPENBLAS_CORETYPE from that cache when ggq is imported, before numpy loads
OpenBLAS; it changes nothing where the user set the variable, numpy is already loaded, GGQ_TUNE=0, or
nothing was measured yet (a choice made in a process applies from the next one). No numpy here.
"""
from __future__ import annotations

import os
import subprocess
import sys

from ggq import tune_cache

# OpenBLAS core type -> the CPU flags (Linux /proc/cpuinfo names) its kernels need
CORES: dict[str, frozenset[str]] = {
    "Haswell": frozenset({"avx2", "fma"}),
    "SkylakeX": frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"}),
    "Cooperlake": frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"}),
}
MARGIN = 0.05  # a core type must beat OpenBLAS's own pick by this much to replace it
SECTION = "openblas"

# Times one thread's float32 matmul of a prompt-sized problem; prints GFLOP/s (best of 5 runs of 0.1 s).
_PROBE = """
import time, numpy as np
x = np.random.rand({t}, {k}).astype(np.float32); w = np.random.rand({n}, {k}).astype(np.float32)
out = np.empty(({t}, {n}), np.float32); np.matmul(x, w.T, out=out); best = 0.0
for _ in range(5):
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.1:
        np.matmul(x, w.T, out=out); runs += 1
    best = max(best, 2 * {t} * {k} * {n} * runs / (time.perf_counter() - start) / 1e9)
print(best)
"""


def cached_choice() -> dict | None:
    model, _ = tune_cache.cpuinfo()
    return tune_cache.read().get(SECTION, {}).get(model) if model else None


def apply() -> None:
    """OPENBLAS_CORETYPE from the cache, if it can still take effect (see the module docstring)."""
    if "numpy" in sys.modules or "OPENBLAS_CORETYPE" in os.environ or not tune_cache.enabled():
        return
    choice = cached_choice()
    if choice and choice.get("core"):
        os.environ["OPENBLAS_CORETYPE"] = choice["core"]


def _gflops(core: str, shape: tuple[int, int, int]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(OPENBLAS_NUM_THREADS="1", GGQ_TUNE="0", **({"OPENBLAS_CORETYPE": core} if core else {}))
    t, k, n = shape
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE.format(t=t, k=k, n=n)], env=env, capture_output=True,
                              text=True, timeout=60)
        return float(done.stdout.strip()) if done.returncode == 0 else 0.0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0.0


def tune(shape: tuple[int, int, int], force: bool = False) -> dict | None:
    """Time OpenBLAS's own pick ("") and every core type this CPU can run on a [t, k] x [k, n] matmul;
    cache {"core": winner or "", "gflops": {...}} for this CPU model. None where there is no choice."""
    model, flags = tune_cache.cpuinfo()
    if not model or not tune_cache.enabled():
        return None
    cached = cached_choice()
    if cached and not force:
        return cached
    candidates = ["", *[core for core, needs in CORES.items() if needs <= flags]]
    gflops = {core: _gflops(core, shape) for core in candidates}
    best = max(candidates, key=gflops.get)
    record = {"core": best if gflops[best] > gflops[""] * (1 + MARGIN) else "",
              "gflops": {core or "auto": round(g, 1) for core, g in gflops.items()}}
    data = tune_cache.read()
    data.setdefault(SECTION, {})[model] = record
    tune_cache.write(data)
    return record


def tune_at_first_use(shape: tuple[int, int, int]) -> None:
    """tune() once per CPU, as the runtime's first decode does it: not where OPENBLAS_CORETYPE is set,
    since the user's choice then stands and a measurement could not apply (`ggq tune` still measures)."""
    if "OPENBLAS_CORETYPE" not in os.environ:
        tune(shape)
