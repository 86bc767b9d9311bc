"""llama.cpp's own GGUF files of the shared model (SmolLM2-135M-Instruct), made once into
~/.cache/ggq-bench/ref/ ($GGQ_BENCH_CACHE/ref) and reused by the other bench scripts:

    SmolLM2-F16.gguf, SmolLM2-F32.gguf          convert_hf_to_gguf.py of the sdist's llama.cpp
    SmolLM2-<MIX>.gguf                          llama-quantize F16 -> Q8_0, Q4_0, ..., Q4_K_M, ..., Q6_K
    SmolLM2-pure-<FMT>.gguf                     llama-quantize --pure: every 2-D weight in FMT where its
                                                row length allows (k-quants fall back on rows of 576)
    SmolLM2-imatrix.gguf                        llama-imatrix on text/calibration.txt
    SmolLM2-pure-imat-<FMT>.gguf                the pure files, quantized with that imatrix

    /work/main/.venv/bin/python -P bench/reference_files.py     # make what is missing, print a summary

    from bench.reference_files import ensure, ref_path
    ref_path("pure-Q4_K")   # -> Path of SmolLM2-pure-Q4_K.gguf (made first if missing)
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.llamacpp import convert_script, tool  # noqa: E402

DATA = Path(os.environ.get("GGQ_TEST_DATA", Path.home() / ".cache" / "ggq-testdata")).expanduser()
MODEL_DIR = DATA / "smollm2-135m-instruct"
CALIBRATION = DATA / "text" / "calibration.txt"
REF = Path(os.environ.get("GGQ_BENCH_CACHE", Path.home() / ".cache" / "ggq-bench")).expanduser() / "ref"
PYTHON = Path(os.environ.get("GGQ_BENCH_PYTHON", "/work/main/.venv/bin/python"))

# llama-quantize's mixes (its own per-tensor type policy)
MIXES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
         "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
# single formats, quantized with --pure; the value is the llama-quantize ftype whose base type is the format
PURE = {"Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
        "Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K"}
# 32-wide formats fit every row of this model, so the embedding/output flags can name them too; for
# 256-wide formats those flags would bypass llama.cpp's shape fallback and --pure alone applies it
BLOCK32 = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
IMATRIX_CHUNKS = 24
THREADS = str(os.cpu_count() or 1)


def ref_path(name: str) -> Path:
    """Path of SmolLM2-<name>.gguf (name e.g. "F16", "Q4_K_M", "pure-Q4_K", "pure-imat-Q6_K",
    "imatrix"), made with everything else missing first."""
    path = REF / f"SmolLM2-{name}.gguf"
    if not path.is_file():
        ensure()
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def _run(cmd: list[str | Path], log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        subprocess.run([str(c) for c in cmd], check=True, stdout=f, stderr=subprocess.STDOUT)


def _make(path: Path, cmd_for_tmp) -> None:
    """Run cmd_for_tmp(tmp) and rename tmp to path on success (no half-written files in the cache)."""
    if path.is_file():
        return
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    print(f"making {path.name}", flush=True)
    try:
        _run(cmd_for_tmp(tmp), REF / "make.log")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _convert(outtype: str) -> Path:
    out = REF / f"SmolLM2-{outtype.upper()}.gguf"
    _make(out, lambda tmp: [PYTHON, convert_script(), MODEL_DIR, "--outtype", outtype, "--outfile", tmp])
    return out


def _quantize(src: Path, out: Path, ftype: str, flags: list[str]) -> None:
    _make(out, lambda tmp: [tool("llama-quantize"), *flags, src, tmp, ftype, THREADS])


def _pure_flags(fmt: str) -> list[str]:
    flags = ["--pure"]
    if fmt in BLOCK32:
        flags += ["--token-embedding-type", fmt.lower(), "--output-tensor-type", fmt.lower()]
    return flags


def ensure() -> dict[str, Path]:
    """Make every reference file that is missing; return name -> path."""
    REF.mkdir(parents=True, exist_ok=True)
    files = {"F16": _convert("f16"), "F32": _convert("f32")}
    f16 = files["F16"]
    for mix in MIXES:
        files[mix] = REF / f"SmolLM2-{mix}.gguf"
        _quantize(f16, files[mix], mix, [])
    for fmt, ftype in PURE.items():
        files[f"pure-{fmt}"] = REF / f"SmolLM2-pure-{fmt}.gguf"
        _quantize(f16, files[f"pure-{fmt}"], ftype, _pure_flags(fmt))
    imatrix = files["imatrix"] = REF / "SmolLM2-imatrix.gguf"
    _make(imatrix, lambda tmp: [tool("llama-imatrix"), "-m", f16, "-f", CALIBRATION, "-c", "512",
                                "--chunks", str(IMATRIX_CHUNKS), "-t", THREADS, "--no-ppl",
                                "--output-format", "gguf", "-o", tmp])
    for fmt, ftype in PURE.items():
        files[f"pure-imat-{fmt}"] = REF / f"SmolLM2-pure-imat-{fmt}.gguf"
        _quantize(f16, files[f"pure-imat-{fmt}"], ftype, ["--imatrix", imatrix, *_pure_flags(fmt)])
    return files


def weight_types(path: Path) -> Counter:
    """How many 2-D tensors of the file have each type (what llama-quantize actually did)."""
    from gguf import GGUFReader
    reader = GGUFReader(path)
    return Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)


def summary(files: dict[str, Path]) -> list[list[object]]:
    """file, MiB, and the types its 2-D tensors actually got."""
    rows = []
    for name, path in files.items():
        types = "-" if name == "imatrix" else ", ".join(f"{t} x{n}" for t, n in
                                                        sorted(weight_types(path).items()))
        rows.append([path.name, f"{path.stat().st_size / 2**20:.1f}", types])
    return rows


def main() -> None:
    from bench.results import command_line, markdown_table, write_section
    table = markdown_table(["file", "MiB", "2-D tensor types"], summary(ensure()))
    write_section("reference_files", (
        f"### llama.cpp reference files of SmolLM2-135M-Instruct\n\n`{command_line()}`; llama.cpp of "
        f"llama-cpp-python 0.3.36 (sdist), files in {REF}. pure-<FMT>: `llama-quantize --pure` (plus "
        f"--token-embedding-type/--output-tensor-type FMT for 32-wide formats); for k-formats llama.cpp "
        f"falls back on rows of 576 (Q2_K, Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), so "
        f"only the 30 ffn_down tensors (rows of 1536) are in the k-format. imatrix: llama-imatrix "
        f"-c 512 --chunks {IMATRIX_CHUNKS} on text/calibration.txt.\n\n{table}"))
    print(table)


if __name__ == "__main__":
    main()
