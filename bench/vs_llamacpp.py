"""ggq's speed beside llama.cpp's on the same GGUF files of the shared model (the speed issue).

For llama.cpp's own files (bench/reference_files.py) of each type (and with --big the 1.1B-shaped files
that `ggq convert` makes of make_big_checkpoint.py's checkpoint), in rounds, one after the other:
`llama-bench -m F -t T -p 512 -n 128 -r R -o json`, `ggq bench F -t T -p 512 -n 128 -r R --json` and
the same with GGQ_TUNE=0 (the untuned kernel shapes)
(fresh processes, same definitions: pp = prompt tokens in one batch, tg = tokens generated one at a
time, both from an empty cache, tokens/s averaged over R runs). Each test's figure is the best round
of each side, the ratio ours / theirs. Then, for one model: `ggq run F -p Hi -n 1` wall time with a
cold Numba cache (a new cache directory: every kernel of the model compiled) and a warm one, and peak
RSS of a 128-token generation against file size + KV cache + 150 MB.

    .venv/bin/python -P bench/vs_llamacpp.py [--types Q4_K_M,Q8_0] [--rounds 2] [--threads 2] [--big]
Writes the `vs_llamacpp` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.llamacpp import tool  # noqa: E402
from bench.reference_files import ensure, ref_path  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

TYPES = ("F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0", "Q2_K")
BIG = ("q4_k_m", "q8_0")  # the 1.1B-shaped checkpoint (make_big_checkpoint.py) converted by ggq
BIG_DIR = Path(os.environ.get("GGQ_BENCH_CACHE", Path.home() / ".cache" / "ggq-bench"))
# the speed issue's acceptance: (test, shared model or 1.1B) -> lowest ratio ggq / llama.cpp
TARGETS = {("tg", "135M"): 1.1, ("pp", "135M"): 1.0, ("tg", "1.1B"): 1.0, ("pp", "1.1B"): 1.0}
GGQ = [sys.executable, "-P", "-m", "ggq"]  # -P: the installed ggq, not the source folder of the cwd
ARM_NOTE = ("Measured on x86 only. Not measured: Apple Silicon / ARM. There ggq runs the same kernels; the "
            "integer dots use NEON sdot where the CPU has dotprod (every Apple Silicon chip), else the generic "
            "LLVM vector IR: both bit-exact with the x86 forms (tests run under qemu-aarch64, see arm_emulated; "
            "the generic IR also here with GGQ_NO_VNNI=1 GGQ_NO_MADD=1), and numpy's BLAS is Accelerate "
            "rather than OpenBLAS. The tuner's candidate shapes are the same there, measured there.")


def llama_bench(path: Path, threads: int, reps: int, n_prompt: int, n_gen: int) -> dict[str, float]:
    out = subprocess.run([str(tool("llama-bench")), "-m", str(path), "-t", str(threads), "-p", str(n_prompt),
                          "-n", str(n_gen), "-r", str(reps), "-o", "json"], capture_output=True, text=True, check=True)
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(out.stdout)}


def ggq_bench(path: Path, threads: int, reps: int, n_prompt: int, n_gen: int,
              tune: bool = True) -> tuple[dict[str, float], dict]:
    env = dict(os.environ, **({} if tune else {"GGQ_TUNE": "0"}))
    out = subprocess.run(GGQ + ["bench", str(path), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                                "-r", str(reps), "--json"], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout)
    return {s["test"][:2]: s["tokens_per_s"] for s in result["speeds"]}, result


def files(types, big: bool) -> list[tuple[str, str, Path]]:
    """(label, size class, path): llama.cpp's own files of the shared model, then the 1.1B ones."""
    out = [(name, "135M", ref_path(name)) for name in types]
    if big:
        out += [(f"1.1B {t}", "1.1B", BIG_DIR / f"big-1.1b-{t}.gguf") for t in BIG]
    return out


def _streamed(info: dict) -> tuple[str, str]:
    """ggq's weight GB/s during decode (its fastest tg repetition, as runtime/bench.py counts it) and its
    share of the copy bandwidth of the same run (the best of its rounds)."""
    tg = [max(s["samples"]) for s in info["speeds"] if s["test"].startswith("tg")]
    if not tg or not info.get("weight_bytes_per_token") or not info.get("copy_bytes_per_s"):
        return "", ""
    streamed = tg[0] * info["weight_bytes_per_token"]
    return f"{streamed / 1e9:.1f} / {info['copy_bytes_per_s'] / 1e9:.1f}", f"{100 * streamed / info['copy_bytes_per_s']:.0f} %"


def speed_rows(entries, rounds, threads, reps, n_prompt, n_gen):
    rows = []
    for name, size, path in entries:
        ours, untuned, theirs, info = {}, {}, {}, {}
        for _ in range(rounds):  # interleaved: llama.cpp, ggq tuned, ggq untuned, again
            lc = llama_bench(path, threads, reps, n_prompt, n_gen)
            gq, round_info = ggq_bench(path, threads, reps, n_prompt, n_gen)
            gq0, _ = ggq_bench(path, threads, reps, n_prompt, n_gen, tune=False)
            if gq["tg"] > ours.get("tg", 0.0):
                info = round_info  # the streamed GB/s of the best tg round
            for test in ("pp", "tg"):
                theirs[test] = max(theirs.get(test, 0.0), lc[test])
                untuned[test] = max(untuned.get(test, 0.0), gq0[test])
                ours[test] = max(ours.get(test, 0.0), gq[test])
        for test, n in (("pp", n_prompt), ("tg", n_gen)):
            ratio = ours[test] / theirs[test]
            target = TARGETS[(test, size)]
            gbs, share = _streamed(info) if test == "tg" else ("", "")
            rows.append([name, f"{test}{n}", f"{ours[test]:.1f}", f"{untuned[test]:.1f}", f"{theirs[test]:.1f}",
                         f"{ratio:.2f}", f">= {target}", "PASS" if ratio >= target else "FAIL", gbs, share])
            print(rows[-1], flush=True)
    return rows


def timed_run(args: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.read()}")
    return wall, usage.ru_maxrss * 1024


def kv_cache_bytes(path: Path, ctx: int) -> int:
    """ggq's float32 K and V caches: layers x kv heads x ctx x head_dim x 4 bytes, twice."""
    from ggq.gguf_read import open_gguf
    with open_gguf(path) as f:
        m, arch = f.metadata, f.metadata["general.architecture"]
        n_head = m[f"{arch}.attention.head_count"]
        head_dim = m.get(f"{arch}.attention.key_length", m[f"{arch}.embedding_length"] // n_head)
        return 2 * m[f"{arch}.block_count"] * m[f"{arch}.attention.head_count_kv"] * ctx * head_dim * 4


def startup_rows(name: str, threads: int) -> list[list[object]]:
    path = ref_path(name)
    run = GGQ + ["run", str(path), "-p", "Hi", "-n", "1", "-t", str(threads), "--temp", "0"]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold, _ = timed_run(run, env)
        warm = min(timed_run(run, env)[0] for _ in range(3))
    rows.append([f"`ggq run {name} -p Hi -n 1`, cold Numba cache (all kernels compiled)", f"{cold:.1f} s", "<= 60 s",
                 "PASS" if cold <= 60 else "FAIL"])
    rows.append([f"`ggq run {name} -p Hi -n 1`, warm cache (best of 3)", f"{warm:.2f} s", "<= 1.5 s",
                 "PASS" if warm <= 1.5 else "FAIL"])
    ctx = 4096  # ggq run's default context for this model: min(training context, 4096)
    _, rss = timed_run(GGQ + ["run", str(path), "-p", "Write a long story.", "-n", "128", "-t", str(threads),
                              "--temp", "0", "-c", str(ctx)], dict(os.environ))
    kv = kv_cache_bytes(path, ctx)
    limit = path.stat().st_size + kv + 150 * 2**20
    rows.append([f"peak RSS, `ggq run {name}` generating 128 tokens (ctx {ctx})", f"{rss / 2**20:.0f} MiB",
                 f"<= {limit / 2**20:.0f} MiB (file {path.stat().st_size / 2**20:.0f} + KV {kv / 2**20:.0f} + 150)",
                 "PASS" if rss <= limit else "FAIL"])
    for row in rows:
        print(row, flush=True)
    return rows


def tune_show() -> str:
    return subprocess.run(GGQ + ["tune", "--show"], capture_output=True, text=True, check=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also the 1.1B q4_k_m and q8_0 files (BIG_DIR)")
    ap.add_argument("--startup-model", default="Q4_K_M")
    args = ap.parse_args()
    ensure()
    rows = speed_rows(files(args.types.split(","), args.big), args.rounds, args.threads, args.reps, 512, 128)
    start = startup_rows(args.startup_model, args.threads) if args.startup_model else []
    load = os.getloadavg()
    blas = os.environ.get("OPENBLAS_CORETYPE", "OpenBLAS's own pick")
    body = (f"## Speed: ggq vs llama.cpp on llama.cpp's files of SmolLM2-135M-Instruct\n\n"
            f"`{command_line()}` at {git_revision()} on {machine()}; {args.threads} threads, {args.rounds} "
            f"interleaved rounds of `llama-bench -r {args.reps}`, `ggq bench -r {args.reps}` (kernel shapes and "
            f"prefetch distance tuned on this machine) and `GGQ_TUNE=0 ggq bench` (untuned: the shapes ggq had "
            f"before, no prefetch) per file, best "
            f"round of each; load average after the runs {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
            f"OPENBLAS_CORETYPE: {blas}. "
            "llama.cpp is built with -march=native but without AMX (bench/llamacpp.py: its AMX kernels crash "
            "on this machine). ggq's prompts and decode multiply block weights with 8-bit activations as "
            "llama.cpp does (prompts: runtime/kernels/vecir_tile.py), F16 weights in float32 (prompts: "
            "runtime/kernels/float_tile.py), prompt attention in runtime/kernels/attention_tile.py. Streamed: ggq's weight GB/s during tg / the memory-copy bandwidth (read + write) "
            "measured in the same `ggq bench`. 1.1B rows: the make_big_checkpoint.py checkpoint converted "
            "by `ggq convert`.\n\n" + ARM_NOTE + "\n\n"
            + markdown_table(["file", "test", "ggq tok/s", "ggq untuned", "llama.cpp tok/s", "ratio", "target", "",
                              "streamed GB/s", "of copy"], rows)
            + ("\n\n" + markdown_table(["measure", "value", "target", ""], start) if start else "")
            + "\n\nThe tuned choices these runs used (`ggq tune --show`):\n\n```\n" + tune_show() + "```")
    write_section("vs_llamacpp", body)
    print(body)


if __name__ == "__main__":
    main()
