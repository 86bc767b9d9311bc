"""`ggq report`: per tensor of a GGUF file its type, bits per weight and relative error against a base.

    rows = tensor_report("model.q4_k_m.gguf", "model.f16.gguf")   # or the Hugging Face checkpoint folder
    print(format_table(rows))

Relative error = ||W_q - W|| / ||W|| (Frobenius norms, summed in float64), W_q the file's tensor
dequantized and W the base's: an F32/F16/BF16 GGUF file, or a checkpoint folder whose tensors are taken
as `ggq convert` writes them (GGUF names, q/k rows permuted, norm shifts), so a file from either
converter compares with its own checkpoint. A base that is itself quantized is refused: the error would
be measured against another rounding. `plot(rows, path)` (ggq.report_plot) draws error by layer and role.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ggq.errors import GGQError

_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.(.+?)(\.weight|\.bias)?$")
_FLOAT_BASE = ("F32", "F16", "BF16")
_ROWS_AT_ONCE = 4096  # rows per float64 partial sum: bounds the float64 temporaries


@dataclass(frozen=True)
class ReportRow:
    """One tensor. `shape` in ggml order (row length first, as llama.cpp prints it); `layer` is None
    for tensors outside the blocks (token_embd, output, output_norm); `role` is the name without
    `blk.N.` and `.weight` (attn_q, ffn_down, token_embd, ...)."""
    name: str
    type: str
    shape: tuple[int, ...]
    n_weights: int
    nbytes: int
    bits_per_weight: float
    rel_error: float
    layer: int | None
    role: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["rel_error"] = self.rel_error if math.isfinite(self.rel_error) else str(self.rel_error)
        return d


def layer_and_role(name: str) -> tuple[int | None, str]:
    """'blk.3.ffn_down.weight' -> (3, 'ffn_down'); 'token_embd.weight' -> (None, 'token_embd')."""
    m = _BLOCK_NAME.match(name)
    if m:
        return int(m.group(1)), m.group(2) + ("_bias" if m.group(3) == ".bias" else "")
    if name.endswith(".weight"):
        return None, name[: -len(".weight")]
    return None, name.replace(".bias", "_bias")


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """||approx - exact|| / ||exact||, summed in float64 a slab of rows at a time (0 when both are zero,
    inf when only the base is)."""
    a = approx.reshape(-1, approx.shape[-1])
    e = exact.reshape(-1, exact.shape[-1])
    diff_ss = base_ss = 0.0
    for r in range(0, a.shape[0], _ROWS_AT_ONCE):
        ea = e[r:r + _ROWS_AT_ONCE].astype(np.float64).ravel()
        d = a[r:r + _ROWS_AT_ONCE].astype(np.float64).ravel() - ea
        diff_ss += float(d @ d)
        base_ss += float(ea @ ea)
    if base_ss == 0.0:
        return 0.0 if diff_ss == 0.0 else math.inf
    return math.sqrt(diff_ss / base_ss)


def _gguf_base(path: str):
    """name -> (numpy shape, loader) of an unquantized GGUF file's tensors; the file to close."""
    from ggq.gguf_read import open_gguf
    from ggq.quants import dequantize
    f = open_gguf(path)
    for t in f.tensors.values():
        if t.qtype.name not in _FLOAT_BASE:
            f.close()
            raise GGQError(f"base tensor '{t.name}' is {t.qtype.name}: give an F32/F16/BF16 GGUF file or the "
                           "checkpoint folder as base", path)
    tensors = {t.name: (t.shape, lambda t=t: dequantize(f.raw(t.name), t.qtype)) for t in f.tensors.values()}
    return tensors, f


def _checkpoint_base(path: str):
    """name -> (numpy shape, loader) of the tensors `ggq convert` would write from a checkpoint."""
    from ggq.convert.pipeline import open_checkpoint_source
    ckpt = open_checkpoint_source(path)
    return {s.name: (tuple(s.shape), s.load) for s in ckpt.sources}, None


def open_base(base: str | os.PathLike) -> tuple[dict[str, tuple[tuple[int, ...], Callable]], object]:
    """BASE's tensors by GGUF name, each (shape, loader of float32 values), and an object to close."""
    base = os.fspath(base)
    if os.path.isdir(base):
        return _checkpoint_base(base)
    if os.path.isfile(base):
        return _gguf_base(base)
    if not os.path.exists(base) and re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", base) and not base.startswith("."):
        return _checkpoint_base(base)  # a hub repo id, resolved as `ggq convert` resolves it
    raise GGQError("no such file or checkpoint folder", base)


def _row(f, t, base_shape, load_base, base_path: str) -> ReportRow:
    from ggq.quants import dequantize
    if tuple(base_shape) != tuple(t.shape):
        raise GGQError(f"tensor '{t.name}' is {list(reversed(t.shape))} here but "
                       f"{list(reversed(base_shape))} in the base {base_path}", f.path)
    values = dequantize(f.raw(t.name), t.qtype)
    err = relative_error(values, np.asarray(load_base(), dtype=np.float32))
    layer, role = layer_and_role(t.name)
    return ReportRow(t.name, t.qtype.name, tuple(reversed(t.shape)), t.n_elements, t.nbytes,
                     8 * t.nbytes / t.n_elements, err, layer, role)


def tensor_report(path: str | os.PathLike, base: str | os.PathLike) -> list[ReportRow]:
    """One ReportRow per tensor of the GGUF file `path`, in file order, measured against `base`."""
    from ggq.gguf_read import open_gguf
    base_tensors, closer = open_base(base)
    try:
        with open_gguf(path) as f:
            missing = [name for name in f.tensors if name not in base_tensors]
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise GGQError(f"tensor '{missing[0]}'{more} not in the base {os.fspath(base)}: "
                               "not the same model?", path)
            return [_row(f, t, *base_tensors[t.name], os.fspath(base)) for t in f.tensors.values()]
    finally:
        if closer is not None:
            closer.close()


def role_summary(rows: list[ReportRow]) -> list[tuple[str, int, float, float]]:
    """(role, tensors, bits per weight, mean relative error) per role, in order of first appearance."""
    by_role: dict[str, list[ReportRow]] = {}
    for r in rows:
        by_role.setdefault(r.role, []).append(r)
    out = []
    for role, rs in by_role.items():
        n_w = sum(r.n_weights for r in rs)
        out.append((role, len(rs), 8 * sum(r.nbytes for r in rs) / n_w, sum(r.rel_error for r in rs) / len(rs)))
    return out


def format_table(rows: list[ReportRow]) -> str:
    """The tensor table, a per-role summary and the file's bits per weight."""
    table = [("tensor", "type", "shape", "bpw", "rel. error")]
    table += [(r.name, r.type, "x".join(map(str, r.shape)), f"{r.bits_per_weight:.3f}", f"{r.rel_error:.3e}")
              for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(5)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>{widths[3]}}  {e:>{widths[4]}}"
             for a, b, c, d, e in table]
    lines += ["", "by role (mean relative error over its tensors):"]
    rw = max((len(s[0]) for s in role_summary(rows)), default=4)
    lines += [f"  {role:<{rw}}  {n:>3} tensors  {bpw:6.3f} bpw  {err:.3e}" for role, n, bpw, err in role_summary(rows)]
    n_w = sum(r.n_weights for r in rows)
    bpw = 8 * sum(r.nbytes for r in rows) / n_w if n_w else 0.0
    lines.append(f"{len(rows)} tensors, {n_w:,} weights, {bpw:.3f} bits per weight")
    return "\n".join(lines)
