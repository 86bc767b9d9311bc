"""Foundation acceptance 1: on every 2-D weight of the shared model, for every block format, the blocks
ggq quantizes dequantize bit for bit the same under ggq.quants.dequantize and the gguf package's numpy
gguf.quants.dequantize (the oracle). Rows that are not a whole number of blocks (576-wide rows for the
256-element k-quants) are re-cut into rows of 256 so every value is still covered.

    python -P bench/dequant_vs_gguf.py        # writes the `dequant_vs_gguf` section of bench/RESULTS.md
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants as gguf_quants

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.quant_quality import source_weights  # noqa: E402
from bench.results import command_line, machine, markdown_table, write_section  # noqa: E402
from ggq import quants  # noqa: E402
from ggq.qtypes import QTYPES  # noqa: E402

FORMATS = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def rows_for(values: np.ndarray, block: int) -> np.ndarray:
    return values if values.shape[1] % block == 0 else values.reshape(-1, block)


def check(fmt: str, weights: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(tensors, tensors equal bit for bit, values compared)."""
    t = QTYPES[fmt]
    equal = values = 0
    for w in weights.values():
        x = rows_for(np.asarray(w, dtype=np.float32), t.block_size)
        blocks = quants.quantize(x, fmt)
        ours = quants.dequantize(blocks, fmt)
        theirs = gguf_quants.dequantize(blocks, GGMLQuantizationType[fmt]).astype(np.float32)
        equal += int(np.array_equal(ours.view(np.uint32), theirs.reshape(ours.shape).view(np.uint32)))
        values += ours.size
    return len(weights), equal, values


LLAMACPP_FILES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0", "Q5_1", "Q8_0"]


def check_llamacpp_file(name: str) -> list[object]:
    """Every tensor of llama.cpp's own file: ggq and gguf dequantize its blocks to the same bits."""
    from gguf import GGUFReader
    from bench.reference_files import ref_path
    reader = GGUFReader(ref_path(name))
    equal, types = 0, {}
    for t in reader.tensors:
        blocks = np.asarray(t.data).view(np.uint8).reshape(-1, np.asarray(t.data).view(np.uint8).shape[-1])
        ours = quants.dequantize(blocks, t.tensor_type.name)
        theirs = gguf_quants.dequantize(blocks, t.tensor_type).astype(np.float32).reshape(ours.shape)
        equal += int(np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)))
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    n = len(reader.tensors)
    mix = ", ".join(f"{k} x{v}" for k, v in sorted(types.items()))
    return [f"SmolLM2-{name}.gguf", mix, f"{equal}/{n}", "yes" if equal == n else "**NO**"]


def main() -> None:
    files = [check_llamacpp_file(name) for name in LLAMACPP_FILES]
    for row in files:
        print(*row, flush=True)
    weights = source_weights()
    rows = []
    for fmt in FORMATS:
        start = time.perf_counter()
        n, equal, values = check(fmt, weights)
        rows.append([fmt, n, equal, f"{values:,}", "yes" if equal == n else "**NO**",
                     f"{time.perf_counter() - start:.0f}"])
        print(*rows[-1], flush=True)
    write_section("dequant_vs_gguf", "\n".join([
        "## Dequantize vs the gguf package, every 2-D weight of the shared model (foundation acceptance 1)",
        "", f"Command: `{command_line()}` ({machine()})", "",
        "ggq quantizes each F16 weight of llama.cpp's conversion of the shared model; ggq.quants.dequantize "
        "and gguf.quants.dequantize must give the same float32 bits for every value.", "",
        markdown_table(["format", "tensors", "bit-identical", "values", "all equal", "seconds"], rows), "",
        "Blocks made by llama.cpp (foundation acceptance 2): every tensor of llama-quantize's files of the "
        "shared model, dequantized by ggq.quants and by gguf.quants.", "",
        markdown_table(["file (llama-quantize)", "tensor types", "bit-identical tensors", "all equal"], files)]))


if __name__ == "__main__":
    main()
