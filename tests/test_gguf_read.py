"""ggq.gguf_read against the ORACLE gguf package: files written by gguf.GGUFWriter read by ours, and
llama.cpp's Q4_1 file read by ours compared with gguf.GGUFReader on every key and tensor."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from ggq.errors import GGQError
from ggq.gguf_read import open_gguf

T = GGUFValueType
SCALARS = [  # (key, type, value) covering every scalar value type
    ("t.u8", T.UINT8, 200), ("t.i8", T.INT8, -100), ("t.u16", T.UINT16, 60000), ("t.i16", T.INT16, -30000),
    ("t.u32", T.UINT32, 4_000_000_000), ("t.i32", T.INT32, -2_000_000_000), ("t.f32", T.FLOAT32, 0.25),
    ("t.u64", T.UINT64, 2**64 - 1), ("t.i64", T.INT64, -2**63), ("t.f64", T.FLOAT64, 1e-300),
    ("t.bool", T.BOOL, True), ("t.str", T.STRING, "héllo wörld ✓ 日本語 🙂"), ("t.empty", T.STRING, ""),
]
ARRAYS = [  # (key, element type, values)
    ("a.str", T.STRING, ["a", "ü", "", "🙂🙂", "tab\tnl\n"]), ("a.u8", T.UINT8, [0, 255]),
    ("a.i8", T.INT8, [-128, 127]), ("a.u16", T.UINT16, [1, 65535]), ("a.i16", T.INT16, [-5, 5]),
    ("a.u32", T.UINT32, [7, 2**32 - 1]), ("a.i32", T.INT32, [-1, 2, -3]), ("a.f32", T.FLOAT32, [0.5, -1.5]),
    ("a.u64", T.UINT64, [2**64 - 1]), ("a.i64", T.INT64, [-2**63, 5]), ("a.f64", T.FLOAT64, [1e300, -2.5]),
    ("a.bool", T.BOOL, [True, False, True]),
]


def _write_oracle_file(path, rng) -> dict[str, np.ndarray]:
    """A file with every value type and F32/F16/Q8_0/Q4_K tensors, written by gguf.GGUFWriter."""
    w = GGUFWriter(str(path), "llama")
    for key, vtype, value in SCALARS:
        w.add_key_value(key, value, vtype)
    for key, etype, values in ARRAYS:
        w.add_key_value(key, values, T.ARRAY, sub_type=etype)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "q8": rng.integers(0, 256, (4, 2 * 34), dtype=np.uint8),
        "q4k": rng.integers(0, 256, (2, 1, 144), dtype=np.uint8),
    }
    w.add_tensor("f32", tensors["f32"])
    w.add_tensor("f16", tensors["f16"])
    w.add_tensor("q8", tensors["q8"], raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("q4k", tensors["q4k"], raw_dtype=GGMLQuantizationType.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.fixture
def oracle_file(tmp_path):
    path = tmp_path / "all.gguf"
    return path, _write_oracle_file(path, np.random.default_rng(0))


def test_every_value_type_from_gguf_writer(oracle_file):
    path, _ = oracle_file
    with open_gguf(path) as f:
        assert f.version == 3 and f.alignment == 32
        assert f.metadata["general.architecture"] == "llama"
        for key, vtype, value in SCALARS:
            assert f.metadata_types[key] == (vtype, None), key
            if vtype == T.FLOAT32:
                assert f.metadata[key] == np.float32(value)
            else:
                assert f.metadata[key] == value and type(f.metadata[key]) is type(value), key
        for key, etype, values in ARRAYS:
            assert f.metadata_types[key] == (T.ARRAY, etype), key
            got = f.metadata[key]
            if etype == T.STRING:
                assert got == values
            else:
                assert isinstance(got, np.ndarray) and got.tolist() == values, key


def test_tensors_from_gguf_writer(oracle_file):
    path, tensors = oracle_file
    oracle = GGUFReader(str(path))
    with open_gguf(path) as f:
        assert list(f.tensors) == ["f32", "f16", "q8", "q4k"]
        assert f.data_offset == oracle.data_offset
        expected = {"f32": ((3, 5), "F32"), "f16": ((7,), "F16"), "q8": ((4, 64), "Q8_0"), "q4k": ((2, 1, 256), "Q4_K")}
        for name, (shape, tname) in expected.items():
            t = f.tensors[name]
            assert t.shape == shape and t.qtype.name == tname
            raw = f.raw(name)
            assert raw.dtype == np.uint8 and raw.shape == (*shape[:-1], t.qtype.row_bytes(shape[-1]))
            assert raw.tobytes() == tensors[name].tobytes()
        for rt in oracle.tensors:
            assert f.tensors[rt.name].offset == rt.data_offset
            assert f.tensors[rt.name].nbytes == rt.n_bytes


def test_raw_is_a_read_only_view_that_outlives_close(oracle_file):
    path, tensors = oracle_file
    f = open_gguf(path)
    raw = f.raw("q8")
    assert not raw.flags.owndata and not raw.flags.writeable
    f.close()
    assert raw.tobytes() == tensors["q8"].tobytes()
    with pytest.raises(GGQError, match="closed"):
        f.raw("q8")


def test_unknown_tensor_name(oracle_file):
    with open_gguf(oracle_file[0]) as f, pytest.raises(GGQError, match="no tensor named 'nope'"):
        f.raw("nope")


def test_version_2(oracle_file, tmp_path):
    """v2 has v3's layout (64-bit counts and lengths); only the version field differs."""
    data = bytearray(oracle_file[0].read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    path = tmp_path / "v2.gguf"
    path.write_bytes(bytes(data))
    assert GGUFReader(str(path)).fields["GGUF.version"].contents() == 2
    with open_gguf(path) as f:
        assert f.version == 2 and f.metadata["t.str"] == "héllo wörld ✓ 日本語 🙂"
        assert f.raw("f32").tobytes() == oracle_file[1]["f32"].tobytes()


def test_alignment_from_metadata(tmp_path):
    path = tmp_path / "a64.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("x", np.arange(3, dtype=np.float32))
    w.add_tensor("y", np.arange(5, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    oracle = GGUFReader(str(path))
    with open_gguf(path) as f:
        assert f.alignment == 64 and f.data_offset == oracle.data_offset and f.data_offset % 64 == 0
        assert [t.offset for t in f.tensors.values()] == [t.data_offset for t in oracle.tensors]
        assert f.raw("y").view(np.float32).tolist() == [0, 1, 2, 3, 4]


def _field_value(field):
    """The oracle's value in ggq's representation."""
    vtype = T(field.types[0])
    if vtype == T.ARRAY and T(field.types[1]) != T.STRING:
        return np.array(field.contents())
    return field.contents()


def test_llamacpp_q4_1_file_equals_gguf_reader(q4_1_gguf):
    oracle = GGUFReader(str(q4_1_gguf))
    with open_gguf(q4_1_gguf) as f:
        fields = {k: v for k, v in oracle.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(fields)
        for key, field in fields.items():
            types = (T(field.types[0]), T(field.types[1]) if len(field.types) > 1 else None)
            assert f.metadata_types[key] == types, key
            expected = _field_value(field)
            if isinstance(expected, np.ndarray):
                np.testing.assert_array_equal(f.metadata[key], expected, err_msg=key)
            elif types[0] == T.FLOAT32:
                assert np.float32(f.metadata[key]) == np.float32(expected), key
            else:
                assert f.metadata[key] == expected, key
        assert f.data_offset == oracle.data_offset and len(f.tensors) == len(oracle.tensors)
        for rt in oracle.tensors:
            t = f.tensors[rt.name]
            assert t.shape == tuple(int(d) for d in reversed(rt.shape)), rt.name
            assert t.qtype.ggml_id == int(rt.tensor_type) and t.offset == rt.data_offset and t.nbytes == rt.n_bytes
            # every tensor's bytes, compared in full (92 MB: a fraction of a second)
            assert np.array_equal(f.raw(rt.name).reshape(-1), rt.data.reshape(-1).view(np.uint8)), rt.name
