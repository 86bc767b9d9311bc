"""convert/safetensors.py: our mmapped reader against the safetensors package, and hostile files.

ORACLE: safetensors.numpy.load_file (the format's reference implementation) for values; the published
layout (8-byte little-endian header length, JSON header, data section) for the broken files built here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ggq.convert.safetensors import SafetensorsFile, open_checkpoint, to_f32
from ggq.errors import GGQError
import tiny_checkpoints as tiny


def test_values_match_reference_reader(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float16),
               "empty": np.zeros((0, 4), np.float32)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    f = SafetensorsFile(tmp_path / "x.safetensors")
    reference = load_file(str(tmp_path / "x.safetensors"))
    for name, ref in f.tensors.items():
        np.testing.assert_array_equal(to_f32(ref), reference[name].astype(np.float32))
        assert ref.shape == reference[name].shape


def test_bf16_widening_is_exact(tmp_path):
    """BF16 bits are the top half of the f32: widening must reproduce the bf16-rounded values exactly."""
    values = tiny.write_checkpoint(tmp_path, "qwen2", dtype="BF16")
    refs = open_checkpoint(tmp_path)
    for name, v in values.items():
        np.testing.assert_array_equal(to_f32(refs[name]), v)
    special = np.array([0.0, -0.0, 1.0, np.inf, -np.inf, 3.0e38, 1e-40], np.float32)
    bits = tiny.bf16_bits(special)
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    (tmp_path / "s.safetensors").write_bytes(_raw_file({"s": ("BF16", [7], bits.tobytes())}))
    np.testing.assert_array_equal(to_f32(SafetensorsFile(tmp_path / "s.safetensors").tensors["s"]), widened)


def _raw_file(entries: dict, header_extra: dict | None = None, length: int | None = None) -> bytes:
    header, blobs, offset = dict(header_extra or {}), b"", 0
    for name, (dtype, shape, blob) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs += blob
        offset += len(blob)
    text = json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + blobs


BAD_FILES = {
    "short": (b"\x01\x02", "shorter"),
    "header length past end": (_raw_file({}, length=1 << 40), "header length"),
    "not json": (b"\x05\x00\x00\x00\x00\x00\x00\x00{nope", "JSON"),
    "not an object": (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "not a JSON object"),
    "offsets past end": (_raw_file({"t": ("F32", [4], b"\0" * 8)})[:-4] + b"", "data_offsets"),
    "size mismatch": (_raw_file({"t": ("F32", [3], b"\0" * 8)}), "bytes stored"),
    "negative dim": (_raw_file({"t": ("F32", [-1], b"")}), "shape"),
    "float dim": (_raw_file({"t": ("F32", [1.5], b"\0" * 4)}), "shape"),
    "I64": (_raw_file({"t": ("I64", [1], b"\0" * 8)}), "dtype I64"),
    "entry not object": (_raw_file({}, {"t": 3}), "not an object"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_hostile_files_raise_ggqerror_naming_the_file(tmp_path, case):
    data, needle = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(GGQError) as e:
        SafetensorsFile(path)
    assert e.value.path == str(path) and needle in e.value.message


def test_sharded_index_must_point_inside_the_folder(tmp_path):
    tiny.write_checkpoint(tmp_path, "llama", shards=2)
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../elsewhere.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(GGQError, match="shard"):
        open_checkpoint(tmp_path)
