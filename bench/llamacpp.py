"""Build (once) and locate the reference llama.cpp: the copy vendored in the PyPI sdist of
llama-cpp-python==0.3.36, CPU, Release, in a cache outside the repository.

    python bench/llamacpp.py            # build if needed, print the bin directory
    python -c "from bench.llamacpp import tool; print(tool('llama-quantize'))"

Cache: $GGQ_LLAMACPP_CACHE, else ~/.cache/ggq-llamacpp.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
# llama-cli needs the server library in this llama.cpp (LLAMA_BUILD_SERVER=OFF here), so the plain
# text-completion tool is llama-completion.
TOOLS = ("llama-quantize", "llama-perplexity", "llama-simple", "llama-bench", "llama-completion",
         "llama-imatrix", "llama-tokenize", "llama-gguf-split")
CACHE = Path(os.environ.get("GGQ_LLAMACPP_CACHE", Path.home() / ".cache" / "ggq-llamacpp"))


def source_dir() -> Path:
    """vendor/llama.cpp of the sdist, downloaded and unpacked once."""
    src = CACHE / "src"
    marker = src / "vendor" / "llama.cpp" / "CMakeLists.txt"
    if marker.is_file():
        return marker.parent
    dl = CACHE / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    if not list(dl.glob("llama_cpp_python-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(dl), SDIST], check=True)
    archive = next(dl.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(CACHE, filter="data")
    (CACHE / top).rename(src)
    return marker.parent


def _no_amx_flags() -> list[str]:
    """On x86, compile without AMX: ggml's AMX matmul (picked by -march=native on Sapphire Rapids and
    later) dies with SIGSEGV in every tool on hosts that do not grant the process AMX tile state (seen
    on this project's Xeon machines). Explicit -mno-* flags win over -march=native in GCC and Clang."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]


def _cmake_args(src: Path, build_dir: Path) -> list[str]:
    return ["cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *_no_amx_flags(),
            "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"]


def build(jobs: int | None = None) -> Path:
    """Configure and build the tools; reuse an existing build made with the same cmake options."""
    build_dir = CACHE / "build"
    bin_dir = build_dir / "bin"
    stamp = build_dir / "ggq-cmake-args.txt"
    args = _cmake_args(CACHE / "src" / "vendor" / "llama.cpp", build_dir)
    if stamp.is_file() and stamp.read_text() == " ".join(args) and all((bin_dir / t).is_file() for t in TOOLS):
        return bin_dir
    source_dir()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs or os.cpu_count()),
                    "--target", *TOOLS], check=True)
    stamp.write_text(" ".join(args))
    return bin_dir


def tool(name: str) -> Path:
    return build() / name


def link_program(src: Path, exe: Path) -> Path:
    """A C++ program using libllama, compiled and linked against the build's static libraries;
    rebuilt when the source is newer than the binary."""
    lib = build().parent
    if exe.is_file() and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    inc = source_dir()
    subprocess.run(["g++", "-O2", "-std=c++17", f"-I{inc}/include", f"-I{inc}/ggml/include", str(src),
                    str(lib / "src/libllama.a"), str(lib / "ggml/src/libggml.a"), str(lib / "ggml/src/libggml-cpu.a"),
                    str(lib / "ggml/src/libggml-base.a"), "-fopenmp", "-lpthread", "-ldl", "-o", str(exe)], check=True)
    return exe


def trace_tool() -> Path:
    """bench/llamacpp_trace.cpp: llama-simple's loop, dumping every tensor it computes."""
    return link_program(Path(__file__).with_name("llamacpp_trace.cpp"), CACHE / "trace" / "llama-trace")


def convert_script() -> Path:
    return source_dir() / "convert_hf_to_gguf.py"


if __name__ == "__main__":
    print(build())
