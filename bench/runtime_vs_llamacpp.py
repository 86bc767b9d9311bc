"""ggq's runtime against llama.cpp on llama.cpp's own GGUFs of the shared model (runtime acceptance 3).

For SmolLM2-{Q8_0,Q4_K_M,F16}.gguf made by llama.cpp (bench/reference_files.py):
  - greedy 64-token continuations of 5 plain-text prompts: `llama-simple -m F -n 64 PROMPT` (tokenizes with
    add_special and parse_special, so BOS only where the vocab asks for it: SmolLM2 has add_bos_token false;
    greedy sampler; prints the prompt's pieces, then each generated piece, stops before an end-of-generation
    token, then one newline) against ggq's greedy generate of the same prompt, compared as bytes. ggq's
    prompt ids are also checked against `llama-tokenize --ids`. The first divergence is the index of the
    first ggq token whose piece leaves llama.cpp's text.
  - perplexity: `llama-perplexity -m F -f eval.txt -c 512 --chunks 20 -t T` and
    `ggq perplexity F -f eval.txt --ctx 512 --chunks 20 --threads T`, interleaved per file; the ratio
    must be within 0.5 %.

    .venv/bin/python -P bench/runtime_vs_llamacpp.py [--threads 2] [--ggq-threads N] [--files Q8_0 Q4_K_M F16]
Writes the `runtime_vs_llamacpp` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.llamacpp import tool  # noqa: E402
from bench.reference_files import ref_path  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402
from tests.conftest import DATA  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The three primary colors are",
    "In 1969, the first man on the moon",
]
N_PREDICT = 64
PPL_LIMIT = 0.005
DEFAULT_NOTE = ("ggq's defaults: prompt in float32 through BLAS, generated tokens with 8-bit activations, "
                "float32 KV cache and attention.")
MATCH_NOTE = ("ggq.load(..., match_llamacpp=True): llama.cpp's CPU arithmetic (x86 AVX-512 build) for every "
              "token, prompt ones included: F16 KV cache with its flash attention, ggml's norm, rope and SiLU, "
              "each weight kind's dot product in the order of llama.cpp's kernels.")
GGQ = Path(sys.executable).parent / "ggq"


def llama_simple(path: Path, prompt: str) -> bytes:
    """llama-simple's stdout bytes: prompt pieces, generated pieces, a final newline."""
    cmd = [str(tool("llama-simple")), "-m", str(path), "-n", str(N_PREDICT), prompt]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


def llama_prompt_ids(path: Path, prompt: str) -> list[int]:
    cmd = [str(tool("llama-tokenize")), "-m", str(path), "-p", prompt, "--ids", "--log-disable"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = [s for s in out.splitlines() if s.startswith("[")][-1]
    return [int(t) for t in line.strip("[]").split(",") if t.strip()]


def ggq_greedy(m, prompt: str) -> tuple[list[int], list[int]]:
    """Prompt ids and greedy continuation ids (stopping before end-of-generation, like llama-simple)."""
    from ggq.runtime.generate import generate_ids
    from ggq.runtime.sampling import Sampler, SamplerSettings
    ids = m.tokenize(prompt, add_special=True, parse_special=True)
    m.transformer.cache_tokens = []  # every prompt from an empty context, as llama-simple does
    out = list(generate_ids(m.transformer, m.tokenizer, ids, N_PREDICT, Sampler(SamplerSettings(temperature=0))))
    return ids, out


def first_divergence(pieces: list[bytes], theirs: bytes) -> int | None:
    """Index of the first ggq token whose piece leaves llama.cpp's text; None if the texts are equal."""
    text = b""
    for i, piece in enumerate(pieces):
        text += piece
        if not theirs.startswith(text):
            return i
    return None if text == theirs else len(pieces)


def compare_prompt(m, path: Path, prompt: str) -> dict:
    ids, out = ggq_greedy(m, prompt)
    pieces = [m.tokenizer.token_to_piece(t, special=True) for t in out]
    prompt_text = b"".join(m.tokenizer.token_to_piece(t, special=True) for t in ids)
    stdout = llama_simple(path, prompt)
    if not stdout.startswith(prompt_text):
        raise RuntimeError(f"llama-simple's output does not start with the prompt: {stdout[:80]!r}")
    theirs = stdout[len(prompt_text):]
    theirs = theirs[:-1] if theirs.endswith(b"\n") else theirs  # the newline printed after the loop
    div = first_divergence(pieces, theirs)
    return {"prompt": prompt, "same_prompt_ids": ids == llama_prompt_ids(path, prompt), "n_ggq": len(out),
            "divergence": div, "ggq": b"".join(pieces), "llama": theirs}


def continuations(path: Path, threads: int, match: bool) -> list[dict]:
    import ggq
    m = ggq.load(path, threads=threads, ctx_size=256, match_llamacpp=match)
    try:
        return [compare_prompt(m, path, p) for p in PROMPTS]
    finally:
        m.close()


def llamacpp_ppl_cmd(path: Path, text: Path, ctx: int, chunks: int, threads: int) -> list[str]:
    return [str(tool("llama-perplexity")), "-m", str(path), "-f", str(text), "-c", str(ctx),
            "--chunks", str(chunks), "-t", str(threads)]


def ggq_ppl_cmd(path: Path, text: Path, ctx: int, chunks: int, threads: int, match: bool) -> list[str]:
    return [str(GGQ), "perplexity", str(path), "-f", str(text), "--ctx", str(ctx), "--chunks", str(chunks),
            "--threads", str(threads)] + (["--match-llamacpp"] if match else [])


def run_ppl(cmd: list[str], pattern: str) -> tuple[float, float]:
    """PPL parsed from the command's output (the last match), and its wall seconds."""
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t
    found = re.findall(pattern, out.stdout + out.stderr)
    if not found:
        raise RuntimeError(f"no PPL in the output of {shlex.join(cmd)}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(found[-1]), seconds


def short(b: bytes, n: int = 60) -> str:
    s = b.decode("utf-8", "replace").replace("\n", "\\n").replace("|", "\\|")
    return s[:n] + ("…" if len(s) > n else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="+", default=["Q8_0", "Q4_K_M", "F16"])
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (and ggq's unless --ggq-threads)")
    ap.add_argument("--ggq-threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--match-llamacpp", action="store_true", help="ggq with match_llamacpp=True")
    args = ap.parse_args()
    ggq_threads = args.ggq_threads or args.threads
    text = DATA / "text" / "eval.txt"
    summary, details, commands = [], [], []
    for name in args.files:
        path = ref_path(name)
        res = continuations(path, ggq_threads, args.match_llamacpp)
        same = sum(r["divergence"] is None for r in res)
        for r in res:
            div = "identical" if r["divergence"] is None else f"token {r['divergence']}"
            print(f"{name} {r['prompt']!r}: {div}; prompt ids equal: {r['same_prompt_ids']}", flush=True)
            details.append([name, f"`{r['prompt']}`", "yes" if r["same_prompt_ids"] else "NO", r["n_ggq"], div,
                            short(r["ggq"]), short(r["llama"])])
        row = [name, f"{same}/{len(res)}"]
        if not args.skip_ppl:
            lcmd = llamacpp_ppl_cmd(path, text, args.ctx, args.chunks, args.threads)
            gcmd = ggq_ppl_cmd(path, text, args.ctx, args.chunks, ggq_threads, args.match_llamacpp)
            commands += [shlex.join(lcmd), shlex.join(gcmd)]
            theirs, t_l = run_ppl(lcmd, r"Final estimate: PPL = ([0-9.]+)")
            ours, t_g = run_ppl(gcmd, r"PPL = ([0-9.]+)")
            ratio = ours / theirs
            ok = abs(ratio - 1) <= PPL_LIMIT
            print(f"{name}: PPL ggq {ours:.4f} ({t_g:.0f} s)  llama.cpp {theirs:.4f} ({t_l:.0f} s)  "
                  f"ratio {ratio:.5f} {'ok' if ok else 'OUTSIDE 0.5%'}", flush=True)
            row += [f"{ours:.4f}", f"{theirs:.4f}", f"{ratio:.5f}", "yes" if ok else "**no**",
                    f"{t_g:.0f} / {t_l:.0f}"]
        summary.append(row)
    headers = ["file", "prompts identical"]
    if not args.skip_ppl:
        headers += ["PPL ggq", "PPL llama.cpp", "ratio", "within 0.5 %", "seconds ggq / llama.cpp"]
    body = "\n".join([
        "## ggq runtime vs llama.cpp on llama.cpp's GGUFs (runtime acceptance 3)"
        + (", ggq with match_llamacpp=True" if args.match_llamacpp else ", ggq's default arithmetic"),
        "",
        MATCH_NOTE if args.match_llamacpp else DEFAULT_NOTE,
        "",
        f"`{command_line()}` — git {git_revision()}, {machine()}; llama.cpp threads {args.threads}, "
        f"ggq threads {ggq_threads}.",
        f"Greedy {N_PREDICT}-token continuations: `llama-simple -m F -n {N_PREDICT} PROMPT` (no chat template; "
        "SmolLM2's vocab has add_bos_token false, so neither side adds BOS) vs ggq's greedy generation "
        "(temperature 0) of the same prompt, compared as bytes (llama-simple prints text only); "
        "prompt ids compared with `llama-tokenize --ids`.",
        f"Perplexity on text/eval.txt, ctx {args.ctx}, {args.chunks} chunks, llama.cpp and ggq run interleaved "
        "per file:" if not args.skip_ppl else "",
        "",
        *[f"    {c}" for c in commands],
        "",
        markdown_table(headers, summary),
        "",
        "Per prompt (divergence = index of ggq's first generated token that leaves llama.cpp's text):",
        "",
        markdown_table(["file", "prompt", "prompt ids equal", "ggq tokens", "divergence", "ggq text",
                        "llama.cpp text"], details),
    ])
    write_section("runtime_vs_llamacpp_match" if args.match_llamacpp else "runtime_vs_llamacpp", body)
    print(body)


if __name__ == "__main__":
    main()
