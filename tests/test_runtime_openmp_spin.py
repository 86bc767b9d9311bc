"""ggq/openmp_spin.py: the OpenMP spin policy: long by default (decode), short for processes whose prompts
run numpy's BLAS between Numba kernels (exact=True, F32 weights), the user's value always kept.

ORACLE: libgomp reads GOMP_SPINCOUNT from the environment when it loads, so the environment a fresh
process has when its first parallel kernel runs is what counts (checked in subprocesses); gguf-py writes
the F32 file whose matrices the detection must see.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

PROBE = """
import os, sys
if os.environ["GGQ_PROBE_BEFORE_KERNEL"] == "1":
    import numpy as np
    from ggq.runtime.kernels.nn import silu_mul  # loads libgomp, which reads the spin now
import ggq
m = ggq.load(sys.argv[1], exact=sys.argv[2] == "exact")
print(os.environ.get("GOMP_SPINCOUNT"))
"""


def _spin_after_open(path, mode: str, user: str | None = None, kernel_first: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["GGQ_PROBE_BEFORE_KERNEL"] = "1" if kernel_first else "0"
    if user is not None:
        env["GOMP_SPINCOUNT"] = user
    out = subprocess.run([sys.executable, "-P", "-c", PROBE, str(path), mode], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()[-1]


def test_decode_gets_the_long_spin_and_exact_prompts_the_short_one(q4_1_gguf):
    from ggq.openmp_spin import LONG_SPIN, SHORT_SPIN
    assert _spin_after_open(q4_1_gguf, "default") == LONG_SPIN
    assert _spin_after_open(q4_1_gguf, "exact") == SHORT_SPIN


def test_the_users_value_wins_and_started_threads_keep_theirs(q4_1_gguf):
    from ggq.openmp_spin import LONG_SPIN
    assert _spin_after_open(q4_1_gguf, "exact", user="12345") == "12345"
    assert _spin_after_open(q4_1_gguf, "exact", kernel_first=True) == LONG_SPIN


def test_float32_matrices_are_found_and_vectors_are_not(tmp_path, q4_1_gguf):
    import gguf
    from ggq.openmp_spin import has_float32_matrices
    path = tmp_path / "f32.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert has_float32_matrices(path)
    vectors_only = tmp_path / "vec.gguf"
    writer = gguf.GGUFWriter(str(vectors_only), "llama")
    writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert not has_float32_matrices(vectors_only)
    assert not has_float32_matrices(q4_1_gguf)
    assert not has_float32_matrices(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF junk")
    assert not has_float32_matrices(tmp_path / "junk.gguf")
