"""Write GGUF v3 files, streaming tensor data and replacing the target only when all of it is written.

Everything that can be checked up front (keys, values, tensor names, shapes, types) is checked before a
byte is written. The header, metadata and tensor infos go out first; then each tensor's bytes are taken
from the `data` iterable one at a time, so a converter never holds more than one tensor in memory.
The file is written to `.<name>.tmp-XXXX` beside the target and renamed over it on success; on any
exception (KeyboardInterrupt included) the temp file is removed and the target is left untouched.
"""
from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

from ggq.errors import GGQError
from ggq.gguf_read import _SCALARS, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ALIGNMENT, MAX_DIMS
from ggq.qtypes import QType, qtype

GGUF_VERSION = 3
MAX_TENSOR_NAME_BYTES = 63  # llama.cpp's GGML_MAX_NAME is 64 including the terminating NUL
_INT_RANGES = {GGUFValueType.UINT8: (0, 2**8 - 1), GGUFValueType.INT8: (-2**7, 2**7 - 1),
               GGUFValueType.UINT16: (0, 2**16 - 1), GGUFValueType.INT16: (-2**15, 2**15 - 1),
               GGUFValueType.UINT32: (0, 2**32 - 1), GGUFValueType.INT32: (-2**31, 2**31 - 1),
               GGUFValueType.UINT64: (0, 2**64 - 1), GGUFValueType.INT64: (-2**63, 2**63 - 1)}
_FLOATS = (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64)
_BY_DTYPE = {np.dtype(d).newbyteorder("="): t for t, (_, d) in _SCALARS.items() if t != GGUFValueType.BOOL}
_END = object()
_FLOAT_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16)}


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF type (elem_type for arrays)."""
    value_type: GGUFValueType
    value: Any
    elem_type: GGUFValueType | None = None


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to write: shape in numpy order (..., rows, n_per_row)."""
    name: str
    shape: tuple[int, ...]
    qtype: QType | str | int

    @property
    def nbytes(self) -> int:
        qt = qtype(self.qtype)
        rows = 1
        for d in self.shape[:-1]:
            rows *= d
        return rows * qt.row_bytes(self.shape[-1])


# ---- metadata: infer a type, then encode -------------------------------------------------------------

def _infer(value: Any, key: str) -> Typed:
    """Type of a plain Python/numpy value, as the contract in CONTEXT.md lays down."""
    if isinstance(value, Typed):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Typed(GGUFValueType.BOOL, bool(value))
    if isinstance(value, (int, np.integer)):
        v = int(value)
        return Typed(_int_type(v, key), v)
    if isinstance(value, (float, np.floating)):
        return Typed(GGUFValueType.FLOAT32, float(value))
    if isinstance(value, str):
        return Typed(GGUFValueType.STRING, value)
    if isinstance(value, np.ndarray):
        return _infer_ndarray(value, key)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return Typed(GGUFValueType.ARRAY, list(value), _infer_elem_type(value, key))
    raise GGQError(f"metadata key '{key}': cannot store a {type(value).__name__}")


def _int_type(v: int, key: str) -> GGUFValueType:
    for t in ((GGUFValueType.UINT32, GGUFValueType.UINT64) if v >= 0 else (GGUFValueType.INT32, GGUFValueType.INT64)):
        lo, hi = _INT_RANGES[t]
        if lo <= v <= hi:
            return t
    raise GGQError(f"metadata key '{key}': integer {v} does not fit in 64 bits")


def _infer_ndarray(value: np.ndarray, key: str) -> Typed:
    if value.ndim != 1:
        raise GGQError(f"metadata key '{key}': arrays must be one-dimensional, got shape {value.shape}")
    if value.dtype == np.bool_:
        return Typed(GGUFValueType.ARRAY, value, GGUFValueType.BOOL)
    etype = _BY_DTYPE.get(value.dtype.newbyteorder("="))
    if etype is None:
        raise GGQError(f"metadata key '{key}': cannot store an array of {value.dtype}")
    return Typed(GGUFValueType.ARRAY, value, etype)


def _infer_elem_type(seq: Sequence, key: str) -> GGUFValueType:
    if len(seq) == 0:
        raise GGQError(f"metadata key '{key}': empty list; give its element type with Typed")
    if all(isinstance(v, str) for v in seq):
        return GGUFValueType.STRING
    if all(isinstance(v, (bool, np.bool_)) for v in seq):
        return GGUFValueType.BOOL
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in seq):
        lo, hi = min(seq), max(seq)
        for t in (GGUFValueType.INT32, GGUFValueType.INT64):
            if _INT_RANGES[t][0] <= lo and hi <= _INT_RANGES[t][1]:
                return t
        raise GGQError(f"metadata key '{key}': integers do not fit in 64 bits")
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in seq):
        return GGUFValueType.FLOAT32
    if all(isinstance(v, (list, tuple)) for v in seq):
        return GGUFValueType.ARRAY
    raise GGQError(f"metadata key '{key}': list mixes value types")


def _encode_string(s: Any, key: str) -> bytes:
    if not isinstance(s, str):
        raise GGQError(f"metadata key '{key}': expected a string, got {type(s).__name__}")
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        raise GGQError(f"metadata key '{key}': string is not encodable as UTF-8") from None
    return struct.pack("<Q", len(raw)) + raw


def _encode_scalar(vtype: GGUFValueType, value: Any, key: str) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _encode_string(value, key)
    if vtype == GGUFValueType.BOOL:
        return struct.pack("<B", 1 if value else 0)
    if vtype in _FLOATS:
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise GGQError(f"metadata key '{key}': expected a number for {vtype.name}, got {value!r}")
        return struct.pack(_SCALARS[vtype][0], float(value))
    if vtype in _INT_RANGES:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise GGQError(f"metadata key '{key}': expected an integer for {vtype.name}, got {value!r}")
        lo, hi = _INT_RANGES[vtype]
        if not lo <= int(value) <= hi:
            raise GGQError(f"metadata key '{key}': {value} is out of range for {vtype.name}")
        return struct.pack(_SCALARS[vtype][0], int(value))
    raise GGQError(f"metadata key '{key}': {vtype!r} is not a scalar type")


def _encode_array(etype: GGUFValueType | None, value: Any, key: str) -> bytes:
    if etype is None:
        raise GGQError(f"metadata key '{key}': an ARRAY needs an elem_type")
    etype = GGUFValueType(etype)
    head = struct.pack("<IQ", etype, len(value))
    if etype == GGUFValueType.STRING:
        return head + b"".join(_encode_string(s, key) for s in value)
    if etype == GGUFValueType.ARRAY:
        return head + b"".join(_encode_value(_infer(v, key), key) for v in value)
    return head + _numeric_array_bytes(etype, value, key)


def _numeric_array_bytes(etype: GGUFValueType, value: Any, key: str) -> bytes:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise GGQError(f"metadata key '{key}': arrays must be one-dimensional")
    if etype == GGUFValueType.BOOL:
        return (arr != 0).astype(np.uint8).tobytes()
    if arr.size and arr.dtype.kind not in "iufb":
        raise GGQError(f"metadata key '{key}': cannot store {arr.dtype} values as {etype.name}")
    if etype in _INT_RANGES and arr.size:
        if arr.dtype.kind == "f":
            raise GGQError(f"metadata key '{key}': floats given for a {etype.name} array")
        lo, hi = _INT_RANGES[etype]
        if int(arr.min()) < lo or int(arr.max()) > hi:
            raise GGQError(f"metadata key '{key}': values out of range for {etype.name}")
    return arr.astype(_SCALARS[etype][1]).tobytes()


def _encode_value(typed: Typed, key: str) -> bytes:
    try:
        vtype = GGUFValueType(typed.value_type)
    except ValueError:
        raise GGQError(f"metadata key '{key}': unknown value type {typed.value_type!r}") from None
    if vtype == GGUFValueType.ARRAY:
        return _encode_array(typed.elem_type, typed.value, key)
    return _encode_scalar(vtype, typed.value, key)


def _encode_metadata(metadata: Mapping[str, Any], alignment: int) -> tuple[int, bytes]:
    items = dict(metadata)
    if "general.alignment" in items:
        given = items["general.alignment"]
        given = given.value if isinstance(given, Typed) else given
        if given != alignment:
            raise GGQError(f"general.alignment {given!r} in metadata disagrees with alignment={alignment}")
        items["general.alignment"] = Typed(GGUFValueType.UINT32, alignment)
    elif alignment != DEFAULT_ALIGNMENT:
        items["general.alignment"] = Typed(GGUFValueType.UINT32, alignment)
    parts = []
    for key, value in items.items():
        if not isinstance(key, str) or not key:
            raise GGQError(f"metadata key {key!r} is not a non-empty string")
        typed = _infer(value, key)
        parts.append(_encode_string(key, key) + struct.pack("<I", typed.value_type) + _encode_value(typed, key))
    return len(items), b"".join(parts)


# ---- tensors ----------------------------------------------------------------------------------------

def _check_spec(spec: TensorSpec, seen: set[str]) -> QType:
    if not isinstance(spec.name, str) or not spec.name:
        raise GGQError(f"tensor name {spec.name!r} is not a non-empty string")
    if len(spec.name.encode("utf-8", "replace")) > MAX_TENSOR_NAME_BYTES:
        raise GGQError(f"tensor name '{spec.name}' is longer than {MAX_TENSOR_NAME_BYTES} bytes")
    if spec.name in seen:
        raise GGQError(f"duplicate tensor name '{spec.name}'")
    seen.add(spec.name)
    try:
        qt = qtype(spec.qtype)
    except KeyError:
        raise GGQError(f"tensor '{spec.name}': unknown type {spec.qtype!r}") from None
    shape = tuple(spec.shape) if isinstance(spec.shape, (tuple, list)) else ()
    if not 1 <= len(shape) <= MAX_DIMS or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise GGQError(f"tensor '{spec.name}': invalid shape {shape}")
    if shape[-1] % qt.block_size:
        raise GGQError(f"tensor '{spec.name}': row of {shape[-1]} is not a multiple of "
                       f"{qt.name} block size {qt.block_size}")
    return qt


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


def _tensor_infos(tensors: Sequence[TensorSpec], alignment: int) -> bytes:
    parts, offset, seen = [], 0, set()
    for spec in tensors:
        qt = _check_spec(spec, seen)
        ne = [int(d) for d in reversed(tuple(spec.shape))]
        parts.append(_encode_string(spec.name, spec.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne,
                                                                          qt.ggml_id, offset))
        offset += spec.nbytes + _pad(spec.nbytes, alignment)
    return b"".join(parts)


def _tensor_bytes(spec: TensorSpec, item: Any) -> memoryview:
    """The item's bytes, checked against the spec: uint8 of any shape, or the tensor's own float dtype."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = np.frombuffer(item, dtype=np.uint8)
    if not isinstance(item, np.ndarray):
        raise GGQError(f"tensor '{spec.name}': data is a {type(item).__name__}, not a numpy array")
    qt = qtype(spec.qtype)
    expected = _FLOAT_DTYPES.get(qt.name)
    if item.dtype != np.uint8 and (expected is None or item.dtype.newbyteorder("=") != expected):
        raise GGQError(f"tensor '{spec.name}': {item.dtype} data given for a {qt.name} tensor")
    item = np.ascontiguousarray(item, dtype=item.dtype.newbyteorder("<"))
    if item.nbytes != spec.nbytes:
        raise GGQError(f"tensor '{spec.name}': {item.nbytes} bytes of data given, {qt.name} "
                       f"shape {tuple(spec.shape)} needs {spec.nbytes}")
    return memoryview(item.reshape(-1).view(np.uint8))


def _write_data(f, tensors: Sequence[TensorSpec], data: Iterable, alignment: int,
                progress: Callable[[TensorSpec], None] | None) -> None:
    items = iter(data)
    for i, spec in enumerate(tensors):
        try:
            item = next(items)
        except StopIteration:
            raise GGQError(f"tensor data ended after {i} of {len(tensors)} tensors") from None
        buf = _tensor_bytes(spec, item)
        f.write(buf)
        f.write(b"\0" * _pad(len(buf), alignment))
        if progress is not None:
            progress(spec)
    if next(items, _END) is not _END:
        raise GGQError(f"tensor data has more items than the {len(tensors)} tensors")


# ---- the file ---------------------------------------------------------------------------------------

def write_gguf(path: str | os.PathLike, metadata: Mapping[str, Any], tensors: Sequence[TensorSpec],
               data: Iterable[Any], alignment: int = DEFAULT_ALIGNMENT,
               progress: Callable[[TensorSpec], None] | None = None) -> None:
    """Write a GGUF v3 file atomically; `progress(spec)` is called after each tensor's data is written."""
    path = os.fspath(path)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT:
        raise GGQError(f"alignment {alignment!r} is not a power of two up to {MAX_ALIGNMENT}", path)
    tensors = list(tensors)
    try:
        n_kv, kv_bytes = _encode_metadata(metadata, alignment)
        info_bytes = _tensor_infos(tensors, alignment)
    except GGQError as e:
        raise GGQError(e.message, path) from None
    head = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(tensors), n_kv) + kv_bytes + info_bytes
    _atomic_write(path, lambda f: _write_body(f, head, tensors, data, alignment, progress))


def _write_body(f, head: bytes, tensors, data, alignment, progress) -> None:
    f.write(head)
    f.write(b"\0" * _pad(len(head), alignment))
    _write_data(f, tensors, data, alignment, progress)


def _atomic_write(path: str, write: Callable) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=directory)
    except OSError as e:
        raise GGQError(f"cannot write: {e.strerror or e}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        _set_default_mode(tmp)
        os.replace(tmp, path)
    except GGQError as e:
        _remove(tmp)
        raise GGQError(e.message, e.path or path) from None
    except OSError as e:
        _remove(tmp)
        raise GGQError(f"cannot write: {e.strerror or e}", path) from None
    except BaseException:
        _remove(tmp)
        raise


def _set_default_mode(tmp: str) -> None:
    """mkstemp makes the file private (0600); give it the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _remove(tmp: str) -> None:
    try:
        os.remove(tmp)
    except FileNotFoundError:
        pass
