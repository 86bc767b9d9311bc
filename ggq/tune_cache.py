"""The file where ggq keeps what it measured on this machine: ggq-tune.json beside Numba's cache
($NUMBA_CACHE_DIR, else default_numba_cache(), as runtime/__init__.py sets it). Kernel shapes
(runtime/tune.py) and OpenBLAS's kernel set (ggq/blas_core.py) each own a part of it, keyed by the CPU
model that cpuinfo() reads. No numpy here:
blas_core reads it before numpy is loaded."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cpuinfo() -> tuple[str, set[str]]:
    """(CPU model name, flags) from /proc/cpuinfo; ("", set()) where there is none (macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "", set()
    model = flags = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value
    return model, set(flags.split())


def enabled() -> bool:
    """False where GGQ_TUNE=0 (or off/no/false): then nothing is measured or applied."""
    return os.environ.get("GGQ_TUNE", "1").strip() not in ("0", "off", "no", "false")


# settings read when the kernels compile (runtime/kernels/vecir_isa.py, vecir_tile.py, float_tile.py):
# Numba's cache key holds the CPU but not these, so each setting gets a cache of its own
CODEGEN_ENV = ("GGQ_NO_VNNI", "GGQ_NO_MADD", "GGQ_NO_ZMM", "GGQ_ZMM", "GGQ_NO_SDOT", "GGQ_TILE_ROWS", "GGQ_FLOAT_TILE")


# ggq's top-level packages and where they live. An ordinary install puts runtime/ and convert/ inside
# ggq/; an editable one (pip install -e) leaves them at the repository's top, beside ggq/, so a digest of
# ggq/ alone missed every kernel edit there and ran the old kernels from the cache.
SOURCE_PACKAGES = ("ggq", "ggq.runtime", "ggq.convert")


def source_roots() -> list[tuple[str, Path]]:
    """(package, folder) of each SOURCE_PACKAGES entry, found without importing it (this runs before
    numpy and Numba are loaded); a folder inside an earlier one is covered by that one."""
    import importlib.util
    roots: list[tuple[str, Path]] = []
    for name in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder).resolve()
            if not any(path == r or r in path.parents for _, r in roots):
                roots.append((name, path))
    return roots


def default_numba_cache() -> Path:
    """~/.cache/ggq/numba/<12 hex digits of a hash over ggq's own .py files and CODEGEN_ENV>. Numba
    checks only the timestamp of the file that defines a cached function, not of the intrinsics it
    inlines from other modules: after an upgrade that changed only runtime/kernels/vecir.py it would
    run the old kernels. A new digest also means new kernels, so what was measured for the old ones is
    measured again."""
    h = hashlib.blake2b(digest_size=6)
    for name, root in source_roots():
        for f in sorted(root.rglob("*.py")):
            h.update(f"{name}/{f.relative_to(root)}".encode())
            h.update(f.read_bytes())
    for name in CODEGEN_ENV:
        h.update(f"{name}={os.environ.get(name, '')};".encode())
    return Path.home() / ".cache" / "ggq" / "numba" / h.hexdigest()


def cache_path() -> Path:
    return Path(os.environ.get("NUMBA_CACHE_DIR") or default_numba_cache()) / "ggq-tune.json"


def read() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def write(data: dict) -> None:
    """Replace the file atomically (another ggq process may be reading it); a read-only cache is left
    alone (the next run measures again)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
