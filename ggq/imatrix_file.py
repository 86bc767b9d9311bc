"""Importance matrices in llama.cpp's file formats (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp).

An importance matrix holds, for each matmul weight, the sum over calibration tokens of the squared
input activation of every column (`sums`, one row per expert; dense weights have one) and how many
tokens were summed (`counts`, one per row). A quantizer weights column j's rounding error by
sums[j] / count, which is how llama-quantize turns the file into its `quant_weights`.

GGUF format (what llama-imatrix writes by default): general.type = "imatrix", imatrix.datasets
(strings), imatrix.chunk_count and imatrix.chunk_size (uint32); per weight, in name order, an F32 tensor
`<weight>.in_sum2` of shape [n_mat, n_cols] and `<weight>.counts` of shape [n_mat, 1] (ggml drops
trailing sizes of 1, so a dense weight's are [n_cols] and [1]).

Legacy .dat format (read only): int32 n_entries; per entry int32 name length, name, int32 ncall,
int32 nval, float32[nval] holding (sum / count) * ncall; then optionally int32 chunk count, int32
length and the dataset name. Its importance is value / ncall.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from ggq.errors import GGQError

SUMS_SUFFIX, COUNTS_SUFFIX = ".in_sum2", ".counts"


@dataclass
class ImatrixEntry:
    sums: np.ndarray     # float32 [n_mat, n_cols]
    counts: np.ndarray   # float32 [n_mat]

    def importance(self) -> np.ndarray:
        """Per column sums / count (float32, as llama-quantize divides); rows without data get 1."""
        out = np.ones_like(self.sums, dtype=np.float32)
        for j, count in enumerate(self.counts):
            if count > 0:
                out[j] = self.sums[j].astype(np.float32) / np.float32(count)
        return out


@dataclass
class Imatrix:
    entries: dict[str, ImatrixEntry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def importance(self, weight_name: str) -> np.ndarray | None:
        """The weight's per-column importance (dense weights: one row), or None if it has no entry."""
        entry = self.entries.get(weight_name)
        if entry is None:
            return None
        values = entry.importance()
        return values[0] if values.shape[0] == 1 else values


def read_imatrix(path) -> Imatrix:
    """An imatrix file of either format (a GGUF file is recognised by its magic)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise GGQError(f"cannot read imatrix: {e.strerror or e}", path) from None
    return _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)


def _read_gguf(path: Path) -> Imatrix:
    from ggq.gguf_read import open_gguf
    with open_gguf(path) as g:
        if g.metadata.get("general.type") != "imatrix":
            raise GGQError("GGUF file is not an imatrix (general.type is not 'imatrix')", path)
        pairs: dict[str, dict[str, np.ndarray]] = {}
        for name, info in g.tensors.items():
            for suffix in (SUMS_SUFFIX, COUNTS_SUFFIX):
                if name.endswith(suffix):
                    if info.qtype.name != "F32":
                        raise GGQError(f"imatrix tensor {name} is {info.qtype.name}, not F32", path)
                    pairs.setdefault(name[:-len(suffix)], {})[suffix] = g.raw(name).view(np.float32).copy()
        entries = {}
        for weight, pair in sorted(pairs.items()):
            if len(pair) != 2:
                raise GGQError(f"imatrix entry {weight} lacks its in_sum2 or counts tensor", path)
            counts = pair[COUNTS_SUFFIX].reshape(-1)
            sums = pair[SUMS_SUFFIX].reshape(len(counts), -1)
            entries[weight] = ImatrixEntry(sums, counts)
        datasets = list(g.metadata.get("imatrix.datasets", []))
        return Imatrix(entries, datasets, int(g.metadata.get("imatrix.chunk_count", 0)),
                       int(g.metadata.get("imatrix.chunk_size", 0)))


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise GGQError("legacy imatrix file is truncated", self.path)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]


def _read_legacy(path: Path) -> Imatrix:
    r = _Reader(path.read_bytes(), path)
    n_entries = r.int32()
    if n_entries < 1:
        raise GGQError("not an imatrix file (neither GGUF nor a legacy .dat with entries)", path)
    entries = {}
    for _ in range(n_entries):
        name = r.take(_positive(r.int32(), path)).decode("utf-8", "replace")
        ncall, nval = r.int32(), _positive(r.int32(), path)
        values = np.frombuffer(r.take(4 * nval), np.float32).copy()
        # the stored values are (sum / count) * ncall: keep ncall as the count so importance = value / ncall
        entries[name] = ImatrixEntry(values.reshape(1, -1), np.array([max(ncall, 0)], np.float32))
    imatrix = Imatrix(dict(sorted(entries.items())))
    if r.pos < len(r.data):
        imatrix.chunk_count = r.int32()
        imatrix.datasets = [r.take(_positive(r.int32(), path)).decode("utf-8", "replace")]
    return imatrix


def _positive(n: int, path: Path) -> int:
    if n < 1 or n > 1 << 30:
        raise GGQError(f"legacy imatrix file has an invalid length {n}", path)
    return n


def write_imatrix(path, imatrix: Imatrix) -> None:
    """Write llama.cpp's imatrix GGUF format (atomically, as every ggq output)."""
    from ggq.gguf_write import TensorSpec, Typed, write_gguf
    metadata = {"general.type": "imatrix",
                "imatrix.datasets": Typed(GGUFValueType.ARRAY, list(imatrix.datasets), GGUFValueType.STRING),
                "imatrix.chunk_count": Typed(GGUFValueType.UINT32, imatrix.chunk_count),
                "imatrix.chunk_size": Typed(GGUFValueType.UINT32, imatrix.chunk_size)}
    specs, data = [], []
    for name in sorted(imatrix.entries):
        e = imatrix.entries[name]
        n_mat = len(e.counts)
        sums_shape = (e.sums.shape[-1],) if n_mat == 1 else (n_mat, e.sums.shape[-1])
        specs += [TensorSpec(name + SUMS_SUFFIX, sums_shape, "F32"),
                  TensorSpec(name + COUNTS_SUFFIX, (1,) if n_mat == 1 else (n_mat, 1), "F32")]
        data += [e.sums.astype(np.float32).reshape(sums_shape), e.counts.astype(np.float32).reshape(specs[-1].shape)]
    write_gguf(path, metadata, specs, data)
