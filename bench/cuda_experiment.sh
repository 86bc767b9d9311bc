#!/usr/bin/env bash
# One device call of A/B work (device tool; carry .gpu/files, .gpu/llama-bench.xz.*, .whl, .gpu/head):
# install, zero-data files, bench/cuda_variants.py once per process-level configuration (GGQ_CONFIGS:
# "TAG:VAR=V VAR=V;TAG:..."), then the full comparison (bench/cuda_vs_llamacpp.py run, 1 round) under the
# configuration with the best geometric-mean tg128. Everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from cuda_vs_llamacpp import zero_files; zero_files(Path('.gpu/files'), Path('/tmp/ggq-bench-files'))"
F=/tmp/ggq-bench-files
IFS=';' read -ra CONFIGS <<< "${GGQ_CONFIGS:-base:}"
for c in "${CONFIGS[@]}"; do
  tag=${c%%:*}; vars=${c#*:}
  env GGQ_TAG=$tag $vars timeout 150 python3 -P bench/cuda_variants.py $F/smol.q4_k_m.gguf $F/big-1.1b.q4_k_m.gguf \
    $F/smol.q8_0.gguf $F/big-1.1b.q8_0.gguf --variants int 2>&1 | grep '^{' | tee -a $OUT/variants.log
done
best=$(python3 - "$OUT/variants.log" "${GGQ_CONFIGS:-base:}" <<'PY'
import json, math, sys, collections
tg = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "tg128" in r:
        tg[r["config"]].append(math.log(r["tg128"]))
configs = dict(c.split(":", 1) for c in sys.argv[2].split(";"))
full = {k: v for k, v in tg.items() if len(v) == 4}
print(configs[max(full, key=lambda k: sum(full[k]))] if full else "")
PY
)
echo "best configuration: '$best'" | tee $OUT/best.txt
env $best GGQ_CUDA_ROUNDS=1 GGQ_CUDA_REPS=${GGQ_CUDA_REPS:-3} timeout ${GGQ_MAIN_S:-240} python3 -P bench/cuda_vs_llamacpp.py run $OUT 2>&1 | grep -v -i warn | tee $OUT/main.log
