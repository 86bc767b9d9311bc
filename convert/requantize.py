"""`ggq quantize IN.gguf OUT.gguf --type TYPE`: a float GGUF to another file type, as llama-quantize does.

The metadata is copied with its exact GGUF types; only general.file_type and
general.quantization_version change. Tensors go through the same plan_tensors / write_model as a
conversion: dequantized (a no-op widening for F32/F16/BF16) one at a time and quantized to the plan.
"""
from __future__ import annotations

import re
from pathlib import Path

from ggq.convert.pipeline import (QUANTIZATION_VERSION, ConvertResult, SourceTensor, TypeOptions,
                                  check_output_path, describe_plan, plan_tensors, write_model)
from ggq.errors import GGQError
from ggq.gguf_write import Typed

FLOAT_TYPES = ("F32", "F16", "BF16")
_DROPPED_KEYS = ("general.alignment",)  # the writer lays out data with its own alignment


def _copied_metadata(g, ftype: str) -> dict:
    from gguf import GGUFValueType
    from ggq.convert.mixing import file_type_id
    md = {}
    for key, value in g.metadata.items():
        if key in _DROPPED_KEYS:
            continue
        vtype, elem = g.metadata_types[key]
        md[key] = Typed(vtype, value, elem)
    # llama-quantize re-sets these two last, which moves them to the end
    md.pop("general.quantization_version", None)
    md.pop("general.file_type", None)
    md["general.quantization_version"] = Typed(GGUFValueType.UINT32, QUANTIZATION_VERSION)
    md["general.file_type"] = Typed(GGUFValueType.UINT32, file_type_id(ftype))
    return md


def _quantize_order(name: str) -> tuple[int, bytes]:
    """llama-quantize writes tensors sorted by (layer number, or -1 outside blocks; then name)."""
    m = re.match(r"blk\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name.encode())


def _hparam(g, key: str, default: int | None = None) -> int:
    arch = g.metadata.get("general.architecture")
    value = g.metadata.get(f"{arch}.{key}", default)
    if isinstance(value, list) or hasattr(value, "shape"):  # per-layer arrays: the largest count
        value = max(int(v) for v in value) if len(value) else default
    if not isinstance(value, int):
        raise GGQError(f"metadata has no integer '{arch}.{key}'", g.path)
    return value


def _sources(g, allow_requantize: bool) -> list[SourceTensor]:
    from ggq.quants import dequantize
    sources = []
    for name in sorted(g.tensors, key=_quantize_order):
        info = g.tensors[name]
        if info.qtype.name not in FLOAT_TYPES and not allow_requantize:
            raise GGQError(f"tensor '{name}' is already quantized ({info.qtype.name}); requantizing loses "
                           "quality — pass --allow-requantize to do it anyway", g.path)
        sources.append(SourceTensor(name, info.shape,
                                    lambda n=name, t=info.qtype: dequantize(g.raw(n), t)))
    return sources


def requantize(src: str, dst: str, ftype: str, options: TypeOptions = TypeOptions(),
               allow_requantize: bool = False, dry_run: bool = False, quiet: bool = False) -> ConvertResult:
    """Write `dst` as `src` in file type `ftype` (e.g. 'q4_k_m'); returns the plan."""
    from ggq.convert.mixing import file_type_id
    from ggq.gguf_read import open_gguf
    file_type_id(ftype)
    out = Path(dst)
    if not dry_run:
        check_output_path(out)
    with open_gguf(src) as g:
        sources = _sources(g, allow_requantize)
        n_head = _hparam(g, "attention.head_count")
        specs = plan_tensors(sources, ftype, _hparam(g, "block_count"), n_head,
                             _hparam(g, "attention.head_count_kv", n_head), options,
                             str(g.metadata.get("general.architecture", "")),
                             source_types={name: info.qtype.name for name, info in g.tensors.items()})
        plan = describe_plan(specs)
        if dry_run:
            return ConvertResult(None, specs, plan)
        if out.exists() and out.resolve() == Path(src).resolve():
            raise GGQError("output would overwrite the input", out)
        write_model(out, _copied_metadata(g, ftype), sources, specs, quiet)
    return ConvertResult(out, specs, plan)
