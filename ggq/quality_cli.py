"""`ggq kld`, `ggq imatrix` and `ggq report`: the measuring commands of calibrated quantization (entries of cli._COMMANDS).

Heavy modules are imported inside the run functions, as in cli.py.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from ggq.errors import GGQError


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise GGQError(f"cannot read text: {getattr(e, 'strerror', None) or e}", path) from None


def _progress(label: str):
    """A one-line counter on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    return lambda done, total: print(f"\r{label} {done}/{total}", end="\n" if done == total else "",
                                     file=sys.stderr, flush=True)


# ---- ggq kld ---------------------------------------------------------------------------------------

def kld_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="the base model (.gguf), or a base logits file (ggq's or llama-perplexity "
                   "--kl-divergence-base's)")
    p.add_argument("tests", nargs="+", metavar="TEST", help="one or more .gguf models to compare with the base")
    p.add_argument("-f", "--file", help="UTF-8 text (needed unless BASE is a base logits file)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=-1, help="only the first N chunks (default: all)")
    p.add_argument("--base-logits", metavar="FILE", help="where the base model's logits are cached (default: "
                   "under $XDG_CACHE_HOME/ggq/kld, keyed by base file, text, ctx and chunks)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--match-llamacpp", action="store_true", help="llama.cpp's own CPU arithmetic, token by "
                   "token (slower; the figures llama-perplexity prints, for F16/Q8_0/Q4_0/Q4_K/Q6_K models)")


def _cache_path(base: str, text: str, n_ctx: int, n_chunks: int) -> Path:
    st = os.stat(base)
    key = hashlib.sha256(f"{os.path.realpath(base)}\0{st.st_size}\0{st.st_mtime_ns}\0{n_ctx}\0{n_chunks}\0"
                         .encode() + text.encode()).hexdigest()[:32]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ggq" / "kld"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{key}.logits"


def _is_logits_file(path: str) -> bool:
    from ggq.runtime.kld import MAGIC
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError as e:
        raise GGQError(f"cannot read: {e.strerror or e}", path) from None


def base_logits_for(base: str, text_file: str | None, n_ctx: int, n_chunks: int, cache: str | None,
                    match_llamacpp: bool = False):
    """The base logits: BASE itself if it is such a file, else the cached run of the BASE model."""
    from ggq.runtime.kld import read_base_logits, save_base_logits
    if _is_logits_file(base):
        return read_base_logits(base)
    if not text_file:
        raise GGQError("-f TEXT is needed when BASE is a model", base)
    text = read_text(text_file)
    path = Path(cache) if cache else _cache_path(base, text, n_ctx, n_chunks)
    if path.is_file():
        return read_base_logits(path)
    tf, tokenizer = open_for_text(base, n_ctx, match_llamacpp)
    try:
        return save_base_logits(tf, tokenizer, text, path, n_ctx, n_chunks, _progress("base chunk"))
    finally:
        tf.gguf.close()


def open_for_text(path: str, n_ctx: int, match_llamacpp: bool = False):
    from ggq.runtime.model import open_model
    from ggq.runtime.tokenizer import Tokenizer
    tf = open_model(path, ctx_size=n_ctx, match_llamacpp=match_llamacpp)
    return tf, Tokenizer.from_metadata(tf.gguf.metadata)


def kld(args: argparse.Namespace) -> int:
    from ggq.runtime.api import set_threads
    from ggq.runtime.kld import kl_divergence
    set_threads(args.threads)
    base = base_logits_for(args.base, args.file, args.ctx, args.chunks, args.base_logits, args.match_llamacpp)
    for test in args.tests:
        tf, tokenizer = open_for_text(test, base.n_ctx, args.match_llamacpp)
        try:
            result = kl_divergence(tf, tokenizer, base, args.chunks, _progress(f"{Path(test).name} chunk"))
        finally:
            tf.gguf.close()
        print(f"{test}:")
        for line in result.lines():
            print(f"  {line}")
    return 0


# ---- ggq imatrix -----------------------------------------------------------------------------------

def imatrix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .gguf model, or a Hugging Face checkpoint folder / hub repo id (run in float32)")
    p.add_argument("-f", "--file", required=True, help="UTF-8 calibration text")
    p.add_argument("-o", "--outfile", required=True, help="output imatrix file (llama.cpp's GGUF imatrix format)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=-1, help="only the first N chunks (default: all)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")


def _collect_any(model: str, text: str, n_ctx: int, n_chunks: int, progress):
    """InputStatistics of a GGUF file or a checkpoint, and the chunk count."""
    from ggq.runtime.imatrix import collect
    if os.path.isfile(model):
        tf, tokenizer = open_for_text(model, n_ctx)
        try:
            return collect(tf, tokenizer, text, n_ctx, n_chunks, progress=progress)
        finally:
            tf.gguf.close()
    from ggq.convert.calibration import calibrate
    from ggq.convert.pipeline import open_checkpoint_source
    ckpt = open_checkpoint_source(model)
    return calibrate(ckpt.metadata("f32"), ckpt.sources, text, n_ctx, n_chunks, progress=progress)


def imatrix(args: argparse.Namespace) -> int:
    from ggq.imatrix_file import write_imatrix
    from ggq.runtime.api import set_threads
    set_threads(args.threads)
    out = Path(args.outfile)
    if out.is_dir() or not out.parent.is_dir():
        raise GGQError("output folder does not exist" if not out.parent.is_dir() else "output path is a folder", out)
    text = read_text(args.file)
    stats, n_chunks = _collect_any(args.model, text, args.ctx, args.chunks, _progress("chunk"))
    imatrix = stats.imatrix([args.file], n_chunks, args.ctx)
    write_imatrix(out, imatrix)
    print(f"wrote {out}: {len(imatrix.entries)} entries, {n_chunks} chunks of {args.ctx} tokens")
    return 0


# ---- ggq report ------------------------------------------------------------------------------------

def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .gguf file")
    p.add_argument("--base", required=True, help="what FILE is compared with: an F32/F16/BF16 .gguf, or the "
                   "Hugging Face checkpoint folder it was made from")
    p.add_argument("--png", metavar="OUT", help="also plot relative error by layer and role to OUT (needs "
                   "matplotlib: pip install \"ggq[plot]\")")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def report(args: argparse.Namespace) -> int:
    import json
    from ggq.report import format_table, tensor_report
    if args.png:
        from ggq.report_plot import check
        check(args.png)  # an unwritable OUT or no matplotlib: say so before the measuring
    rows = tensor_report(args.file, args.base)
    print(json.dumps([r.as_dict() for r in rows], indent=1) if args.json else format_table(rows))
    if args.png:
        from ggq.report_plot import plot
        out = plot(rows, args.png, title=f"{Path(args.file).name} vs {Path(args.base).name}")
        print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ---- ggq convert: calibration options ---------------------------------------------------------------

def quant_args(p: argparse.ArgumentParser) -> None:
    from ggq.convert.calibrated import METHODS
    g = p.add_argument_group("calibrated quantization")
    g.add_argument("--method", choices=list(METHODS), help="rounding: " + "; ".join(
        f"{k}: {v[1]}" for k, v in METHODS.items()) + " (default: gptq-imatrix with --calibration, imatrix with "
        "--imatrix, else rtn)")
    g.add_argument("--imatrix", metavar="FILE", help="importance matrix file (llama-imatrix's GGUF or .dat, or ggq's)")
    g.add_argument("--calibration", metavar="TEXT", help="calibration text, run through the checkpoint in this run")
    g.add_argument("--calibration-ctx", type=int, default=512, help="tokens per calibration chunk (default 512)")
    g.add_argument("--calibration-chunks", type=int, default=-1, help="calibration chunks (default: all)")


def quant_options(args: argparse.Namespace):
    from ggq.convert.calibrated import QuantOptions
    if not (args.method or args.imatrix or args.calibration):
        return None
    return QuantOptions(args.method, args.imatrix, args.calibration, args.calibration_ctx, args.calibration_chunks)
