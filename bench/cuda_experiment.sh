#!/usr/bin/env bash
# One device call of A/B work (device tool; carry .gpu/files, .gpu/llama-bench.xz.*, .whl):
# install, zero-data files, bench/cuda_variants.py on each file, the full comparison
# (bench/cuda_vs_llamacpp.py run, 1 round), then ncu per-kernel times of one token at position 64.
# Everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from cuda_vs_llamacpp import zero_files; print(zero_files(Path('.gpu/files'), Path('/tmp/ggq-bench-files')))"
F=/tmp/ggq-bench-files
timeout 200 python3 -P bench/cuda_variants.py $F/smol.q4_k_m.gguf $F/big-1.1b.q4_k_m.gguf $F/smol.q8_0.gguf $F/big-1.1b.q8_0.gguf \
  --variants "${GGQ_VARIANTS:-int,float,int-persm2}" 2>&1 | tee $OUT/variants.log
if grep -q '"variant": "int", "error"' $OUT/variants.log; then export GGQ_CUDA_INT=0; fi
GGQ_CUDA_ROUNDS=1 GGQ_CUDA_REPS=${GGQ_CUDA_REPS:-3} timeout ${GGQ_MAIN_S:-240} python3 -P bench/cuda_vs_llamacpp.py run $OUT 2>&1 | tee $OUT/main.log
for f in ${GGQ_NCU:-smol.q4_k_m big-1.1b.q4_k_m}; do
  timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv python3 -P bench/cuda_profile.py $F/$f.gguf 1 64 > $OUT/ncu_$f.csv 2>$OUT/ncu_$f.err
done
ls -la $OUT
