"""Calibrated conversion: how each tensor's float values become blocks, chosen by `--method`.

    METHODS[name] = (needs, what it does)
    rtn      round to nearest, no importance: llama-quantize without --imatrix, byte for byte
    imatrix  the format's scale search weighted by the importance matrix (sum x_j^2 / count per column):
             llama-quantize --imatrix, byte for byte, given the same file
    gptq     error-compensating rounding through each weight's XᵀX (convert/gptq.py); needs
             --calibration, since an imatrix file keeps only the diagonal

The statistics come from an imatrix file (`--imatrix`, llama.cpp's or ggq's) or from running the
calibration text through the checkpoint's own float32 weights in this run (`--calibration`).
Tensors the calibration never sees (the token embedding, a tied output) are rounded to nearest.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ggq.errors import GGQError

METHODS = {
    "rtn": (frozenset(), "round to nearest (llama-quantize without an imatrix)"),
    "imatrix": (frozenset({"importance"}), "importance-weighted scale search (llama-quantize --imatrix)"),
    "gptq": (frozenset({"importance", "gram"}), "error feedback through XᵀX of the calibration inputs"),
    "gptq-imatrix": (frozenset({"importance", "gram"}), "gptq's error feedback, block scales searched with the "
                     "imatrix importance (as llama-quantize) instead of the conditional one"),
}
DEFAULT_CHUNKS = -1  # all of the calibration text, as llama-imatrix


@dataclass(frozen=True)
class QuantOptions:
    method: str | None = None          # None: gptq-imatrix with --calibration, imatrix with --imatrix, else rtn
    imatrix: str | None = None         # an imatrix file
    calibration: str | None = None     # a calibration text
    ctx: int = 512
    chunks: int = DEFAULT_CHUNKS
    # library use: statistics already collected (runtime.imatrix.InputStatistics with its chunk count),
    # so that several conversions of one checkpoint share one calibration run
    statistics: tuple | None = None
    # library use: the budget allocator's per-tensor sensitivities (convert/sensitivity.py) already measured
    sensitivities: dict | None = None

    @property
    def chosen(self) -> str:
        if self.method:
            return self.method
        # gptq-imatrix: the better of the two GPTQ forms on every type measured (bench/RESULTS.md)
        return "gptq-imatrix" if self.calibration else "imatrix" if self.imatrix else "rtn"

    @property
    def uses_importance(self) -> bool:
        return "importance" in METHODS[self.chosen][0]

    def check(self) -> None:
        """Options that cannot work together fail before anything is read."""
        method = self.chosen
        if method not in METHODS:
            raise GGQError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
        if self.imatrix and self.calibration:
            raise GGQError("give --imatrix or --calibration, not both")
        needs = METHODS[method][0]
        if needs and not (self.imatrix or self.calibration):
            raise GGQError(f"--method {method} needs --calibration TEXT or --imatrix FILE")
        if "gram" in needs and not self.calibration:
            raise GGQError(f"--method {method} needs --calibration TEXT (an imatrix file has no XᵀX)")
        if not needs and (self.imatrix or self.calibration):
            raise GGQError(f"--method {method} uses no calibration; drop --imatrix/--calibration")


def statistics(quant: QuantOptions, ckpt, quiet: bool):
    """(Imatrix, InputStatistics or None, metadata keys llama-quantize would add)."""
    from ggq.imatrix_file import read_imatrix
    if quant.imatrix:
        imatrix = read_imatrix(quant.imatrix)
        return imatrix, None, _imatrix_metadata(quant.imatrix, imatrix)
    if quant.statistics is not None:
        stats, n_chunks = quant.statistics
        imatrix = stats.imatrix([quant.calibration], n_chunks, quant.ctx)
        return imatrix, stats, _imatrix_metadata(quant.calibration, imatrix)
    from ggq.convert.calibration import calibrate
    from ggq.quality_cli import read_text
    text = read_text(quant.calibration)
    bar = _bar(quiet)
    try:
        stats, n_chunks = calibrate(ckpt.metadata("f32"), ckpt.sources, text, quant.ctx, quant.chunks,
                                    gram="gram" in METHODS[quant.chosen][0], progress=bar.step if bar else None)
    finally:
        if bar:
            bar.close()
    imatrix = stats.imatrix([quant.calibration], n_chunks, quant.ctx)
    return imatrix, stats, _imatrix_metadata(quant.calibration, imatrix)


def _imatrix_metadata(source: str, imatrix) -> dict:
    md = {"quantize.imatrix.file": source}
    if imatrix.datasets:
        md["quantize.imatrix.dataset"] = imatrix.datasets[0]
    md["quantize.imatrix.entries_count"] = len(imatrix.entries)
    md["quantize.imatrix.chunks_count"] = imatrix.chunk_count
    return md


class _Bar:
    def __init__(self, desc: str, unit: str):
        from tqdm import tqdm
        self.tqdm = tqdm(total=None, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def step(self, done: int, total: int) -> None:
        self.tqdm.total = total
        self.tqdm.update(done - self.tqdm.n)

    def close(self) -> None:
        self.tqdm.close()


def _bar(quiet: bool, desc: str = "calibration", unit: str = "chunk") -> _Bar | None:
    return None if quiet or not sys.stderr.isatty() else _Bar(desc, unit)


def by_layer(quant: QuantOptions, budget) -> bool:
    """Whether the convert collects its statistics one layer at a time (convert/layerwise.py): a
    calibration text run in this convert, with no budget (whose sensitivities run the whole model)."""
    return (quant is not None and budget is None and quant.calibration is not None
            and quant.statistics is None and quant.chosen != "rtn")


def prepare(quant: QuantOptions, ckpt, quiet: bool = False, collected=None):
    """(encode(name, values, qtype) -> bytes, extra metadata) for the chosen method; `collected`: what
    statistics() returned, when the caller already ran the calibration (convert/allocate.py)."""
    from ggq.convert.pipeline import plain_encode
    method = quant.chosen
    if method == "rtn":
        return plain_encode, {}
    imatrix, stats, metadata = collected or statistics(quant, ckpt, quiet)
    return encoder(method, imatrix, stats), metadata


def encoder(method: str, imatrix, stats):
    """encode(name, values, qtype) -> the tensor's blocks, by `method` with these statistics (Imatrix,
    InputStatistics or None)."""
    from ggq.convert.pipeline import plain_encode

    def encode(name, values, qt):
        from ggq.quants import quantize
        importance = imatrix.importance(name)
        if qt.name in ("F32", "F16", "BF16") or importance is None:
            return plain_encode(name, values, qt)
        if method in ("gptq", "gptq-imatrix"):
            return _gptq(name, values, qt, stats, importance if method == "gptq-imatrix" else None)
        return quantize(values, qt, importance)

    return encode


def _gptq(name: str, values, qt, stats, importance):
    """GPTQ through the weight's Hessian: one XᵀX for all rows, or per row group where the statistics
    have one (attn_v per kv head, weighted by the attention that reads it: convert/attention_gram.py)."""
    import numpy as np
    from ggq.convert.gptq import gptq_quantize
    parts = stats.row_grams(name) if hasattr(stats, "row_grams") else None  # plain InputStatistics: none
    if not parts:
        return gptq_quantize(values, stats.gram(name), qt, importance=importance)
    return np.concatenate([gptq_quantize(values[r0:r1], h, qt, importance=importance) for r0, r1, h in parts])
