"""llama.cpp's published tokenizer test vectors (models/ggml-vocab-*.gguf + .inp/.out, read like
tests/test-tokenizer-0.cpp). Found in the reference llama.cpp source tree if present, else taken once from
the llama-cpp-python sdist on PyPI into ~/.cache/ggq-vocab (only models/ggml-vocab-*.gguf*).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
LLAMACPP_MODELS = Path.home() / ".cache" / "ggq-llamacpp" / "src" / "vendor" / "llama.cpp" / "models"
CACHE = Path(os.environ.get("GGQ_VOCAB_CACHE", Path.home() / ".cache" / "ggq-vocab"))
SEPARATOR = "\n__ggml_vocab_test__\n"


def vocab_dir(names: tuple[str, ...]) -> Path:
    """A directory holding ggml-vocab-<name>.gguf/.inp/.out for every name."""
    def complete(d: Path) -> bool:
        return all((d / f"ggml-vocab-{n}.gguf{ext}").is_file() for n in names for ext in ("", ".inp", ".out"))

    if complete(LLAMACPP_MODELS):
        return LLAMACPP_MODELS
    target = CACHE / "models"
    if not complete(target):
        _fetch(target)
    return target


def _fetch(target: Path) -> None:
    dl = CACHE / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    if not list(dl.glob("llama_cpp_python-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        SDIST, "-d", str(dl)], check=True)
    archive = next(dl.glob("llama_cpp_python-*.tar.gz"))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and "/vendor/llama.cpp/models/" in member.name and name.startswith("ggml-vocab-"):
                with tar.extractfile(member) as src:
                    (target / name).write_bytes(src.read())


def read_vectors(directory: Path, name: str) -> list[tuple[str, list[int]]]:
    """(text, expected ids) pairs; ids were made with add_special=false, parse_special=false."""
    raw = (directory / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    outs = (directory / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    texts = raw.split(SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()   # test-tokenizer-0.cpp stops at the end of the text, leaving no empty last test
    outs = outs[:len(texts)]
    assert len(texts) == len(outs), name
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


@functools.lru_cache(maxsize=None)
def metadata(path: Path) -> dict:
    from ggq.gguf_read import open_gguf
    with open_gguf(path) as f:
        return {k: (v.copy() if hasattr(v, "copy") and hasattr(v, "dtype") else v) for k, v in f.metadata.items()}
