"""ggq/blas_core.py: OpenBLAS's kernel set chosen by measurement, applied before numpy loads.

Oracles: OpenBLAS itself (OPENBLAS_VERBOSE=2 makes it print the core type it runs, in a fresh
process), and the cache file's JSON as written to disk.
"""
import json
import os
import subprocess
import sys

import pytest

from ggq import blas_core, tune_cache


def _core_loaded(env) -> str:
    """The 'Core: X' line OpenBLAS prints when numpy loads it in a fresh `import ggq, numpy` process."""
    done = subprocess.run([sys.executable, "-P", "-c", "import ggq, numpy"], env=env, capture_output=True,
                          text=True, timeout=60)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Core:")]
    return lines[0].split(":", 1)[1].strip() if lines else ""


def test_cached_core_type_is_what_openblas_loads(tmp_path):
    model, flags = tune_cache.cpuinfo()  # the suite runs on Linux x86-64 (CI): /proc/cpuinfo is there
    runnable = [core for core, needs in blas_core.CORES.items() if needs <= flags]
    assert runnable, "an x86-64 CI machine runs at least the AVX2 (Haswell) kernels"
    want = runnable[0]
    (tmp_path / "ggq-tune.json").write_text(json.dumps({blas_core.SECTION: {model: {"core": want, "gflops": {}}}}))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "GGQ_TUNE")}
    env.update(NUMBA_CACHE_DIR=str(tmp_path), OPENBLAS_VERBOSE="2")
    assert _core_loaded(env) == want
    assert _core_loaded(dict(env, OPENBLAS_CORETYPE="Sandybridge")) == "Sandybridge"  # the user's value wins
    auto = _core_loaded(dict(env, GGQ_TUNE="0"))  # tuning off: OpenBLAS's own pick
    assert auto and auto == _core_loaded({k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"} |
                                         {"NUMBA_CACHE_DIR": str(tmp_path / "empty")})  # = nothing cached


def test_tune_records_every_runnable_core(tmp_path, monkeypatch):
    model, flags = tune_cache.cpuinfo()
    assert model
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GGQ_TUNE", raising=False)
    record = blas_core.tune((64, 128, 256))
    on_disk = json.loads((tmp_path / "ggq-tune.json").read_text())[blas_core.SECTION][model]
    assert on_disk == record
    expected = {"auto", *(core for core, needs in blas_core.CORES.items() if needs <= flags)}
    assert set(record["gflops"]) == expected
    assert all(g > 0 for g in record["gflops"].values())
    assert record["core"] in ("", *expected)
