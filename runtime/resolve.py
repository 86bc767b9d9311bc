"""What `ggq run MODEL` runs: a .gguf file as it is; a Hugging Face folder or hub repo id converted once
to q4_k_m into a cache folder and reused (like Ollama's pull, without a registry of its own).

Cache: $GGQ_CACHE, else ~/.cache/ggq/models. A folder's cached file is named after its absolute path and
the sizes and times of its weight and config files, so editing the checkpoint converts it again.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from ggq.errors import GGQError

RUN_TYPE = "q4_k_m"


def cache_dir() -> Path:
    return Path(os.environ.get("GGQ_CACHE") or Path.home() / ".cache" / "ggq" / "models").expanduser()


def _fingerprint(model_dir: Path) -> str:
    """Changes when the checkpoint's config, tokenizer or weights change."""
    h = hashlib.sha256(str(model_dir.resolve()).encode())
    for f in sorted(model_dir.iterdir()):
        if f.suffix in (".json", ".safetensors", ".model", ".jinja"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached_name(src: str, model_dir: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in src.strip("/").split("/")[-1]) or "model"
    return f"{stem}-{_fingerprint(model_dir)}.{RUN_TYPE}.gguf"


def resolve_model(model: str, revision: str | None = None, quiet: bool = False) -> Path:
    """The .gguf file to run for MODEL (a .gguf path, a checkpoint folder, or a hub repo id)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if model.endswith(".gguf"):
        raise GGQError("no such file", model)
    from ggq.convert.checkpoint import resolve_source
    from ggq.convert.pipeline import convert

    model_dir = resolve_source(model, revision)  # a folder as it is, or the hub snapshot (cached)
    out = cache_dir() / _cached_name(model, model_dir)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        if not quiet:
            print(f"ggq: converting {model} to {RUN_TYPE} once, into {out}", file=sys.stderr, flush=True)
        convert(str(model_dir), RUN_TYPE, str(out), quiet=quiet)
    return out
