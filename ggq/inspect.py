"""`ggq inspect`: a GGUF file's metadata and tensor table, as text for people or JSON for programs.

Shapes are printed in ggml order (ne0 first, the row length), as llama.cpp prints them.
Arrays longer than `_SHOW_ARRAY` elements are summarized (`[49152 strings]`), long strings are cut.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from gguf import GGUFValueType

from ggq.gguf_read import GGUFFile, open_gguf

_SHOW_ARRAY = 8  # text: arrays up to this many elements are printed in full
_JSON_ARRAY = 64  # json: arrays up to this many elements carry their values
_MAX_STRING = 100  # text: strings are cut to this many characters


def _type_name(types: tuple) -> str:
    vtype, etype = types
    return f"[{etype.name}]" if vtype == GGUFValueType.ARRAY else vtype.name


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""


def _show_string(s: str) -> str:
    text = json.dumps(s, ensure_ascii=False)  # quotes it and escapes newlines: one key per line
    if len(text) > _MAX_STRING:
        text = f"{text[:_MAX_STRING]}... ({len(s)} chars)"
    return text


def _show_value(value: Any, types: tuple) -> str:
    vtype, etype = types
    if vtype == GGUFValueType.STRING:
        return _show_string(value)
    if vtype == GGUFValueType.FLOAT32:
        return str(np.float32(value))  # the shortest text that reads back as the same float32
    if vtype != GGUFValueType.ARRAY:
        return str(value)
    if len(value) > _SHOW_ARRAY:
        kind = "strings" if etype == GGUFValueType.STRING else "arrays" if etype == GGUFValueType.ARRAY \
            else etype.name.lower()
        return f"[{len(value)} {kind}]"
    if etype == GGUFValueType.STRING:
        return "[" + ", ".join(_show_string(s) for s in value) + "]"
    return "[" + ", ".join(str(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)) + "]"


def _totals(f: GGUFFile) -> tuple[int, int]:
    n_elements = sum(t.n_elements for t in f.tensors.values())
    n_bytes = sum(t.nbytes for t in f.tensors.values())
    return n_elements, n_bytes


def inspect_text(path: str | os.PathLike) -> str:
    """Metadata one key per line, then the tensor table and totals."""
    with open_gguf(path) as f:
        lines = [f"{f.path}: GGUF v{f.version}, {len(f.metadata)} metadata keys, {len(f.tensors)} tensors, "
                 f"alignment {f.alignment}, data at {f.data_offset}", "", "metadata:"]
        key_w = max((len(k) for k in f.metadata), default=0)
        for key, value in f.metadata.items():
            types = f.metadata_types[key]
            lines.append(f"  {key:<{key_w}}  {_type_name(types):<10} {_show_value(value, types)}")
        lines += ["", "tensors:"] + _tensor_table(f)
        n_elements, n_bytes = _totals(f)
        bpw = 8 * n_bytes / n_elements if n_elements else 0.0
        lines += ["", f"{n_elements:,} weights in {_human_bytes(n_bytes)} of tensor data, {bpw:.3f} bits per "
                      f"weight; file size {_human_bytes(f.file_size)} ({f.file_size} bytes)"]
    return "\n".join(lines)


def _tensor_table(f: GGUFFile) -> list[str]:
    rows = [("name", "type", "shape", "size")]
    for t in f.tensors.values():
        rows.append((t.name, t.qtype.name, "[" + ", ".join(str(d) for d in reversed(t.shape)) + "]",
                     _human_bytes(t.nbytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON
    return value


def _json_entry(value: Any, types: tuple) -> dict:
    vtype, etype = types
    entry: dict[str, Any] = {"type": vtype.name}
    if vtype != GGUFValueType.ARRAY:
        entry["value"] = _json_value(value)
        return entry
    entry["elem_type"] = etype.name
    entry["count"] = len(value)
    if len(value) <= _JSON_ARRAY:
        entry["value"] = _json_value(value)
    return entry


def inspect_json(path: str | os.PathLike) -> str:
    """The same facts as JSON; arrays over 64 elements carry only their count."""
    with open_gguf(path) as f:
        n_elements, n_bytes = _totals(f)
        doc = {
            "path": f.path, "version": f.version, "alignment": f.alignment, "data_offset": f.data_offset,
            "file_size": f.file_size, "n_elements": n_elements, "tensor_bytes": n_bytes,
            "bits_per_weight": 8 * n_bytes / n_elements if n_elements else 0.0,
            "metadata": {k: _json_entry(v, f.metadata_types[k]) for k, v in f.metadata.items()},
            "tensors": [{"name": t.name, "type": t.qtype.name, "ne": list(reversed(t.shape)),
                         "shape": list(t.shape), "offset": t.offset, "nbytes": t.nbytes}
                        for t in f.tensors.values()],
        }
    return json.dumps(doc, ensure_ascii=False, indent=1)
