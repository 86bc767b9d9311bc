"""ggq.gguf_write, ORACLE the gguf package: gguf.GGUFReader reads what we write (keys, types, tensor
shapes, types and bytes), and gguf.GGUFWriter given the same content writes the same bytes."""
from __future__ import annotations

import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from ggq.errors import GGQError
from ggq.gguf_write import TensorSpec, Typed, write_gguf

T = GGUFValueType


def _tensors(rng):
    specs = [TensorSpec("tok.weight", (4, 64), "Q8_0"), TensorSpec("norm", (5,), "F32"),
             TensorSpec("blk.0.k", (2, 3, 256), "Q4_K"), TensorSpec("h", (2, 3), "F16")]
    data = [rng.integers(0, 256, (4, 68), dtype=np.uint8), rng.standard_normal(5).astype(np.float32),
            rng.integers(0, 256, (2, 3, 144), dtype=np.uint8), rng.standard_normal((2, 3)).astype(np.float16)]
    return specs, data


def _read_oracle(path):
    r = GGUFReader(str(path))
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return r, fields


def _types(field):
    return tuple(T(t) for t in field.types)


def test_inferred_types_read_by_gguf_reader(tmp_path):
    metadata = {
        "general.architecture": "llama", "k.bool": True, "k.uint": 7, "k.big": 2**40, "k.neg": -3,
        "k.verybig": 2**63 + 1, "k.veryneg": -2**40, "k.float": 0.5, "k.str": "zürich ✓",
        "k.strs": ["a", "é", ""], "k.ints": [1, -2, 3], "k.floats": [0.5, 1.5],
        "k.np_u16": np.array([1, 2], dtype=np.uint16), "k.np_f64": np.array([0.1], dtype=np.float64),
        "k.np_bool": np.array([True, False]), "k.np_i64": np.array([-2**62], dtype=np.int64),
    }
    expected = {
        "general.architecture": (T.STRING,), "k.bool": (T.BOOL,), "k.uint": (T.UINT32,), "k.big": (T.UINT64,),
        "k.neg": (T.INT32,), "k.verybig": (T.UINT64,), "k.veryneg": (T.INT64,), "k.float": (T.FLOAT32,),
        "k.str": (T.STRING,), "k.strs": (T.ARRAY, T.STRING), "k.ints": (T.ARRAY, T.INT32),
        "k.floats": (T.ARRAY, T.FLOAT32), "k.np_u16": (T.ARRAY, T.UINT16), "k.np_f64": (T.ARRAY, T.FLOAT64),
        "k.np_bool": (T.ARRAY, T.BOOL), "k.np_i64": (T.ARRAY, T.INT64),
    }
    write_gguf(tmp_path / "m.gguf", metadata, [], [])
    r, fields = _read_oracle(tmp_path / "m.gguf")
    assert list(fields) == list(metadata)
    for key, value in metadata.items():
        assert _types(fields[key]) == expected[key], key
        got = fields[key].contents()
        want = value.tolist() if isinstance(value, np.ndarray) else value
        assert got == pytest.approx(want) if isinstance(want, (float, list)) and key != "k.strs" else got == want, key


def test_typed_values_read_by_gguf_reader(tmp_path):
    metadata = {
        "u8": Typed(T.UINT8, 255), "i8": Typed(T.INT8, -128), "u16": Typed(T.UINT16, 65535),
        "i16": Typed(T.INT16, -32768), "u32": Typed(T.UINT32, 1), "i32": Typed(T.INT32, 1),
        "u64": Typed(T.UINT64, 2**64 - 1), "i64": Typed(T.INT64, 5), "f32": Typed(T.FLOAT32, 2.5),
        "f64": Typed(T.FLOAT64, 0.1), "b": Typed(T.BOOL, False), "s": Typed(T.STRING, "x"),
        "a.u8": Typed(T.ARRAY, [1, 2], T.UINT8), "a.f64": Typed(T.ARRAY, [0.1, 0.2], T.FLOAT64),
        "a.empty": Typed(T.ARRAY, [], T.STRING), "a.bool": Typed(T.ARRAY, [True, False], T.BOOL),
    }
    write_gguf(tmp_path / "t.gguf", metadata, [], [])
    _, fields = _read_oracle(tmp_path / "t.gguf")
    for key, typed in metadata.items():
        want_types = (typed.value_type,) + ((typed.elem_type,) if typed.elem_type is not None else ())
        if key == "a.empty":  # GGUFReader records no element type for an empty array
            want_types = want_types[:1]
        assert _types(fields[key]) == want_types, key
        got = fields[key].contents()
        assert (got == [] if key == "a.empty" else got == pytest.approx(typed.value)), key


def test_tensors_read_by_gguf_reader(tmp_path):
    specs, data = _tensors(np.random.default_rng(1))
    done = []
    write_gguf(tmp_path / "x.gguf", {"general.architecture": "llama"}, specs, iter(data), progress=done.append)
    assert done == specs
    r, fields = _read_oracle(tmp_path / "x.gguf")
    assert "general.alignment" not in fields and r.alignment == 32
    assert [t.name for t in r.tensors] == [s.name for s in specs]
    for spec, arr, rt in zip(specs, data, r.tensors):
        assert rt.tensor_type == GGMLQuantizationType[spec.qtype]
        assert tuple(int(d) for d in rt.shape) == tuple(reversed(spec.shape))
        assert rt.data_offset % 32 == 0 and rt.n_bytes == arr.nbytes
        assert rt.data.reshape(-1).view(np.uint8).tobytes() == arr.tobytes()


def test_same_bytes_as_gguf_writer(tmp_path):
    """Same keys in the same order and same tensors: byte-identical to gguf.GGUFWriter's file."""
    specs, data = _tensors(np.random.default_rng(2))
    w = GGUFWriter(str(tmp_path / "oracle.gguf"), "llama")
    w.add_uint32("llama.block_count", 30)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "ä", "b"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.0])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    for spec, arr in zip(specs, data):
        raw = None if spec.qtype in ("F32", "F16") else GGMLQuantizationType[spec.qtype]
        w.add_tensor(spec.name, arr, raw_dtype=raw)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    metadata = {"general.architecture": "llama", "llama.block_count": 30, "llama.rope.freq_base": 10000.0,
                "tokenizer.ggml.tokens": ["<s>", "ä", "b"], "tokenizer.ggml.scores": [0.0, -1.5, 2.0],
                "tokenizer.ggml.add_bos_token": True}
    write_gguf(tmp_path / "ours.gguf", metadata, specs, data)
    assert (tmp_path / "ours.gguf").read_bytes() == (tmp_path / "oracle.gguf").read_bytes()


def test_custom_alignment(tmp_path):
    specs, data = _tensors(np.random.default_rng(3))
    write_gguf(tmp_path / "a.gguf", {"general.architecture": "llama"}, specs, data, alignment=128)
    r, fields = _read_oracle(tmp_path / "a.gguf")
    assert fields["general.alignment"].contents() == 128 and _types(fields["general.alignment"]) == (T.UINT32,)
    assert all(t.data_offset % 128 == 0 for t in r.tensors) and r.data_offset % 128 == 0
    with pytest.raises(GGQError, match="power of two"):
        write_gguf(tmp_path / "b.gguf", {}, [], [], alignment=48)
    with pytest.raises(GGQError, match="disagrees"):
        write_gguf(tmp_path / "b.gguf", {"general.alignment": 64}, [], [], alignment=32)


def _leftovers(directory):
    return sorted(os.listdir(directory))


def test_iterator_raising_midway_leaves_nothing(tmp_path):
    specs, data = _tensors(np.random.default_rng(4))

    def failing():
        yield data[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_gguf(tmp_path / "x.gguf", {"a": 1}, specs, failing())
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_leaves_nothing_and_keeps_old_file(tmp_path):
    specs, data = _tensors(np.random.default_rng(5))
    (tmp_path / "x.gguf").write_bytes(b"old")

    def interrupted():
        yield data[0]
        yield data[1]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_gguf(tmp_path / "x.gguf", {"a": 1}, specs, interrupted())
    assert _leftovers(tmp_path) == ["x.gguf"] and (tmp_path / "x.gguf").read_bytes() == b"old"


@pytest.mark.parametrize("bad_item, message", [
    (np.zeros(10, dtype=np.uint8), "10 bytes of data given"),
    (np.zeros((4, 16), dtype=np.float32), "float32 data given for a Q8_0 tensor"),
    ("text", "not a numpy array"),
])
def test_wrong_tensor_data_is_an_error_with_no_output(tmp_path, bad_item, message):
    specs, data = _tensors(np.random.default_rng(6))
    with pytest.raises(GGQError, match=message) as e:
        write_gguf(tmp_path / "x.gguf", {}, specs, [bad_item] + data[1:])
    assert e.value.path == str(tmp_path / "x.gguf") and "tok.weight" in e.value.message
    assert _leftovers(tmp_path) == []


def test_too_few_or_too_many_data_items(tmp_path):
    specs, data = _tensors(np.random.default_rng(7))
    with pytest.raises(GGQError, match="ended after 3 of 4"):
        write_gguf(tmp_path / "x.gguf", {}, specs, data[:3])
    with pytest.raises(GGQError, match="more items"):
        write_gguf(tmp_path / "x.gguf", {}, specs, data + [data[0]])
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("metadata, specs, message", [
    ({"k": object()}, [], "cannot store"),
    ({"k": []}, [], "empty list"),
    ({"k": [1, "a"]}, [], "mixes"),
    ({"k": Typed(T.UINT8, 256)}, [], "out of range"),
    ({"k": Typed(T.ARRAY, [1, 300], T.UINT8)}, [], "out of range"),
    ({"k": 2**64}, [], "does not fit"),
    ({"": 1}, [], "non-empty"),
    ({}, [TensorSpec("t", (3, 33), "Q8_0")], "not a multiple"),
    ({}, [TensorSpec("t", (0, 32), "Q8_0")], "invalid shape"),
    ({}, [TensorSpec("t", (1, 1, 1, 1, 32), "Q8_0")], "invalid shape"),
    ({}, [TensorSpec("t", (32,), "Q9_9")], "unknown type"),
    ({}, [TensorSpec("t", (32,), "F32"), TensorSpec("t", (32,), "F32")], "duplicate tensor name"),
    ({}, [TensorSpec("x" * 64, (32,), "F32")], "longer than 63"),
])
def test_invalid_input_is_rejected_before_writing(tmp_path, metadata, specs, message):
    with pytest.raises(GGQError, match=message):
        write_gguf(tmp_path / "x.gguf", metadata, specs, [])
    assert _leftovers(tmp_path) == []


def test_missing_directory_is_a_ggq_error(tmp_path):
    with pytest.raises(GGQError, match="cannot write"):
        write_gguf(tmp_path / "no" / "x.gguf", {}, [], [])


def test_copy_of_llamacpp_file_is_byte_identical(q4_1_gguf, tmp_path):
    """ORACLE llama.cpp: its Q4_1 file, read by ggq and written back with the same types, is the same file."""
    from ggq.gguf_read import open_gguf
    out = tmp_path / "copy.gguf"
    with open_gguf(q4_1_gguf) as f:
        metadata = {k: Typed(f.metadata_types[k][0], v, f.metadata_types[k][1]) for k, v in f.metadata.items()}
        specs = [TensorSpec(t.name, t.shape, t.qtype) for t in f.tensors.values()]
        write_gguf(out, metadata, specs, (f.raw(name) for name in f.tensors))
    assert np.array_equal(np.memmap(out, dtype=np.uint8, mode="r"), np.memmap(q4_1_gguf, dtype=np.uint8, mode="r"))
