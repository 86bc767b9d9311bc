"""ggq's CUDA backend against llama.cpp's CUDA build, in one call on the GPU machine.

    bash bench/cuda_vs_llamacpp.sh            # on the GPU machine (see the .sh for what it carries)
    python -P bench/cuda_vs_llamacpp.py report SPEED.json CORRECTNESS.json MACHINE COMMAND   # here: RESULTS.md
    python -P bench/cuda_vs_llamacpp.py head       # here, before a device call: .gpu/head (see head_files)

`run` (on the GPU machine): builds llama-bench with -DGGML_CUDA=ON from a trimmed copy of the
llama-cpp-python sdist's llama.cpp (in the background, while ggq's kernels compile and its tiny-model
checks run); rebuilds each benchmark file from its header (bench/cuda_files.py) with zero data; runs
ggq bench --device cuda and llama-bench -ngl 99 on each file, interleaved, in rounds; writes JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = Path("/tmp/llama.cpp-cuda")
DEADLINE_S = int(os.environ.get("GGQ_CUDA_DEADLINE_S", 420))   # no new round after this (10-minute calls)
PREBUILT = REPO / ".gpu" / "llama-bench.xz"   # split in parts (.xz.00, .01, ...): $OUT files are at most 16 MiB
CMAKE = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DLLAMA_CURL=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=OFF"]


def start_build(tarball: Path, log: Path) -> subprocess.Popen:
    BUILD.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(BUILD, filter="data")
    src, out = BUILD / "llama.cpp", BUILD / "build"
    jobs = str(os.cpu_count() or 8)
    script = (f"cmake -S {src} -B {out} {' '.join(CMAKE)} && "
              f"cmake --build {out} --config Release -j {jobs} --target llama-bench")
    return subprocess.Popen(["bash", "-c", script], stdout=open(log, "w"), stderr=subprocess.STDOUT)


def prebuilt_binary(log: Path) -> subprocess.Popen | None:
    """The llama-bench an earlier call built (saved by save_binary), unpacked instead of a 5-minute build."""
    parts = sorted(PREBUILT.parent.glob(PREBUILT.name + ".*"))
    if not parts:
        return None
    out = BUILD / "build" / "bin"
    out.mkdir(parents=True, exist_ok=True)
    script = f"cat {' '.join(map(str, parts))} | xz -d > {out / 'llama-bench'} && chmod +x {out / 'llama-bench'}"
    return subprocess.Popen(["bash", "-c", script], stdout=open(log, "w"), stderr=subprocess.STDOUT)


def save_binary(binary: Path, out: Path) -> None:
    """llama-bench, xz-compressed and split in 15 MiB parts for the next call's .gpu/."""
    subprocess.run(f"xz -T0 -6 -c {binary} | split -b 15M -d - {out / 'llama-bench.xz.'}", shell=True)


def zero_files(headers: Path, folder: Path) -> list[Path]:
    """Each NAME.head + NAME.json as NAME.gguf: the header, then zeros up to the file's size (sparse)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for head in sorted(headers.glob("*.head")):
        size = json.loads(head.with_suffix(".json").read_text())["size"]
        path = folder / f"{head.stem}.gguf"
        with open(path, "wb") as f:
            f.write(head.read_bytes())
            f.truncate(size)
        files.append(path)
    return files


def tiny_models() -> dict:
    """The runtime tests' tiny llama/qwen2/gemma3 models on the GPU against their float64 oracle."""
    sys.path.insert(0, str(REPO / "tests"))
    import tempfile

    import numpy as np
    from test_runtime_model import CONFIGS, run_against_oracle
    out = {}
    for arch in CONFIGS:
        got, expected = run_against_oracle(arch, Path(tempfile.mkdtemp()), device="cuda")
        out[arch] = float(np.abs(got - expected).max() / np.abs(expected).max())
    return out


def ggq_bench(path: Path, reps: int) -> dict:
    from ggq.runtime.bench import bench
    r = bench(str(path), 512, 128, repetitions=reps, device="cuda")
    speeds = {s.test: (s.tokens_per_s, s.stddev) for s in r.speeds}
    return {"pp512": speeds["pp512"], "tg128": speeds["tg128"], "launches_per_token": r.launches_per_token,
            "python_launches_per_token": r.python_launches_per_token, "graph_note": r.graph_note,
            "load_s": r.load_s}


def llama_bench(binary: Path, path: Path, reps: int) -> dict:
    cmd = [str(binary), "-m", str(path), "-ngl", "99", "-p", "512", "-n", "128", "-r", str(reps), "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        return {"error": done.stderr[-2000:]}
    rows = json.loads(done.stdout)
    out = {}
    for row in rows:
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        out[name] = (row["avg_ts"], row["stddev_ts"])
    out["build"] = rows[0].get("build_commit", "")
    out["gpu"] = rows[0].get("gpu_info", "")
    return out


def run(out: Path, rounds: int = int(os.environ.get("GGQ_CUDA_ROUNDS", 2)),
        reps: int = int(os.environ.get("GGQ_CUDA_REPS", 5))) -> None:
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": []}
    built_before = prebuilt_binary(out / "build.log")
    build = built_before or start_build(REPO / ".gpu" / "llama.cpp.tar.xz", out / "build.log")
    files = zero_files(REPO / ".gpu" / "files", Path("/tmp/ggq-bench-files"))
    try:
        result["tiny_models_rel_err"] = tiny_models() if os.environ.get("GGQ_CUDA_TINY", "1") == "1" else "not run"
    except Exception as e:  # noqa: BLE001 - record and go on to the speed runs
        result["tiny_models_rel_err"] = f"{type(e).__name__}: {e}"
    print("tiny:", result["tiny_models_rel_err"], flush=True)
    ggq_bench(files[0], 1)                               # compile every kernel once, untimed
    build_rc = build.wait()
    binary = BUILD / "build" / "bin" / "llama-bench"
    result["llama_build_rc"] = build_rc
    for _ in range(rounds):
        row = {}
        for f in files:
            row[f.stem] = {"ggq": ggq_bench(f, reps)}
            if build_rc == 0:
                row[f.stem]["llama.cpp"] = llama_bench(binary, f, reps)
            print(f.stem, json.dumps(row[f.stem]), flush=True)
            (out / "cuda_vs_llamacpp.json").write_text(json.dumps(result | {"partial": row}, indent=1))
        result["rounds"].append(row)
        (out / "cuda_vs_llamacpp.json").write_text(json.dumps(result, indent=1))
        if time.monotonic() - start > DEADLINE_S:
            break
    if build_rc == 0 and built_before is None:
        save_binary(binary, out)


OWN = ("runtime/cuda/", "bench/cuda_", "tests/test_cuda_kernels.py", "bench/RESULTS.md")


def head_files(folder: Path = REPO / ".gpu" / "head") -> None:
    """The committed version of every file edited in this checkout outside the CUDA backend's own, into
    .gpu/head/, so that the GPU machine (its command starting with `cp -r .gpu/head/. .`) measures HEAD plus
    runtime/cuda rather than someone's half-made edits of other code in the same checkout."""
    import shutil
    shutil.rmtree(folder, ignore_errors=True)
    changed = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in changed:
        if name.startswith(OWN):
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"HEAD:{name}"], cwd=REPO, capture_output=True,
                                          check=True).stdout)
        print(target)


def _ratio_rows(result: dict, label: str = "") -> list[str]:
    rows = ["| file | round | ggq pp512 | llama.cpp pp512 | ratio | ggq tg128 | llama.cpp tg128 | ratio | kernels/token |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, rnd in enumerate(result["rounds"], 1):
        i = label or i
        for name, r in rnd.items():
            g, l = r["ggq"], r.get("llama.cpp", {})
            cells = [name, str(i)]
            for test in ("pp512", "tg128"):
                ours, theirs = g[test], l.get(test)
                cells += [f"{ours[0]:,.0f} ± {ours[1]:,.0f}", f"{theirs[0]:,.0f} ± {theirs[1]:,.0f}" if theirs else "-",
                          f"{ours[0] / theirs[0]:.2f}" if theirs else "-"]
            cells.append(f"{g['launches_per_token']} ({'one graph' if g['python_launches_per_token'] == 1 else 'no graph'})")
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def report(speed_json: Path, correctness_json: Path | None, machine: str, command: str, notes: Path | None = None,
           path: Path | None = None) -> None:
    """bench/RESULTS.md's cuda_vs_llamacpp section from run's JSON (and cuda_correctness compare's).
    speed_json may name several runs as LABEL=PATH,LABEL=PATH (one table, rounds labelled; the last run's
    tiny-model figures are reported)."""
    sys.path.append(str(REPO / "bench"))
    from results import RESULTS, write_section
    path = path or RESULTS
    runs = [part.split("=", 1) if "=" in part else ("", part) for part in str(speed_json).split(",")]
    results = [(label, json.loads(Path(run).read_text())) for label, run in runs]
    result = results[-1][1]
    lines = ["## CUDA backend vs llama.cpp's CUDA build (bench/cuda_vs_llamacpp.sh)", "",
             f"Machine: {machine}. Command: `{command}`. Both sides on the same files in the same call, "
             "interleaved file by file; files are real GGUF headers with zero data (bench/cuda_files.py); "
             "llama-bench -ngl 99 -p 512 -n 128 (llama-cpp-python 0.3.36 sdist, -DGGML_CUDA=ON, sm_90); "
             "ggq bench --device cuda -p 512 -n 128 (tg: device argmax, one token id back per step); "
             "-r 5 unless the notes say otherwise.", ""]
    table = [_ratio_rows(r, label) for label, r in results]
    lines += table[0] + [row for t in table[1:] for row in t[2:]]
    tiny = next((r["tiny_models_rel_err"] for _, r in reversed(results)
                 if isinstance(r.get("tiny_models_rel_err"), dict)), None)
    lines += ["", f"Tiny llama/qwen2/gemma3 models (tests/test_runtime_model.py) on the GPU against the float64 "
              f"oracle, max |error| / max |logit|: {tiny}."]
    if correctness_json and correctness_json.is_file():
        lines += ["", "Correctness on the shared model's real files (bench/cuda_correctness.py; CPU runtime with "
                  "exact=True as reference; 5 prompts; greedy 64 tokens; perplexity of eval.txt, n_ctx 512, all "
                  "chunks):", "", "| file | max logit diff | greedy identical | PPL cuda | PPL cpu | rel diff |",
                  "|---|---|---|---|---|---|"]
        for name, r in json.loads(correctness_json.read_text()).items():
            lines.append(f"| {name} | {r['max_logit_diff']:.2e} | {r['greedy_identical']}/5 | {r['ppl_cuda']:.4f} | "
                         f"{r['ppl_cpu']:.4f} | {r['ppl_rel_diff']:.2e} |")
    if notes and notes.is_file():
        lines += ["", notes.read_text().strip()]
    write_section("cuda_vs_llamacpp", "\n".join(lines), path)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif sys.argv[1] == "head":
        head_files()
    else:                  # report SPEED_JSON[,LABEL=JSON...] CORRECTNESS_JSON MACHINE COMMAND NOTES_MD [RESULTS_MD]
        report(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5], Path(sys.argv[6]),
               Path(sys.argv[7]) if len(sys.argv) > 7 else None)
