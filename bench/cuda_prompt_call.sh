#!/usr/bin/env bash
# One device call for the prompt path (device tool; carry .gpu, .whl): install, rebuild the zero-data files,
# llama-bench built in the background (or unpacked from .gpu/llama-bench.xz.*; a fresh build is saved to
# $OUT for the next call), bench/cuda_prompt_profile.py on each file while it builds (both prompt paths; then its check), then ggq bench and llama-bench
# -p 512 -n 128 -r 3 on each file (interleaved), and GGQ_CALL_EXTRA (a command) last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
[ -d .gpu/head ] && cp -r .gpu/head/. .      # committed versions of files others are editing here (cuda_vs_llamacpp.py head)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - "$OUT" <<'PY'
import sys; sys.path.insert(0, "bench")
from pathlib import Path
import cuda_vs_llamacpp as c
out = Path(sys.argv[1])
b = c.prebuilt_binary(out / "build.log") or c.start_build(c.REPO / ".gpu" / "llama.cpp.tar.xz", out / "build.log")
open("/tmp/build.pid", "w").write(str(b.pid))
c.zero_files(c.REPO / ".gpu" / "files", Path("/tmp/ggq-bench-files"))
PY
F=/tmp/ggq-bench-files
date -u +%H:%M:%S
timeout ${GGQ_PROFILE_S:-300} python3 -P bench/cuda_prompt_profile.py $F/smol.q4_k_m.gguf $F/smol.q8_0.gguf $F/big-1.1b.q4_k_m.gguf $F/big-1.1b.q8_0.gguf 2>&1 | grep -v -i warn | tee $OUT/profile.log
date -u +%H:%M:%S
timeout ${GGQ_CHECK_S:-120} python3 -P bench/cuda_prompt_profile.py check $F/smol.q4_k_m.gguf $F/smol.q8_0.gguf 2>&1 | grep -v -i warn | tee $OUT/check.log
date -u +%H:%M:%S
B=/tmp/llama.cpp-cuda/build/bin/llama-bench
while kill -0 $(cat /tmp/build.pid) 2>/dev/null; do sleep 2; done
tail -3 $OUT/build.log
if [ ! -e .gpu/llama-bench.xz.00 ] && [ -x $B ]; then xz -T0 -6 -c $B | split -b 15M -d - $OUT/llama-bench.xz.; fi
python3 - "$B" "$OUT" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from pathlib import Path
import cuda_vs_llamacpp as c
binary, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("smol.q4_k_m", "smol.q8_0", "big-1.1b.q4_k_m", "big-1.1b.q8_0"):
    f = Path("/tmp/ggq-bench-files") / f"{name}.gguf"
    try:
        ours = c.ggq_bench(f, 3)
    except Exception as e:  # noqa: BLE001 - record it and still measure llama.cpp
        ours = f"{type(e).__name__}: {e}"
    row = {"file": name, "ggq": ours, "llama.cpp": c.llama_bench(binary, f, 3) if binary.exists() else None}
    print(json.dumps(row), flush=True)
    with open(out / "bench.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
PY
date -u +%H:%M:%S
if [ -n "${GGQ_CALL_EXTRA:-}" ]; then bash -c "$GGQ_CALL_EXTRA" 2>&1 | grep -v -i warn | tee $OUT/extra.log; fi
