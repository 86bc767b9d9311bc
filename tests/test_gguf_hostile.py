"""Hostile GGUF files: the reader (and `ggq inspect`) must answer GGQError or read the file, never crash.

ORACLES: the valid sample is written by gguf.GGUFWriter (the gguf package); the targeted cases are
assembled byte by byte here from the GGUF spec (gguf-py's constants for value type ids); the expected
outcome of every mutation is "opens and reads all tensors, or GGQError", never any other exception.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

import ggq.cli
from ggq.errors import GGQError
from ggq.gguf_read import open_gguf
from ggq.inspect import inspect_json, inspect_text

T = GGUFValueType


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[bytes, int]:
    """A small valid file by gguf.GGUFWriter, and where its data section starts."""
    path = tmp_path_factory.mktemp("hostile") / "sample.gguf"
    rng = np.random.default_rng(0)
    w = GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bé"])
    w.add_array("tokenizer.ggml.token_type", [1, 2, 3])
    w.add_string("general.name", "tiny")
    w.add_tensor("norm.weight", rng.standard_normal(8).astype(np.float32))
    w.add_tensor("q8.weight", rng.integers(0, 256, (2, 34), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("q4k.weight", rng.integers(0, 256, (1, 144), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q4_K)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    data = path.read_bytes()
    with open_gguf(path) as f:
        return data, f.data_offset


def _outcome(path) -> str:
    """'ok' after reading every tensor's bytes, or 'error' for a GGQError; anything else propagates."""
    try:
        with open_gguf(path) as f:
            for name in f.tensors:
                int(f.raw(name).sum())
        inspect_text(path)
        json.loads(inspect_json(path))
        return "ok"
    except GGQError as e:
        assert e.path == str(path) and e.message
        return "error"


def test_mutation_corpus(sample, tmp_path):
    data, data_offset = sample
    variants = [data[:n] for n in range(data_offset + 1)]  # truncated at every header byte
    variants += [data[:n] for n in range(data_offset + 1, len(data), 7)]  # and at a sample in the data
    for i in range(data_offset):
        for byte in (0x00, 0xFF, 0x7F, 0x80):
            if data[i] != byte:
                variants.append(data[:i] + bytes([byte]) + data[i + 1:])
    start, cpu_start = time.perf_counter(), time.process_time()
    outcomes = {"ok": 0, "error": 0}
    for i, variant in enumerate(variants):
        # A fresh name each time: rewriting one file in place makes ext4 flush it on every close.
        path = tmp_path / f"m{i}.gguf"
        path.write_bytes(variant)
        outcomes[_outcome(path)] += 1
        path.unlink()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"{len(variants)} hostile variants in {elapsed:.2f} s ({cpu:.2f} s CPU): {outcomes}")
    assert outcomes["error"] > len(variants) // 4 and outcomes["ok"] > 0
    assert cpu < 15, f"hostile corpus took {cpu:.1f} s of CPU"  # CPU time: wall time swings with load


# ---- targeted cases, assembled from the spec --------------------------------------------------------

def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _ti(name: str, ne: list[int], type_id: int, offset: int) -> bytes:
    return _s(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, type_id, offset)


def _gguf(kvs: list[bytes] = (), infos: list[bytes] = (), data: bytes = b"", version: int = 3,
          magic: bytes = b"GGUF", n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % 32) + data


F32_INFO = _ti("blk.3.ffn_up.weight", [8], 0, 0)

CASES = [
    ("empty", b"", "truncated header"),
    ("bad magic", _gguf(magic=b"GGML"), "not a GGUF file (bad magic)"),
    ("version 1", _gguf(version=1), "version 1 is not supported"),
    ("version 99", _gguf(version=99), "unsupported GGUF version 99"),
    ("big endian", _gguf(version=3 << 24), "big-endian"),
    ("short header", b"GGUF\x03\0\0\0\0\0", "truncated header"),
    ("huge kv count", _gguf(n_kv=2**64 - 1), "metadata count 18446744073709551615 runs past end of file"),
    ("huge tensor count", _gguf(n_tensors=2**63), "tensor count 9223372036854775808 runs past end of file"),
    ("huge string length", _gguf([_kv("x", T.STRING, struct.pack("<Q", 2**32 - 1) + b"abc")]),
     "metadata key 'x' string length 4294967295 runs past end of file"),
    ("huge key length", _gguf([struct.pack("<Q", 2**64 - 1) + b"\0" * 16]), "metadata key #0 string length"),
    ("huge array count", _gguf([_kv("arr", T.ARRAY, struct.pack("<IQ", T.STRING, 2**62))]),
     "metadata key 'arr' array length 4611686018427387904 runs past end of file"),
    ("huge numeric array", _gguf([_kv("arr", T.ARRAY, struct.pack("<IQ", T.UINT64, 2**61))]),
     "array length 2305843009213693952 runs past end of file"),
    ("unknown value type", _gguf([_kv("x", 13, b"\0" * 8)]), "metadata key 'x' has unknown value type 13"),
    ("deep nesting", _gguf([_kv("n", T.ARRAY, struct.pack("<IQ", T.ARRAY, 1) * 100 + b"\0" * 16)]),
     "nests arrays deeper"),
    ("invalid utf-8", _gguf([_kv("x", T.STRING, _s(b"\xff\xfe"))]), "metadata key 'x' is not valid UTF-8"),
    ("duplicate key", _gguf([_kv("x", T.UINT8, b"\1"), _kv("x", T.UINT8, b"\2")]), "duplicate metadata key 'x'"),
    ("alignment not power of two", _gguf([_kv("general.alignment", T.UINT32, struct.pack("<I", 48))]),
     "general.alignment 48 is not a power of two"),
    ("alignment zero", _gguf([_kv("general.alignment", T.UINT32, struct.pack("<I", 0))]), "not a power of two"),
    ("alignment wrong type", _gguf([_kv("general.alignment", T.UINT64, struct.pack("<Q", 32))]), "not a UINT32"),
    ("n_dims 100", _gguf(infos=[_s("t") + struct.pack("<I", 100)]), "tensor 't' has 100 dimensions"),
    ("n_dims 0", _gguf(infos=[_ti("t", [], 0, 0)]), "tensor 't' has 0 dimensions"),
    ("dim 2**63", _gguf(infos=[_ti("t", [2**63], 0, 0)]), "tensor 't' has invalid shape"),
    ("dim product overflows", _gguf(infos=[_ti("t", [2**32, 2**32], 0, 0)]), "tensor 't' has invalid shape"),
    ("dim zero", _gguf(infos=[_ti("t", [0], 0, 0)]), "tensor 't' has invalid shape"),
    ("unknown type id", _gguf(infos=[_ti("blk.0.w", [32], 99, 0)]), "tensor 'blk.0.w' has unknown or unsupported type id 99"),
    ("row not multiple of block", _gguf(infos=[_ti("q", [33], 8, 0)]), "tensor 'q': row of 33 is not a multiple"),
    ("misaligned offset", _gguf(infos=[_ti("t", [8], 0, 4)], data=b"\0" * 64), "tensor 't' data offset 4 is not aligned"),
    ("data past end of file", _gguf(infos=[F32_INFO], data=b"\0" * 16),
     "tensor 'blk.3.ffn_up.weight' data runs past end of file"),
    ("offset past end of file", _gguf(infos=[_ti("t", [8], 0, 2**64 - 32)], data=b"\0" * 32),
     "tensor 't' data runs past end of file"),
    ("duplicate tensor", _gguf(infos=[_ti("t", [8], 0, 0), _ti("t", [8], 0, 32)], data=b"\0" * 64),
     "duplicate tensor name 't'"),
    ("truncated tensor info", b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + F32_INFO[:-3], "tensor 'blk.3.ffn_up.weight' offset runs past end"),
]


@pytest.mark.parametrize("name, content, message", CASES, ids=[c[0] for c in CASES])
def test_targeted_case(tmp_path, name, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGQError) as e:
        open_gguf(path)
    assert message in e.value.message and e.value.path == str(path)


def test_limits_on_python_objects(tmp_path, monkeypatch):
    """Lists and counts that would become millions of Python objects stop at a limit (lowered here)."""
    import ggq.gguf_read
    monkeypatch.setattr(ggq.gguf_read, "MAX_LIST_LENGTH", 2)
    monkeypatch.setattr(ggq.gguf_read, "MAX_COUNT", 2)
    path = tmp_path / "big.gguf"
    path.write_bytes(_gguf([_kv("toks", T.ARRAY, struct.pack("<IQ", T.STRING, 3) + _s("a") * 3)]))
    with pytest.raises(GGQError, match="metadata key 'toks' array length 3 is over the limit of 2"):
        open_gguf(path)
    path.write_bytes(_gguf([_kv(k, T.UINT8, b"\1") for k in "abc"]))
    with pytest.raises(GGQError, match="metadata count 3 is over the limit of 2"):
        open_gguf(path)


def test_well_formed_assembly_opens(tmp_path):
    """The assembler above makes valid files: the same shape of file, unbroken, reads fine."""
    path = tmp_path / "good.gguf"
    path.write_bytes(_gguf([_kv("x", T.STRING, _s("ok"))], [F32_INFO], data=np.arange(8, dtype="<f4").tobytes()))
    with open_gguf(path) as f:
        assert f.metadata == {"x": "ok"} and f.raw("blk.3.ffn_up.weight").view("<f4").tolist() == list(range(8))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GGQError, match="cannot read"):
        open_gguf(tmp_path / "nope.gguf")
    with pytest.raises(GGQError, match="directory"):
        open_gguf(tmp_path)


def test_cli_inspect_corrupted_file(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(_gguf(infos=[F32_INFO], data=b"\0" * 16))
    proc = subprocess.run([sys.executable, "-P", "-m", "ggq", "inspect", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"ggq: {path}: tensor 'blk.3.ffn_up.weight' data runs past end of file\n"


def test_cli_inspect_valid_file(sample, tmp_path, capsys):
    path = tmp_path / "ok.gguf"
    path.write_bytes(sample[0])
    assert ggq.cli.main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "tokenizer.ggml.tokens" in text and "q4k.weight" in text and "Q4_K" in text
    assert ggq.cli.main(["inspect", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in doc["tensors"]] == ["norm.weight", "q8.weight", "q4k.weight"]
    assert doc["tensors"][1]["ne"] == [32, 2] and doc["metadata"]["tokenizer.ggml.tokens"]["value"] == ["<s>", "a", "bé"]
