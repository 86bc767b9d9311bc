"""Are ggq's k-quants byte-identical to llama-quantize on a real model?

For every k-quant tensor (Q2_K..Q6_K) in the reference files of bench/reference_files.py (the mixes
and the pure files, with and without imatrix), quantize the same F16 source tensor with ggq (importance
= in_sum2 / counts from SmolLM2-imatrix.gguf for the imatrix files, as llama-quantize derives it) and
count the rows whose bytes differ. Writes the section "kquants-vs-llamacpp" of bench/RESULTS.md.

    .venv/bin/python -P bench/kquants_vs_llamacpp.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGUFReader

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.reference_files import ensure  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

KTYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def importance_table(path: Path) -> dict[str, np.ndarray]:
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(path).tensors}
    return {name[:-len(".in_sum2")]: (sums / np.float32(round(float(tensors[name[:-8] + ".counts"][0]))))
            .astype(np.float32) for name, sums in tensors.items() if name.endswith(".in_sum2")}


def compare_file(path: Path, source: dict, importance: dict | None) -> tuple[int, int, int, float]:
    """(k-quant tensors, rows, differing rows, ggq seconds) for one reference file."""
    from ggq.quants import quantize

    n_tensors = n_rows = n_bad = 0
    seconds = 0.0
    for t in GGUFReader(path).tensors:
        if t.tensor_type.name not in KTYPES:
            continue
        x = np.array(source[t.name].data).astype(np.float32)
        imp = importance.get(t.name) if importance is not None else None
        start = time.perf_counter()
        ours = quantize(x, t.tensor_type.name, imp)
        seconds += time.perf_counter() - start
        theirs = np.array(t.data, dtype=np.uint8).reshape(ours.shape)
        n_tensors += 1
        n_rows += ours.shape[0]
        n_bad += int((ours != theirs).any(axis=1).sum())
    return n_tensors, n_rows, n_bad, seconds


def main() -> None:
    files = ensure()
    source = {t.name: t for t in GGUFReader(files["F16"]).tensors}
    importance = importance_table(files["imatrix"])
    rows = []
    for name, path in sorted(files.items()):
        if name in ("F16", "F32", "imatrix"):
            continue
        n_tensors, n_rows, n_bad, seconds = compare_file(path, source, importance if "imat" in name else None)
        if n_tensors:
            rows.append([name, n_tensors, n_rows, n_bad, f"{seconds:.2f}"])
            print(*rows[-1], flush=True)
    body = "\n".join([
        "## k-quants vs llama-quantize (bench/kquants_vs_llamacpp.py)",
        "",
        f"`{command_line()}` at {git_revision()} on {machine()}.",
        "Every Q2_K..Q6_K tensor of each SmolLM2 reference file, requantized by ggq from the same F16 "
        "source (imatrix files: with the same importance). Differing rows must be 0. Seconds include "
        "Numba compilation on first use.",
        "",
        markdown_table(["file", "k-quant tensors", "rows", "rows differing", "ggq seconds"], rows),
    ])
    write_section("kquants-vs-llamacpp", body)


if __name__ == "__main__":
    main()
