"""Reading and writing llama.cpp's imatrix files.

ORACLE: files written here by gguf-py's GGUFWriter in llama-imatrix's layout (general.type "imatrix",
imatrix.* keys, <weight>.in_sum2 / <weight>.counts F32 tensors) and a legacy .dat packed with struct
following imatrix.cpp's save_imatrix_legacy; importance = in_sum2 / counts (float32) and, for .dat,
value / ncall, as llama-quantize's load_imatrix divides.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGUFWriter

from ggq.errors import GGQError
from ggq.imatrix_file import Imatrix, ImatrixEntry, read_imatrix, write_imatrix

RNG = np.random.default_rng(7)
SUMS = {"blk.0.attn_q.weight": RNG.uniform(0, 50, 64).astype(np.float32),
        "blk.0.ffn_down.weight": RNG.uniform(0, 50, 96).astype(np.float32)}
COUNT = 1536.0


def _llama_style_file(path):
    w = GGUFWriter(str(path), arch="unused")
    w.kv_data[0].clear()  # no general.architecture: llama-imatrix writes only its own keys
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["calib.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, sums in SUMS.items():
        w.add_tensor(name + ".in_sum2", sums)
        w.add_tensor(name + ".counts", np.array([COUNT], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_reads_llama_layout(tmp_path):
    path = tmp_path / "im.gguf"
    _llama_style_file(path)
    im = read_imatrix(path)
    assert im.datasets == ["calib.txt"] and im.chunk_count == 3 and im.chunk_size == 512
    for name, sums in SUMS.items():
        np.testing.assert_array_equal(im.importance(name), sums / np.float32(COUNT))
    assert im.importance("token_embd.weight") is None


def test_write_then_read_round_trip(tmp_path):
    entries = {n: ImatrixEntry(s[None, :], np.array([COUNT], np.float32)) for n, s in SUMS.items()}
    path = tmp_path / "ours.gguf"
    write_imatrix(path, Imatrix(entries, ["calib.txt"], 3, 512))
    im = read_imatrix(path)
    for name, sums in SUMS.items():
        np.testing.assert_array_equal(im.entries[name].sums[0], sums)
        assert list(im.entries[name].counts) == [COUNT]


def test_reads_legacy_dat(tmp_path):
    ncall = 3
    blob = struct.pack("<i", len(SUMS))
    for name, sums in sorted(SUMS.items()):
        stored = (sums / np.float32(COUNT)) * np.float32(ncall)
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, sums.size) + stored.tobytes()
    blob += struct.pack("<i", ncall) + struct.pack("<i", 9) + b"calib.txt"
    path = tmp_path / "im.dat"
    path.write_bytes(blob)
    im = read_imatrix(path)
    assert im.datasets == ["calib.txt"] and im.chunk_count == ncall
    for name, sums in SUMS.items():
        expected = ((sums / np.float32(COUNT)) * np.float32(ncall)) / np.float32(ncall)
        np.testing.assert_array_equal(im.importance(name), expected)


@pytest.mark.parametrize("blob", [b"\x00\x00\x00\x00", b"\x02\x00\x00\x00\x05\x00\x00\x00ab"])
def test_bad_files_raise_ggq_error(tmp_path, blob):
    path = tmp_path / "bad.dat"
    path.write_bytes(blob)
    with pytest.raises(GGQError):
        read_imatrix(path)
