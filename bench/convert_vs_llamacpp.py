"""`ggq convert` against llama.cpp's convert_hf_to_gguf.py + llama-quantize, on the shared model
(SmolLM2-135M-Instruct) and on a 1.1B-shaped random checkpoint. Each part writes its own section of
bench/RESULTS.md:

    tables      tensor -> type table, file size, metadata and tensor order of our f16, q8_0, q4_k_m, q3_k_m,
                q2_k files vs llama.cpp's (gguf.GGUFReader on both)            -> convert_tables
    generate    llama-simple greedy 32-token continuations of 5 prompts, our file vs llama.cpp's, f16 and q8_0
                                                                               -> convert_generate
    perplexity  llama-perplexity on text/eval.txt (-c 512 --chunks 20 -t 2), ours vs llama.cpp's, interleaved,
                q4_k_m, q3_k_m, q2_k                                           -> convert_perplexity
    timing      wall time, CPU time and peak RSS of `ggq convert --type q4_k_m` vs convert_hf_to_gguf.py
                --outtype f16 followed by llama-quantize q4_k_m               -> convert_timing
    big         `ggq convert --type q4_k_m` of bench/make_big_checkpoint.py's 1.1B checkpoint: time, peak RSS
                (--single: also as one model.safetensors; --with-llamacpp: also llama.cpp's two steps)
                                                                               -> convert_big

    /work/main/.venv/bin/python -P bench/convert_vs_llamacpp.py [--parts tables,generate,...] [--rounds 2]

Our files: ~/.cache/ggq-bench/ours/SmolLM2-<TYPE>.gguf (`tables` always reconverts them; the other parts
convert what is missing). Peak RSS is the child's ru_maxrss from wait4 (resident pages, file-backed mmap
pages included), and the /proc/PID/status RssAnon/RssFile peaks sampled every 50 ms.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.llamacpp import convert_script, tool  # noqa: E402
from bench.reference_files import DATA, MODEL_DIR, PYTHON, REF, ref_path  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402

GGQ = Path(sys.executable).parent / "ggq"
OURS = REF.parent / "ours"
EVAL = DATA / "text" / "eval.txt"
TYPES = ("f16", "q8_0", "q4_k_m", "q3_k_m", "q2_k")
GEN_TYPES = ("f16", "q8_0")
PPL_TYPES = ("q4_k_m", "q3_k_m", "q2_k")
PROMPTS = ("The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):",
           "The three primary colors are", "Water boils at a temperature of")
PPL_ARGS = ["-c", "512", "--chunks", "20", "-t", "2"]
# fields that name the model rather than describe it: llama.cpp derives them from the folder/README
IDENTITY = re.compile(r"general\.(name|basename|finetune|size_label|version|organization|quantized_by|"
                      r"url|repo_url|license.*|tags|languages|base_model.*|dataset.*|description)$")


def ours(ftype: str, force: bool = False) -> Path:
    path = OURS / f"SmolLM2-{ftype.upper()}.gguf"
    if force or not path.is_file():
        OURS.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        subprocess.run([str(GGQ), "convert", str(MODEL_DIR), "--type", ftype, "-o", str(path), "--quiet"],
                       check=True)
    return path


def theirs(ftype: str) -> Path:
    return ref_path(ftype.upper())


# ---------------------------------------------------------------- tables

def _fields(path: Path) -> dict[str, tuple[list[str], object]]:
    from gguf import GGUFReader
    out = {}
    for key, field in GGUFReader(path).fields.items():
        if not key.startswith("GGUF."):
            out[key] = ([t.name for t in field.types], field.contents())
    return out


def _short(value, n: int = 70) -> str:
    if value is None:
        return "(absent)"
    types, v = value
    text = repr(v)
    if isinstance(v, list):
        text = f"[{len(v)} items] " + repr(v[:3])[:n]
    return f"{'/'.join(types)} {text[:n]}"


def compare_files(mine: Path, ref: Path) -> dict:
    """Type table, sizes, tensor order, metadata differences of two GGUF files."""
    from gguf import GGUFReader
    a, b = GGUFReader(mine), GGUFReader(ref)
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    type_diff = [(n, ta[n].tensor_type.name if n in ta else "-", tb[n].tensor_type.name if n in tb else "-")
                 for n in sorted(set(ta) | set(tb))
                 if n not in ta or n not in tb or ta[n].tensor_type != tb[n].tensor_type]
    same_bytes = sum(1 for n in ta if n in tb and ta[n].tensor_type == tb[n].tensor_type
                     and bytes(ta[n].data.tobytes()) == bytes(tb[n].data.tobytes()))
    fa, fb = _fields(mine), _fields(ref)
    md_diff = [(k, _short(fa.get(k)), _short(fb.get(k))) for k in sorted(set(fa) | set(fb))
               if fa.get(k) != fb.get(k)]
    return {"n_tensors": (len(ta), len(tb)), "type_diff": type_diff, "same_bytes": same_bytes,
            "sizes": (mine.stat().st_size, ref.stat().st_size),
            "same_order": [t.name for t in a.tensors] == [t.name for t in b.tensors],
            "md_diff": [d for d in md_diff if not IDENTITY.match(d[0])],
            "identity_diff": [d for d in md_diff if IDENTITY.match(d[0])]}


def part_tables(args) -> None:
    rows, details = [], []
    for ftype in TYPES:
        t0 = time.perf_counter()
        mine = ours(ftype, force=True)
        secs = time.perf_counter() - t0
        c = compare_files(mine, theirs(ftype))
        ratio = c["sizes"][0] / c["sizes"][1]
        ok = not c["type_diff"] and abs(ratio - 1) <= 0.005
        rows.append([ftype, f"{c['n_tensors'][0]} / {c['n_tensors'][1]}", len(c["type_diff"]),
                     f"{c['sizes'][0]:,} / {c['sizes'][1]:,}", f"{ratio:.6f}", c["same_bytes"],
                     "yes" if c["same_order"] else "no", len(c["md_diff"]), f"{secs:.1f}",
                     "PASS" if ok else "FAIL"])
        print(ftype, rows[-1], flush=True)
        for name, x, y in c["type_diff"]:
            details.append(f"- {ftype}: type of `{name}`: ours {x}, llama.cpp {y}")
        for key, x, y in c["md_diff"]:
            details.append(f"- {ftype}: metadata `{key}`: ours {x}; llama.cpp {y}")
        if ftype == TYPES[0]:
            ident = "; ".join(f"`{k}` ours {x}, llama.cpp {y}" for k, x, y in c["identity_diff"])
    table = markdown_table(["type", "tensors (ours / llama.cpp)", "type mismatches", "bytes (ours / llama.cpp)",
                            "size ratio", "byte-identical tensors", "same tensor order",
                            "metadata differences", "ggq convert s", "acceptance"], rows)
    body = (f"### ggq convert vs llama.cpp: tensor types, size, metadata (SmolLM2-135M-Instruct)\n\n"
            f"`{command_line()}` (git {git_revision()}). Ours: `ggq convert {MODEL_DIR} --type T`; "
            f"llama.cpp: convert_hf_to_gguf.py --outtype f16 + llama-quantize (bench/reference_files.py). "
            f"Acceptance: no type mismatch, size within 0.5 %. Metadata compared by key, GGUF value type and "
            f"value with gguf.GGUFReader, name-like general.* fields left out.\n\n{table}\n\n"
            f"Differences (metadata/type):\n\n" + ("\n".join(details) or "- none") +
            f"\n\nName-like fields (not counted): {ident or 'none'}\n")
    write_section("convert_tables", body)


# ---------------------------------------------------------------- generate

def simple(model: Path, prompt: str) -> str:
    out = subprocess.run([str(tool("llama-simple")), "-m", str(model), "-n", "32", prompt],
                         capture_output=True, text=True, errors="replace")
    if out.returncode != 0:
        return f"<llama-simple failed rc={out.returncode}: {out.stderr.strip().splitlines()[-1:]}>"
    return out.stdout.rstrip("\n")


def part_generate(args) -> None:
    rows, texts = [], []
    for ftype in GEN_TYPES:
        mine, ref = ours(ftype), theirs(ftype)
        for prompt in PROMPTS:
            a, b = simple(mine, prompt), simple(ref, prompt)  # interleaved: ours then theirs
            same = a == b
            rows.append([ftype, repr(prompt), "identical" if same else "DIFFERENT"])
            print(ftype, prompt, same, flush=True)
            texts.append(f"- {ftype} {prompt!r}: ours {a!r}" + ("" if same else f"\n  llama.cpp {b!r}"))
    n_same = sum(r[2] == "identical" for r in rows)
    body = (f"### llama.cpp runs ggq convert's files: greedy continuations (SmolLM2-135M-Instruct)\n\n"
            f"`{command_line()}` (git {git_revision()}): `llama-simple -m F -n 32 PROMPT` "
            f"(greedy) on our file and on llama.cpp's file of the same type, one after the other. "
            f"{n_same}/{len(rows)} identical.\n\n{markdown_table(['type', 'prompt', 'ours vs llama.cpp'], rows)}"
            f"\n\nOutputs (prompt + 32 tokens):\n\n" + "\n".join(texts) + "\n")
    write_section("convert_generate", body)


# ---------------------------------------------------------------- perplexity

def perplexity(model: Path) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([str(tool("llama-perplexity")), "-m", str(model), "-f", str(EVAL), *PPL_ARGS],
                         capture_output=True, text=True, errors="replace")
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out.stdout + out.stderr)
    if not m:
        raise RuntimeError(f"llama-perplexity on {model} failed: {(out.stdout + out.stderr)[-2000:]}")
    return float(m.group(1)), float(m.group(2)), time.perf_counter() - t0


def part_perplexity(args) -> None:
    rows = []
    for ftype in PPL_TYPES:
        mine, ref = ours(ftype), theirs(ftype)
        pa, ea, sa = perplexity(mine)
        pb, eb, sb = perplexity(ref)
        ratio = pa / pb
        rows.append([ftype, f"{pa:.4f} ± {ea:.4f}", f"{pb:.4f} ± {eb:.4f}", f"{ratio:.5f}",
                     "PASS" if ratio <= 1.005 else "FAIL", f"{sa:.0f} / {sb:.0f}"])
        print(rows[-1], flush=True)
    table = markdown_table(["type", "PPL ours", "PPL llama.cpp", "ours / llama.cpp", "≤ 1.005",
                            "seconds (ours / llama.cpp)"], rows)
    body = (f"### llama-perplexity of ggq convert's files vs llama.cpp's (SmolLM2-135M-Instruct)\n\n"
            f"`{command_line()}` (git {git_revision()}): `llama-perplexity -m F -f "
            f"text/eval.txt {' '.join(PPL_ARGS)}`, ours then llama.cpp's for each type.\n\n{table}\n")
    write_section("convert_perplexity", body)


# ---------------------------------------------------------------- timing / memory

def _sample_rss(pid: int, peaks: dict, done: threading.Event) -> None:
    while not done.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    peaks[key] = max(peaks.get(key, 0), int(rest.split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        done.wait(0.05)


def measure(cmd: list[str]) -> dict:
    """Run cmd; wall s, user+sys s, peak RSS MiB (wait4), sampled peak RssAnon/RssFile MiB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks, done = {}, threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, peaks, done), daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {err.decode(errors='replace')[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss / 1024,
            "anon": peaks.get("RssAnon", 0) / 1024, "file": peaks.get("RssFile", 0) / 1024}


def _row(label: str, m: dict) -> list[object]:
    return [label, f"{m['wall']:.1f}", f"{m['cpu']:.1f}", f"{m['maxrss']:.0f}", f"{m['anon']:.0f}",
            f"{m['file']:.0f}"]


def part_timing(args) -> None:
    tmp = OURS / "timing"
    tmp.mkdir(parents=True, exist_ok=True)
    threads = str(os.cpu_count() or 1)
    ggq_cmd = [str(GGQ), "convert", str(MODEL_DIR), "--type", "q4_k_m", "-o", str(tmp / "ggq.gguf"), "--quiet"]
    f16_cmd = [str(PYTHON), str(convert_script()), str(MODEL_DIR), "--outtype", "f16", "--outfile",
               str(tmp / "lc-f16.gguf")]
    q_cmd = [str(tool("llama-quantize")), str(tmp / "lc-f16.gguf"), str(tmp / "lc-q4km.gguf"), "q4_k_m", threads]
    rows = []
    for r in range(args.rounds):
        for p in tmp.glob("*.gguf"):
            p.unlink()
        g = measure(ggq_cmd)
        a = measure(f16_cmd)
        b = measure(q_cmd)
        both = {"wall": a["wall"] + b["wall"], "cpu": a["cpu"] + b["cpu"],
                "maxrss": max(a["maxrss"], b["maxrss"]), "anon": max(a["anon"], b["anon"]),
                "file": max(a["file"], b["file"])}
        rows += [_row(f"round {r + 1}: ggq convert --type q4_k_m", g),
                 _row(f"round {r + 1}: llama.cpp convert_hf_to_gguf.py --outtype f16", a),
                 _row(f"round {r + 1}: llama.cpp llama-quantize q4_k_m", b),
                 _row(f"round {r + 1}: llama.cpp both steps (sum / max)", both)]
        print(*rows[-4:], sep="\n", flush=True)
    for p in tmp.glob("*.gguf"):
        p.unlink()
    load = os.getloadavg()
    table = markdown_table(["run", "wall s", "user+sys s", "peak RSS MiB", "peak RssAnon MiB",
                            "peak RssFile MiB"], rows)
    body = (f"### Time and memory: ggq convert --type q4_k_m vs llama.cpp's two steps (SmolLM2-135M-Instruct)"
            f"\n\n`{command_line()}` (git {git_revision()}), {machine()}, load average after "
            f"the runs {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (machine shared with other jobs, so "
            f"wall times are noisy). Commands: `{' '.join(ggq_cmd)}`; `{' '.join(f16_cmd)}`; "
            f"`{' '.join(q_cmd)}`. Numba cache already warm for ggq. Peak RSS = ru_maxrss of the child "
            f"(wait4); RssAnon/RssFile = peaks of /proc/PID/status sampled every 50 ms.\n\n{table}\n")
    write_section("convert_timing", body)


# ---------------------------------------------------------------- big checkpoint

def _big_checkpoints(args) -> list[tuple[str, Path]]:
    """The 1.1B checkpoint in --shard-mb shards and, with --single, as one model.safetensors."""
    from bench import make_big_checkpoint as big
    script = Path(big.__file__)

    def make(out: Path, shard_mb: int) -> Path:
        # In a child process: a child's ru_maxrss starts from its parent's peak at fork time on Linux, so
        # building the 2.3 GB checkpoint in this process would inflate every later RSS reading.
        subprocess.run([sys.executable, "-P", str(script), "--out", str(out), "--shard-mb", str(shard_mb)],
                       check=True, stdout=subprocess.DEVNULL)
        return out
    out = [("sharded", make(big.OUT, args.shard_mb))]
    if args.single:
        out.append(("single file", make(big.OUT.with_name(big.OUT.name + "-single"), 10**6)))
    return out


def _ggq_big(src: Path, keep: bool) -> tuple[dict, str, list[str]]:
    from gguf import GGUFReader
    out = REF.parent / f"{src.name}-Q4_K_M.gguf"
    out.unlink(missing_ok=True)
    cmd = [str(GGQ), "convert", str(src), "--type", "q4_k_m", "-o", str(out), "--quiet"]
    m = measure(cmd)
    desc = f"{len(GGUFReader(out).tensors)} tensors, {out.stat().st_size / 2**20:.0f} MiB"
    if not keep:
        out.unlink()
    return m, desc, cmd


def _llamacpp_big(src: Path) -> list[tuple[str, dict]]:
    """convert_hf_to_gguf.py --outtype f16, then llama-quantize q4_k_m; outputs deleted."""
    f16, q = REF.parent / "big-lc-F16.gguf", REF.parent / "big-lc-Q4_K_M.gguf"
    try:
        a = measure([str(PYTHON), str(convert_script()), str(src), "--outtype", "f16", "--outfile", str(f16)])
        b = measure([str(tool("llama-quantize")), str(f16), str(q), "q4_k_m", str(os.cpu_count() or 1)])
    finally:
        f16.unlink(missing_ok=True)
        q.unlink(missing_ok=True)
    return [("convert_hf_to_gguf.py --outtype f16", a), ("llama-quantize q4_k_m", b)]


def part_big(args) -> None:
    rows, cmds, layouts = [], [], []
    for layout, src in _big_checkpoints(args):
        shards = sorted(src.glob("*.safetensors"))
        layouts.append(f"{layout}: {len(shards)} file(s), {sum(p.stat().st_size for p in shards) / 1e9:.2f} GB")
        m, desc, cmd = _ggq_big(src, args.keep)
        cmds.append(" ".join(cmd))
        rows.append(_row(f"ggq convert --type q4_k_m ({layout})", m) + [desc, "PASS" if m["maxrss"] < 1024
                                                                         else "FAIL"])
        print(rows[-1], flush=True)
        if args.with_llamacpp and layout == "sharded":
            for label, lm in _llamacpp_big(src):
                rows.append(_row(f"llama.cpp {label} ({layout})", lm) + ["", ""])
                print(rows[-1], flush=True)
    table = markdown_table(["run", "wall s", "user+sys s", "peak RSS MiB", "peak RssAnon MiB",
                            "peak RssFile MiB", "output", "< 1 GiB RSS"], rows)
    load = os.getloadavg()
    body = (f"### ggq convert of a 1.1B checkpoint to q4_k_m: time and peak memory\n\n"
            f"`{command_line()}` (git {git_revision()}), {machine()}, load average after the runs "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. Checkpoint: `bench/make_big_checkpoint.py` — "
            f"TinyLlama-1.1B shape (hidden 2048, n_ff 5632, 22 layers, 32 heads, 4 KV heads, untied output) "
            f"but vocab 49152 (SmolLM2's tokenizer reused instead of a 32000-token one): 1.170 B parameters, "
            f"random bf16; {'; '.join(layouts)}. Commands: " + "; ".join(f"`{c}`" for c in cmds) +
            f". Peak RSS = ru_maxrss (wait4), which counts the mmapped checkpoint pages the process touched; "
            f"RssAnon/RssFile peaks sampled from /proc every 50 ms. Acceptance: ggq's peak RSS under 1 GiB."
            f"\n\n{table}\n")
    write_section("convert_big", body)
    print(table)


PARTS = {"tables": part_tables, "generate": part_generate, "perplexity": part_perplexity,
         "timing": part_timing, "big": part_big}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds (interleaved)")
    ap.add_argument("--shard-mb", type=int, default=1000, help="shard size of the big checkpoint")
    ap.add_argument("--keep", action="store_true", help="keep the big checkpoint's GGUF")
    ap.add_argument("--single", action="store_true", help="big: also a single-file copy of the checkpoint")
    ap.add_argument("--with-llamacpp", action="store_true",
                    help="big: also time llama.cpp's two steps on the sharded checkpoint")
    args = ap.parse_args(argv)
    for name in args.parts.split(","):
        PARTS[name.strip()](args)


if __name__ == "__main__":
    main()
