"""ggq perplexity against llama-perplexity on every reference GGUF of the shared model (each weight type).

    .venv/bin/python -P bench/runtime_perplexity_vs_llamacpp.py [--ctx 128] [--chunks 4] [--threads 1]
Same text (text/eval.txt), context and chunks on both sides. llama.cpp rounds activations to 8 bits
(or f16) inside its dot products, ggq keeps them float32, so small differences are expected.
Writes the `runtime_perplexity` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.llamacpp import tool  # noqa: E402
from bench.reference_files import REF  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402
from tests.conftest import DATA  # noqa: E402

NAMES = ["F32", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0",
         "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "pure-Q2_K", "pure-Q3_K", "pure-Q4_K", "pure-Q5_K"]


def llamacpp_ppl(path: Path, text: Path, ctx: int, chunks: int, threads: int) -> float:
    cmd = [str(tool("llama-perplexity")), "-m", str(path), "-f", str(text), "-c", str(ctx), "-b", str(ctx),
           "--chunks", str(chunks), "-t", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr).group(1))


def ggq_ppl(path: Path, text: str, ctx: int, chunks: int) -> tuple[float, float]:
    from ggq.runtime.model import open_model
    from ggq.runtime.perplexity import perplexity
    from ggq.runtime.tokenizer import Tokenizer
    tf = open_model(path, ctx_size=ctx)
    tokenizer = Tokenizer.from_metadata(tf.gguf.metadata)
    t = time.perf_counter()
    result = perplexity(tf, tokenizer, text, n_ctx=ctx, n_chunks=chunks)
    seconds = time.perf_counter() - t
    tf.gguf.close()
    return result.ppl, chunks * ctx / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from ggq.runtime.api import set_threads
    set_threads(args.threads)
    text_path = DATA / "text" / "eval.txt"
    text = text_path.read_text(encoding="utf-8")
    rows = []
    for name in NAMES:
        path = REF / f"SmolLM2-{name}.gguf"
        if not path.is_file():
            continue
        ours, tps = ggq_ppl(path, text, args.ctx, args.chunks)
        theirs = llamacpp_ppl(path, text_path, args.ctx, args.chunks, args.threads)
        rel = (ours - theirs) / theirs
        print(f"{name}: ggq {ours:.4f}  llama.cpp {theirs:.4f}  ({rel:+.3%})  ggq {tps:.0f} tok/s", flush=True)
        rows.append([name, f"{ours:.4f}", f"{theirs:.4f}", f"{rel:+.3%}", f"{tps:.0f}"])
    body = "\n".join([
        "## ggq perplexity vs llama-perplexity (SmolLM2-135M-Instruct reference GGUFs)",
        "",
        f"`{command_line()}` — git {git_revision()}, {machine()}; text/eval.txt, ctx {args.ctx}, "
        f"{args.chunks} chunks, {args.threads} thread(s).",
        "llama.cpp quantizes activations to 8 bits (f16 for F16 weights) in its dot products; ggq keeps float32.",
        "",
        markdown_table(["GGUF", "ggq PPL", "llama.cpp PPL", "difference", "ggq tok/s (prefill, all logits)"], rows),
    ])
    write_section("runtime_perplexity", body)
    print(body)


if __name__ == "__main__":
    main()
