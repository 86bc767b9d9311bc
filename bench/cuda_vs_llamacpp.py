"""ggq's CUDA backend against llama.cpp's CUDA build, in one call on the GPU machine.

    bash bench/cuda_vs_llamacpp.sh            # on the GPU machine (see the .sh for what it carries)
    python -P bench/cuda_vs_llamacpp.py report RESULTS.json   # here: writes bench/RESULTS.md's section

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
DEADLINE_S = 420                 # no new round after this: one device command may run 10 minutes
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


def run(out: Path, rounds: int = 2, reps: int = 5) -> None:
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": []}
    build = start_build(REPO / ".gpu" / "llama.cpp.tar.xz", out / "build.log")
    files = zero_files(REPO / ".gpu" / "files", Path("/tmp/ggq-bench-files"))
    try:
        result["tiny_models_rel_err"] = tiny_models()
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
    if build_rc == 0:
        subprocess.run(f"xz -T0 -6 -c {binary} > {out / 'llama-bench.xz'}", shell=True)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    else:
        from cuda_report import report  # noqa: E402  (bench/cuda_report.py)
        report(Path(sys.argv[2]))
