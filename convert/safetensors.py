"""A safetensors reader that trusts nothing in the file: memory-mapped, one tensor view at a time.

Layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
then the data section; data_offsets are [begin, end) relative to the data section. Every field is
checked before a byte of tensor data is touched, and every failure is a GGQError naming the file.
A sharded checkpoint's `model.safetensors.index.json` maps each tensor name to its shard.
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggq.errors import GGQError

# dtypes we convert, with their width; any other dtype (I64, F64, F8_*...) is refused.
DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie: `file`'s data section [begin, end), shape in numpy order."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: "SafetensorsFile"
    begin: int
    end: int


class SafetensorsFile:
    """One memory-mapped .safetensors file with its checked header."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._map = _map_file(self.path)
        n_header = _header_length(self._map, self.path)
        self.data_start = 8 + n_header
        self.tensors = _parse_header(bytes(self._map[8:self.data_start]), len(self._map) - self.data_start,
                                     self, self.path)

    def view(self, ref: TensorRef) -> np.ndarray:
        """The tensor's raw values (BF16 as uint16) without copying."""
        raw = self._map[self.data_start + ref.begin:self.data_start + ref.end]
        return raw.view(DTYPES[ref.dtype]).reshape(ref.shape)

    def release(self, ref: TensorRef) -> None:
        """Drop the tensor's pages from this process's resident set once they have been copied out.

        Without this every page of the checkpoint stays mapped until exit, so converting a 2 GB model
        shows 2 GB of RSS; the pages stay in the OS page cache, so a later read is still cheap.
        """
        mm = getattr(self._map, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = (self.data_start + ref.begin) // page * page
        end = min(-(-(self.data_start + ref.end) // page) * page, len(mm))
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def _map_file(path: Path) -> np.ndarray:
    try:
        size = os.path.getsize(path)
        if size < 8:
            raise GGQError(f"not a safetensors file: {size} bytes is shorter than the 8-byte header length",
                           path)
        return np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as e:
        raise GGQError(f"cannot read: {e.strerror or e}", path) from None


def _header_length(data: np.ndarray, path: Path) -> int:
    n = int(data[:8].view("<u8")[0])
    if n < 2 or n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise GGQError(f"not a safetensors file: header length {n} does not fit the file of {len(data)} bytes",
                       path)
    return n


def _parse_header(text: bytes, data_size: int, owner: SafetensorsFile, path: Path) -> dict[str, TensorRef]:
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GGQError(f"safetensors header is not valid JSON: {e}", path) from None
    if not isinstance(header, dict):
        raise GGQError("safetensors header is not a JSON object", path)
    refs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        refs[name] = _parse_entry(name, entry, data_size, owner, path)
    return refs


def _parse_entry(name: str, entry, data_size: int, owner: SafetensorsFile, path: Path) -> TensorRef:
    if not isinstance(entry, dict):
        raise GGQError(f"tensor '{name}': header entry is not an object", path)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise GGQError(f"tensor '{name}' has dtype {dtype} (supported: {', '.join(DTYPES)})", path)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise GGQError(f"tensor '{name}': shape {shape!r} is not a list of non-negative integers", path)
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        raise GGQError(f"tensor '{name}': data_offsets {offsets!r} lie outside the data section "
                       f"of {data_size} bytes (file truncated?)", path)
    expected = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise GGQError(f"tensor '{name}': {offsets[1] - offsets[0]} bytes stored for shape {shape} "
                       f"of {dtype} ({expected} bytes)", path)
    return TensorRef(name, dtype, tuple(shape), owner, offsets[0], offsets[1])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def to_f32(ref: TensorRef) -> np.ndarray:
    """A float32 copy of the tensor (BF16 widened exactly: its bits are the top half of an f32)."""
    raw = ref.file.view(ref)
    if ref.dtype == "BF16":
        values = raw.astype(np.uint32)
        values <<= 16  # in place: one f32-sized buffer at a time, not two
        values = values.view(np.float32)
    else:
        values = raw.astype(np.float32)
    del raw
    ref.file.release(ref)
    return values


def open_checkpoint(model_dir: Path) -> dict[str, TensorRef]:
    """All tensors of a checkpoint directory: the sharded index if present, else model.safetensors."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_NAME
    if index.is_file():
        return _open_sharded(model_dir, index)
    single = model_dir / SINGLE_NAME
    if single.is_file():
        return dict(SafetensorsFile(single).tensors)
    others = sorted(model_dir.glob("*.safetensors"))
    if len(others) == 1:
        return dict(SafetensorsFile(others[0]).tensors)
    raise GGQError(f"no {SINGLE_NAME} or {INDEX_NAME} (only safetensors checkpoints are supported)", model_dir)


def _open_sharded(model_dir: Path, index: Path) -> dict[str, TensorRef]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise GGQError(f"cannot read the shard index: {e}", index) from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise GGQError("shard index has no 'weight_map' of tensor name -> file name", index)
    shards: dict[str, SafetensorsFile] = {}
    refs: dict[str, TensorRef] = {}
    for shard_name in dict.fromkeys(weight_map.values()):
        shard_path = model_dir / shard_name
        if Path(shard_name).name != shard_name or not shard_path.is_file():
            raise GGQError(f"shard '{shard_name}' named in the index is missing", index)
        shards[shard_name] = SafetensorsFile(shard_path)
    for name, shard_name in weight_map.items():
        ref = shards[shard_name].tensors.get(name)
        if ref is None:
            raise GGQError(f"tensor '{name}' is not in the shard the index names", shards[shard_name].path)
        refs[name] = ref
    return refs
