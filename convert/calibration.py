"""Calibration statistics straight from a checkpoint: the converter's own float32 tensors, run by ggq's
runtime, with no intermediate GGUF file.

`SourceModel` presents the tensors a conversion would write (after the converter's q/k permutation,
norm shift, embedding trim) as the small part of GGUFFile's interface that the runtime reads:
`metadata`, `tensors` (TensorInfo, all F32) and `raw(name)`. Each tensor is loaded once, as float32.
"""
from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence

import numpy as np

from ggq.gguf_read import TensorInfo
from ggq.gguf_write import Typed
from ggq.qtypes import qtype


def _plain(value):
    """Metadata as GGUFFile.metadata holds it: plain values, not Typed wrappers."""
    value = value.value if isinstance(value, Typed) else value
    return [_plain(v) for v in value] if isinstance(value, list) else value


class SourceModel:
    """The converter's float32 tensors as a model the runtime can open (Transformer(SourceModel(...)))."""

    def __init__(self, metadata: dict, sources: Sequence, name: str = "<checkpoint>"):
        self.path = name
        self.metadata = {k: _plain(v) for k, v in metadata.items()}
        f32 = qtype("F32")
        self._sources = {s.name: s for s in sources}
        self.tensors = {s.name: TensorInfo(s.name, tuple(s.shape), f32, 0, 4 * int(np.prod(s.shape)))
                        for s in sources}
        self._loaded: dict[str, np.ndarray] = {}

    def raw(self, name: str) -> np.ndarray:
        """The tensor's float32 values as bytes, shaped (*shape[:-1], row_bytes) like GGUFFile.raw."""
        if name not in self._loaded:
            values = np.ascontiguousarray(self._sources[name].load(), dtype=np.float32)
            self._loaded[name] = values.view(np.uint8).reshape(*values.shape[:-1], 4 * values.shape[-1])
        return self._loaded[name]

    def close(self) -> None:
        self._loaded.clear()


def _private_anonymous(size: int) -> mmap.mmap:
    """Zero pages of memory that MADV_DONTNEED gives back (Python's mmap(-1) is shared, whose pages
    the system keeps)."""
    private = getattr(mmap, "MAP_PRIVATE", None)
    if private is None:  # not POSIX
        return mmap.mmap(-1, max(size, 1))
    return mmap.mmap(-1, max(size, 1), flags=private | mmap.MAP_ANONYMOUS)


class LazySourceModel(SourceModel):
    """A SourceModel whose matrices hold memory only while loaded (convert/layerwise.py): each is an
    anonymous mapping, zero pages until fill(name) copies the checkpoint's float32 values in, given back
    to the system by release(name). The views the runtime takes when a Transformer is built stay valid
    throughout. Vectors (norms, biases) are small and loaded at once, as SourceModel does."""

    def __init__(self, metadata: dict, sources: Sequence, name: str = "<checkpoint>"):
        super().__init__(metadata, sources, name)
        self._maps: dict[str, mmap.mmap] = {}

    def raw(self, name: str) -> np.ndarray:
        shape = self.tensors[name].shape
        if len(shape) < 2 or name in self._loaded:
            return super().raw(name)
        self._maps[name] = buf = _private_anonymous(self.tensors[name].nbytes)
        self._loaded[name] = np.frombuffer(buf, np.uint8).reshape(*shape[:-1], 4 * shape[-1])
        return self._loaded[name]

    def values(self, name: str) -> np.ndarray:
        """The matrix's float32 values as the runtime sees them (zeros unless filled)."""
        return self.raw(name).view(np.float32).reshape(self.tensors[name].shape)

    def fill(self, name: str) -> None:
        self.values(name)[...] = self._sources[name].load()

    def release(self, name: str) -> None:
        """Zero the matrix and give its pages back (MADV_DONTNEED on a private anonymous mapping)."""
        buf = self._maps.get(name)
        if buf is None:
            return
        if hasattr(mmap, "MADV_DONTNEED"):
            buf.madvise(mmap.MADV_DONTNEED)
        else:  # no way to return the pages here: at least the values do not survive
            self.values(name)[...] = 0

    def close(self) -> None:
        super().close()
        self._maps.clear()


def calibrate(metadata: dict, sources: Sequence, text: str, n_ctx: int = 512, n_chunks: int = -1,
              gram: bool = False, progress: Callable[[int, int], None] | None = None):
    """Run the calibration text through the checkpoint in float32: (Statistics, chunks run). With gram,
    XᵀX of every block input and attn_v's attention-weighted ones (convert/attention_gram.py)."""
    from ggq.convert.attention_gram import Statistics
    from ggq.runtime.kld import bos_for, chunk_logits, chunked_tokens
    from ggq.runtime.model import Transformer
    from ggq.runtime.tokenizer import Tokenizer
    model = SourceModel(metadata, sources)
    try:
        tf = Transformer(model, ctx_size=n_ctx)
        tokenizer = Tokenizer.from_metadata(model.metadata)
        tokens = chunked_tokens(tokenizer, text, n_ctx, n_chunks)
        n = len(tokens) // n_ctx
        stats = Statistics(gram, tf, model)
        tf.input_observer = stats
        try:
            for c in range(n):  # runtime.imatrix.collect's loop, each chunk's end marked for the attention grams
                chunk_logits(tf, tokens[c * n_ctx:(c + 1) * n_ctx], bos_for(tokenizer))
                stats.end_chunk()
                if progress:
                    progress(c + 1, n)
        finally:
            tf.input_observer = None
        return stats, n
    finally:
        model.close()
