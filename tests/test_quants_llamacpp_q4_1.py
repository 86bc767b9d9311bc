"""Dequantizing llama.cpp's own Q4_1 file of the shared model (Q4_1 weights, a Q8_0 token embedding,
F32 norms) with ggq.quants gives exactly the floats that the `gguf` package's reference dequantizer
(gguf.quants.dequantize, the ORACLE, a numpy port of ggml's dequantize_row_*) gives, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader
from gguf import quants as gguf_quants

from ggq import quants


@pytest.fixture(scope="module")
def reader(q4_1_gguf):
    return GGUFReader(q4_1_gguf)


def test_file_has_the_formats_under_test(reader):
    types = {t.tensor_type.name for t in reader.tensors}
    assert {"Q4_1", "Q8_0", "F32"} <= types


def test_every_tensor_dequantizes_bit_for_bit_as_gguf_py(reader):
    mismatched = []
    for t in reader.tensors:
        raw = np.asarray(t.data)
        expected = gguf_quants.dequantize(raw, t.tensor_type).astype(np.float32, copy=False)
        ours = quants.dequantize(raw.view(np.uint8), t.tensor_type.name)
        if ours.shape != expected.shape or not np.array_equal(ours.view(np.uint32), expected.view(np.uint32)):
            mismatched.append(f"{t.name} ({t.tensor_type.name})")
    assert not mismatched, f"{len(mismatched)} tensors differ: {mismatched[:5]}"
