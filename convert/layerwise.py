"""A calibrated convert one layer at a time, so that memory holds one layer's weights and statistics,
not the model's.

The whole-model flow (convert/calibration.py `calibrate`, then the writer) keeps every tensor as float32
for the calibration forward and every XᵀX until the file is written: about 15 GB for a 1.1B model.
Here all chunks of the calibration text advance through the model together, one layer at a time:

  1. every chunk's embeddings go into a scratch file: the activations of all chunks at one layer
     boundary (chunks x n_ctx x n_embd float32), written and read back with plain file I/O, so they
     sit in the page cache, not in this process's memory;
  2. layer i: its float32 weights are copied in from the mmapped checkpoint; each chunk's activations
     run through the layer (Transformer._attention and _feed_forward, the calls Transformer._batch
     makes, on the same work buffers), the observer adding up squared inputs and XᵀX as before; the
     layer's outputs go back to the scratch file;
  3. the layer's matrices are quantized by the method's encode with those statistics and their blocks
     appended to a second scratch file; each gram is dropped once the last matrix reading its input is
     done, each matrix's values once it is quantized;
  4. the GGUF is written as before, in the plan's order, those tensors' blocks read back from the
     scratch file (the metadata, which gives the imatrix's entry and chunk counts, is complete only now).

The statistics are still the float model's: GPTQ's inputs are the float layers' outputs, never the
quantized ones. Each key's chunks are added in the same order through the same calls as before, so
the file is byte for byte the whole-model flow's (tests/test_convert_layerwise.py). Both scratch files
are unnamed (they vanish when closed or when the process ends, however it ends).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ggq.errors import GGQError


class Scratch:
    """An unnamed temporary file in `folder` holding arrays at byte offsets."""

    def __init__(self, folder: Path):
        self.folder = folder  # for messages: the file itself has no name
        try:
            self.file = tempfile.TemporaryFile(dir=folder, buffering=0)
        except OSError as e:
            raise GGQError(f"cannot make a scratch file: {e.strerror or e}", folder) from None
        self.end = 0

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *_) -> None:
        self.file.close()

    def write(self, array: np.ndarray, offset: int) -> None:
        view = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        try:
            while view:
                done = os.pwrite(self.file.fileno(), view, offset)
                view, offset = view[done:], offset + done
        except OSError as e:
            raise GGQError(f"cannot write a scratch file here: {e.strerror or e}", self.folder) from None
        self.end = max(self.end, offset)

    def append(self, array: np.ndarray) -> tuple[int, int]:
        """(offset, bytes) of the array written at the end."""
        offset = self.end
        self.write(array, offset)
        return offset, self.end - offset

    def read_into(self, array: np.ndarray, offset: int) -> None:
        view = memoryview(array.reshape(-1).view(np.uint8))
        while view:
            done = os.preadv(self.file.fileno(), [view], offset)
            if done <= 0:
                raise GGQError("a scratch file here ended early", self.folder)
            view, offset = view[done:], offset + done

    def reader(self, offset: int, nbytes: int):
        """A function returning those bytes as a new uint8 array."""
        def read() -> np.ndarray:
            out = np.empty(nbytes, np.uint8)
            self.read_into(out, offset)
            return out
        return read


def write_by_layer(out: Path, metadata: dict, ckpt, specs, quant, quiet: bool = False) -> None:
    """`ggq convert --calibration` (no budget): statistics, quantization and file, one layer at a time."""
    from ggq.convert.pipeline import write_model
    folder = Path(out).resolve().parent
    with Scratch(folder) as blocks:
        ready, extra = quantize_layers(quant, ckpt, specs, blocks, folder, quiet)
        metadata.update(extra)
        write_model(out, metadata, ckpt.sources, specs, quiet, ready=ready)


def quantize_layers(quant, ckpt, specs, blocks: Scratch, folder: Path, quiet: bool = False):
    """Every block matrix quantized into `blocks`: ({name: read its bytes}, metadata keys). The other
    tensors (embedding, output, norms) get no statistics: the writer encodes them as before."""
    from ggq.convert.attention_gram import Statistics
    from ggq.convert.calibrated import METHODS, _bar, _imatrix_metadata
    from ggq.convert.calibration import LazySourceModel
    from ggq.quality_cli import read_text
    from ggq.runtime.kld import bos_for, chunked_tokens
    from ggq.runtime.model import Transformer
    from ggq.runtime.tokenizer import Tokenizer
    model = LazySourceModel(ckpt.metadata("f32"), ckpt.sources)
    bar = _bar(quiet)
    try:
        tf = Transformer(model, ctx_size=quant.ctx)
        tokenizer = Tokenizer.from_metadata(model.metadata)
        tokens = chunked_tokens(tokenizer, read_text(quant.calibration), quant.ctx, quant.chunks)
        n_chunks = len(tokens) // quant.ctx
        stats = Statistics("gram" in METHODS[quant.chosen][0], tf, model)
        ready: dict = {}
        with Scratch(folder) as acts:
            _embed_all(tf, model, tokens, bos_for(tokenizer), acts)
            for i in range(tf.params.n_layer):
                progress = (lambda c, i=i: bar.step(i * n_chunks + c, tf.params.n_layer * n_chunks)) if bar else None
                _calibrate_layer(tf, i, model, stats, acts, n_chunks, progress)
                _quantize_layer(tf.weights.layers[i], model, stats, quant, n_chunks, specs, blocks, ready)
        imatrix = stats.imatrix([quant.calibration], n_chunks, quant.ctx)
        return ready, _imatrix_metadata(quant.calibration, imatrix)
    finally:
        if bar:
            bar.close()
        model.close()


def _layer_matrices(layer) -> list:
    """The layer's weight matrices in the runtime's order (q, k, v, o, gate, up, down)."""
    from ggq.runtime.weights import Matrix
    return [m for m in vars(layer).values() if isinstance(m, Matrix)]


def _embed_all(tf, model, tokens: np.ndarray, bos: int | None, acts: Scratch) -> None:
    """Every chunk's embeddings into `acts` (Transformer._batch's first step; BOS first as chunk_logits)."""
    from ggq.runtime.weights import embed
    p, ws, n_ctx = tf.params, tf.ws, tf.ctx_size
    name = tf.weights.token_embd.name
    model.fill(name)
    for c in range(len(tokens) // n_ctx):
        ids = np.array(tokens[c * n_ctx:(c + 1) * n_ctx], dtype=np.int64)
        if bos is not None:
            ids[0] = bos
        for start in range(0, n_ctx, tf.n_batch):
            x = ws.x[:min(tf.n_batch, n_ctx - start)]
            embed(tf.weights.token_embd, ids[start:start + x.shape[0]], x)
            if p.embed_scale != 1.0:
                x *= np.float32(p.embed_scale)
            acts.write(x, _offset(tf, c, start))
    model.release(name)


def _offset(tf, chunk: int, position: int) -> int:
    return (chunk * tf.ctx_size + position) * tf.params.n_embd * 4


def _calibrate_layer(tf, i: int, model, stats, acts: Scratch, n_chunks: int, progress) -> None:
    """Layer i over every chunk, in place in `acts`, its inputs observed. A chunk longer than the batch
    runs as Transformer.forward runs it: batch after batch, the later ones reading the cache of the
    earlier ones at this layer."""
    layer = tf.weights.layers[i]
    for m in _layer_matrices(layer):
        model.fill(m.name)
    ws = tf.ws
    tf.input_observer = stats
    try:
        for c in range(n_chunks):
            for start in range(0, tf.ctx_size, tf.n_batch):
                n = min(tf.n_batch, tf.ctx_size - start)
                x, h = ws.x[:n], ws.h[:n]
                acts.read_into(x, _offset(tf, c, start))
                np.add(ws.arange[:n], start, out=ws.positions[:n])
                tf._attention(i, layer, x, h, start)  # Transformer._batch's two calls for one layer
                tf._feed_forward(layer, x, h)
                acts.write(x, _offset(tf, c, start))
            stats.end_chunk()
            if progress:
                progress(c + 1)
    finally:
        tf.input_observer = None


def _quantize_layer(layer, model, stats, quant, n_chunks: int, specs, blocks: Scratch, ready: dict) -> None:
    """The layer's matrices encoded by the method into `blocks`; each one's values, and each gram once
    no matrix left reads it, given back as soon as it is done."""
    from ggq.convert.calibrated import encoder
    from ggq.qtypes import qtype
    types = {s.name: qtype(s.qtype) for s in specs}
    encode = encoder(quant.chosen, stats.imatrix([quant.calibration], n_chunks, quant.ctx), stats)
    left = [m.name for m in _layer_matrices(layer)]
    while left:
        name = left.pop(0)
        if name in types:
            ready[name] = blocks.reader(*blocks.append(encode(name, model.values(name), types[name])))
        model.release(name)
        _drop_statistics(stats, name, left)


def _drop_statistics(stats, name: str, left: list[str]) -> None:
    """Free the grams only `name` still needed (the squared-input sums stay: they are small and make the
    imatrix metadata)."""
    if stats.grams is not None:
        key = stats.gram_of.get(name)
        if key is not None and not any(stats.gram_of.get(other) == key for other in left):
            stats.grams.pop(key, None)
    getattr(stats, "value_grams", {}).pop(name, None)
