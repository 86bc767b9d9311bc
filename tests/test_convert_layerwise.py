"""`ggq convert --calibration` one layer at a time (convert/layerwise.py).

ORACLE: the whole-model flow it replaces for the CLI, kept for the budget and for library callers:
convert/calibration.py's `calibrate` runs every chunk through the complete float32 model (Transformer
.forward, as the imatrix and perplexity tools do), its statistics handed to `convert` as
QuantOptions.statistics, which quantizes every tensor from them while the file is written. Its methods
are tested against their own oracles in test_convert_calibrated.py and test_runtime_imatrix.py; the
layer-by-layer convert must write the same file, byte for byte. Then what the refactor is for: at no
time are two layers' weights or statistics held, and no scratch file outlives the convert.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from ggq.cli import main
from ggq.convert.calibrated import QuantOptions
from ggq.convert.calibration import LazySourceModel, calibrate
from ggq.convert.pipeline import convert, open_checkpoint_source
import tiny_checkpoints as tiny

TEXT = "a calibration text about foxes, dogs and the weather in spring; " * 30
N_CTX = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("layerwise")
    for arch in ("llama", "qwen2", "gemma3"):
        tiny.write_checkpoint(root / arch, arch, dtype="BF16" if arch == "llama" else "F32", seed=3)
    (root / "text.txt").write_text(TEXT)
    return root


def _cli(root, arch, out, ftype, method, chunks):
    argv = ["convert", str(root / arch), "--type", ftype, "--method", method, "-o", str(out), "--quiet",
            "--calibration", str(root / "text.txt"), "--calibration-ctx", str(N_CTX),
            "--calibration-chunks", str(chunks)]
    assert main(argv) == 0
    return out.read_bytes()


def _whole_model(root, arch, out, ftype, method, chunks):
    ckpt = open_checkpoint_source(str(root / arch))
    collected = calibrate(ckpt.metadata("f32"), ckpt.sources, TEXT, N_CTX, chunks, gram=method != "imatrix")
    quant = QuantOptions(method, calibration=str(root / "text.txt"), ctx=N_CTX, chunks=chunks,
                         statistics=collected)
    convert(str(root / arch), ftype, str(out), quant=quant, quiet=True)
    return out.read_bytes()


@pytest.mark.parametrize("arch, ftype, method, chunks", [
    ("llama", "q4_k_m", "gptq-imatrix", 3),   # bf16 checkpoint; attn_v by its attention-weighted grams
    ("llama", "q3_k_m", "gptq", 2),
    ("qwen2", "q4_0", "gptq", 3),             # q/k/v biases, tied output: attn_v keeps XᵀX
    ("gemma3", "q5_k_m", "gptq-imatrix", 2),  # q/k norms, post norms, scaled embedding
    ("gemma3", "q6_k", "imatrix", 3),         # no grams at all
])
def test_layer_by_layer_writes_the_whole_model_flows_file(root, tmp_path, arch, ftype, method, chunks):
    ours = _cli(root, arch, tmp_path / "layerwise.gguf", ftype, method, chunks)
    theirs = _whole_model(root, arch, tmp_path / "whole.gguf", ftype, method, chunks)
    assert len(ours) == len(theirs) and ours == theirs


def test_one_layer_held_at_a_time(root, tmp_path, monkeypatch):
    """Filled matrices all belong to one layer (or are the embedding, alone); every gram alive when a
    chunk ends belongs to the layer being run; everything is given back by the end."""
    from ggq.convert.attention_gram import Statistics
    held: set[str] = set()
    seen_layers: list[set[str]] = []
    gram_layers: list[set[str]] = []

    def layer(name):
        m = re.match(r"blk\.(\d+)\.", name)
        return m.group(1) if m else name

    fill, release, end_chunk = LazySourceModel.fill, LazySourceModel.release, Statistics.end_chunk

    def tracked_fill(self, name):
        held.add(name)
        seen_layers.append({layer(n) for n in held})
        return fill(self, name)

    def tracked_release(self, name):
        held.discard(name)
        return release(self, name)

    def tracked_end_chunk(self):
        keys = list(self.grams or {}) + list(self.value_grams)
        gram_layers.append({layer(k) for k in keys})
        return end_chunk(self)

    monkeypatch.setattr(LazySourceModel, "fill", tracked_fill)
    monkeypatch.setattr(LazySourceModel, "release", tracked_release)
    monkeypatch.setattr(Statistics, "end_chunk", tracked_end_chunk)
    _cli(root, "llama", tmp_path / "o.gguf", "q4_k_m", "gptq-imatrix", 2)
    assert len(seen_layers) == 1 + 7 * tiny.N_LAYER  # the embedding, then each layer's 7 matrices
    assert all(len(s) == 1 for s in seen_layers), seen_layers
    assert len(gram_layers) == 2 * tiny.N_LAYER  # 2 chunks per layer
    assert all(len(s) == 1 for s in gram_layers), gram_layers
    assert held == set()


def test_lazy_matrices_take_memory_only_while_filled(root):
    """A filled matrix's values are the checkpoint's (as SourceModel loads them); released, it reads zeros."""
    ckpt = open_checkpoint_source(str(root / "llama"))
    model = LazySourceModel(ckpt.metadata("f32"), ckpt.sources)
    name = "blk.1.ffn_down.weight"
    expected = next(s for s in ckpt.sources if s.name == name).load()
    view = model.values(name)
    assert not view.any()
    model.fill(name)
    assert np.array_equal(view, expected)
    model.release(name)
    assert not view.any()


def test_interrupted_convert_leaves_no_file(root, tmp_path, monkeypatch):
    """Ctrl-C (SIGTERM/SIGHUP unwind the same way, ggq/signals.py) in the middle of the layers: no
    output, no scratch or temp file in the output folder."""
    from ggq.convert import layerwise
    calls = []
    quantize_layer = layerwise._quantize_layer

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return quantize_layer(*args)

    monkeypatch.setattr(layerwise, "_quantize_layer", interrupted)
    folder = tmp_path / "out"
    folder.mkdir()
    argv = ["convert", str(root / "llama"), "--type", "q4_k_m", "-o", str(folder / "o.gguf"), "--quiet",
            "--calibration", str(root / "text.txt"), "--calibration-ctx", str(N_CTX), "--calibration-chunks", "2"]
    assert main(argv) == 130
    assert len(calls) == 2 and list(folder.iterdir()) == []
