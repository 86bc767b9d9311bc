"""Read GGUF files (v2 and v3) through a memory map, treating every byte as hostile.

Every count, length and offset is checked against what is left of the file before anything is allocated,
so a corrupted or malicious file gives a `GGQError` naming what is wrong, never a crash, a hang or a
huge allocation. Tensor data is never copied: `GGUFFile.raw(name)` is a view into the map.

Layout (little endian): magic "GGUF", version u32, n_tensors u64, n_kv u64, then n_kv (key string,
type u32, value), then n_tensors (name string, n_dims u32, ne[n_dims] u64, type u32, offset u64),
padding to `general.alignment`, then the data section. Strings are a u64 length plus UTF-8 bytes.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

from ggq.errors import GGQError
from ggq.qtypes import BY_ID, QType

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 16  # llama.cpp uses 32; anything this large is corruption, not a choice
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 8  # arrays of arrays deeper than this are corruption (and would exhaust the stack)
MAX_LIST_LENGTH = 1 << 24  # string/array elements become Python objects (~60 bytes each): cap the blow-up
MAX_COUNT = 1 << 20  # of metadata keys and of tensors; real models have tens and thousands
_INT64_MAX = (1 << 63) - 1

# Fixed-size value types: struct format and numpy dtype (little endian).
_SCALARS: dict[GGUFValueType, tuple[str, str]] = {
    GGUFValueType.UINT8: ("<B", "<u1"), GGUFValueType.INT8: ("<b", "<i1"),
    GGUFValueType.UINT16: ("<H", "<u2"), GGUFValueType.INT16: ("<h", "<i2"),
    GGUFValueType.UINT32: ("<I", "<u4"), GGUFValueType.INT32: ("<i", "<i4"),
    GGUFValueType.UINT64: ("<Q", "<u8"), GGUFValueType.INT64: ("<q", "<i8"),
    GGUFValueType.FLOAT32: ("<f", "<f4"), GGUFValueType.FLOAT64: ("<d", "<f8"),
    GGUFValueType.BOOL: ("<B", "<u1"),
}
# Smallest encoding of one value of each type: bounds array counts by the bytes left.
_MIN_SIZE = {**{t: struct.calcsize(f) for t, (f, _) in _SCALARS.items()},
             GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
_SIZES = {fmt: struct.calcsize(fmt) for fmt, _ in _SCALARS.values()}
_MIN_KV_SIZE = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: `shape` in numpy order (..., rows, n_per_row); `offset` absolute in the file."""
    name: str
    shape: tuple[int, ...]
    qtype: QType
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """A read position over the file's bytes; every read is bounds-checked and names what it reads."""

    def __init__(self, buf: np.ndarray, path: str):
        self.buf = memoryview(buf)  # slicing a memoryview is much cheaper than slicing an ndarray
        self.pos = 0
        self.path = path

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, message: str) -> GGQError:
        return GGQError(message, self.path)

    def need(self, n: int, what: str) -> None:
        if n > self.left:
            raise self.fail(f"{what} runs past end of file")

    def unpack(self, fmt: str, what: str) -> Any:
        size = _SIZES[fmt]
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        chunk = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def string(self, what: str) -> str:
        n = self.unpack("<Q", f"{what} length")
        if n > self.left:
            raise self.fail(f"{what} string length {n} runs past end of file")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


def _value_type(cur: _Cursor, what: str) -> GGUFValueType:
    tid = cur.unpack("<I", f"{what} type")
    try:
        return GGUFValueType(tid)
    except ValueError:
        raise cur.fail(f"{what} has unknown value type {tid}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, what: str, depth: int = 0) -> tuple[Any, Any]:
    """One value of type `vtype`; returns (value, element type or None)."""
    if vtype == GGUFValueType.STRING:
        return cur.string(what), None
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, what, depth)
    value = cur.unpack(_SCALARS[vtype][0], what)
    return (bool(value) if vtype == GGUFValueType.BOOL else value), None


def _read_array(cur: _Cursor, what: str, depth: int) -> tuple[Any, GGUFValueType]:
    if depth >= MAX_ARRAY_NESTING:
        raise cur.fail(f"{what} nests arrays deeper than {MAX_ARRAY_NESTING}")
    etype = _value_type(cur, f"{what} array element")
    count = cur.unpack("<Q", f"{what} array length")
    if count * _MIN_SIZE[etype] > cur.left:
        raise cur.fail(f"{what} array length {count} runs past end of file")
    if etype in _SCALARS:
        dtype = np.dtype(_SCALARS[etype][1])
        # A copy: metadata is small and must outlive the map.
        arr = np.frombuffer(cur.take(count * dtype.itemsize, what), dtype=dtype)
        arr = arr != 0 if etype == GGUFValueType.BOOL else arr.astype(dtype.newbyteorder("="))
        return arr, etype
    if count > MAX_LIST_LENGTH:
        raise cur.fail(f"{what} array length {count} is over the limit of {MAX_LIST_LENGTH}")
    if etype == GGUFValueType.STRING:
        return _read_strings(cur, count, what), etype
    return [_read_value(cur, etype, f"{what}[{i}]", depth + 1)[0] for i in range(count)], etype


_U64 = struct.Struct("<Q")


def _read_strings(cur: _Cursor, count: int, what: str) -> list[str]:
    """A string array, in one tight loop: vocabularies hold hundreds of thousands of them."""
    buf, pos, end = cur.buf, cur.pos, len(cur.buf)
    out = []
    for i in range(count):
        if end - pos < 8:
            raise cur.fail(f"{what}[{i}] length runs past end of file")
        (n,) = _U64.unpack_from(buf, pos)
        pos += 8
        if n > end - pos:
            raise cur.fail(f"{what}[{i}] string length {n} runs past end of file")
        try:
            out.append(str(buf[pos:pos + n], "utf-8"))
        except UnicodeDecodeError:
            raise cur.fail(f"{what}[{i}] is not valid UTF-8") from None
        pos += n
    cur.pos = pos
    return out


def _read_header(cur: _Cursor) -> tuple[int, int, int]:
    if len(cur.buf) >= 4 and bytes(cur.buf[:4]) != GGUF_MAGIC:
        raise cur.fail("not a GGUF file (bad magic)")
    if len(cur.buf) < 24:
        raise cur.fail("truncated header")
    cur.pos = 4
    version = cur.unpack("<I", "version")
    if version == 1:
        raise cur.fail("GGUF version 1 is not supported (only versions 2 and 3)")
    if version not in (2, 3):
        hint = " (a big-endian file?)" if struct.unpack("<I", struct.pack(">I", version))[0] in (2, 3) else ""
        raise cur.fail(f"unsupported GGUF version {version}{hint}")
    n_tensors = cur.unpack("<Q", "tensor count")
    n_kv = cur.unpack("<Q", "metadata count")
    if n_kv * _MIN_KV_SIZE > cur.left:
        raise cur.fail(f"metadata count {n_kv} runs past end of file")
    if n_tensors * _MIN_TENSOR_INFO_SIZE > cur.left:
        raise cur.fail(f"tensor count {n_tensors} runs past end of file")
    for count, what in ((n_kv, "metadata count"), (n_tensors, "tensor count")):
        if count > MAX_COUNT:
            raise cur.fail(f"{what} {count} is over the limit of {MAX_COUNT}")
    return version, n_tensors, n_kv


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, tuple]]:
    metadata: dict[str, Any] = {}
    types: dict[str, tuple] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise cur.fail(f"duplicate metadata key '{key}'")
        vtype = _value_type(cur, f"metadata key '{key}'")
        metadata[key], etype = _read_value(cur, vtype, f"metadata key '{key}'")
        types[key] = (vtype, etype)
    return metadata, types


def _alignment(cur: _Cursor, metadata: dict, types: dict) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"][0] != GGUFValueType.UINT32:
        raise cur.fail("general.alignment is not a UINT32")
    if value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
        raise cur.fail(f"general.alignment {value} is not a power of two up to {MAX_ALIGNMENT}")
    return value


def _read_tensor_info(cur: _Cursor, index: int) -> tuple[str, tuple[int, ...], QType, int]:
    """Name, shape in numpy order, type and offset relative to the data section."""
    name = cur.string(f"tensor #{index} name")
    what = f"tensor '{name}'"
    n_dims = cur.unpack("<I", f"{what} dimension count")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"{what} has {n_dims} dimensions (must be 1 to {MAX_DIMS})")
    ne = [cur.unpack("<Q", f"{what} dimensions") for _ in range(n_dims)]
    n = 1
    for d in ne:
        n *= d
        if d == 0 or n > _INT64_MAX:
            raise cur.fail(f"{what} has invalid shape {ne}")
    tid = cur.unpack("<I", f"{what} type")
    if tid not in BY_ID:
        raise cur.fail(f"{what} has unknown or unsupported type id {tid}")
    qt = BY_ID[tid]
    if ne[0] % qt.block_size:
        raise cur.fail(f"{what}: row of {ne[0]} is not a multiple of {qt.name} block size {qt.block_size}")
    offset = cur.unpack("<Q", f"{what} offset")
    return name, tuple(reversed(ne)), qt, offset


def _read_tensor_infos(cur: _Cursor, n_tensors: int) -> list[tuple]:
    infos, seen = [], set()
    for i in range(n_tensors):
        info = _read_tensor_info(cur, i)
        if info[0] in seen:
            raise cur.fail(f"duplicate tensor name '{info[0]}'")
        seen.add(info[0])
        infos.append(info)
    return infos


def _place_tensors(cur: _Cursor, infos: list[tuple], data_offset: int, alignment: int) -> dict[str, TensorInfo]:
    """Turn relative offsets into absolute ones, checking alignment and that the data lies in the file."""
    tensors: dict[str, TensorInfo] = {}
    for name, shape, qt, rel in infos:
        n_elements = 1
        for d in shape:
            n_elements *= d
        nbytes = n_elements // qt.block_size * qt.type_size
        if rel % alignment:
            raise cur.fail(f"tensor '{name}' data offset {rel} is not aligned to {alignment}")
        if data_offset + rel + nbytes > len(cur.buf):
            raise cur.fail(f"tensor '{name}' data runs past end of file")
        tensors[name] = TensorInfo(name, shape, qt, data_offset + rel, nbytes)
    return tensors


class GGUFFile:
    """An open GGUF file. Use as a context manager or call `close()`; views from `raw()` stay valid."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._map = _map_file(self.path)
        cur = _Cursor(self._map, self.path)
        self.version, n_tensors, n_kv = _read_header(cur)
        self.metadata, self.metadata_types = _read_metadata(cur, n_kv)
        self.alignment = _alignment(cur, self.metadata, self.metadata_types)
        infos = _read_tensor_infos(cur, n_tensors)
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self.tensors: dict[str, TensorInfo] = _place_tensors(cur, infos, self.data_offset, self.alignment)
        self.file_size = len(self._map)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a uint8 view shaped (*shape[:-1], row_bytes); no copy."""
        if self._map is None:
            raise GGQError("file is closed", self.path)
        if name not in self.tensors:
            raise GGQError(f"no tensor named '{name}'", self.path)
        t = self.tensors[name]
        flat = self._map[t.offset:t.offset + t.nbytes]
        return flat.reshape(*t.shape[:-1], t.qtype.row_bytes(t.shape[-1]))

    def buffer(self) -> np.ndarray:
        """The whole file as one read-only uint8 array (tensor i's bytes start at tensors[name].offset)."""
        if self._map is None:
            raise GGQError("file is closed", self.path)
        return self._map

    def close(self) -> None:
        # Views handed out keep the map alive; dropping ours unmaps once they are gone.
        self._map = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_file(path: str) -> np.ndarray:
    try:
        if os.path.isdir(path):
            raise GGQError("is a directory, not a GGUF file", path)
        if os.path.getsize(path) == 0:
            raise GGQError("truncated header (empty file)", path)
        return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    except OSError as e:
        raise GGQError(f"cannot read: {e.strerror or e}", path) from None


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and validate a GGUF file; raises GGQError for anything unreadable or malformed."""
    return GGUFFile(path)
