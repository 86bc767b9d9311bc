#!/usr/bin/env bash
# bench/cuda_ab.py in one device call (device tool; carry .gpu/files, .gpu/llama-bench.xz.00 .01 .02, .whl,
# .gpu/base, .gpu/head). Versions: new = this checkout's runtime/cuda; head = .gpu/base/runtime/cuda (the
# committed code an A/B starts from: `git archive COMMIT runtime/cuda | tar -x -C .gpu/base`); quant = head
# with this checkout's matvec.py and matvec_int.py (when those two files alone make a step of their own);
# GGQ_AB_PARTS="NAME=FILE:FILE ..." makes other such partial versions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
[ -d .gpu/head ] && cp -r .gpu/head/. .
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
CUDA=ggq/runtime/cuda
cp -r /tmp/site /tmp/site_head && rm -rf /tmp/site_head/$CUDA && cp -r .gpu/base/runtime/cuda /tmp/site_head/$CUDA
# partial versions: NAME=FILE:FILE... = head with this checkout's runtime/cuda/FILEs (/tmp/site_NAME)
for spec in ${GGQ_AB_PARTS:-quant=matvec.py:matvec_int.py}; do
    name=${spec%%=*}
    cp -r /tmp/site_head /tmp/site_$name
    for f in $(echo "${spec#*=}" | tr ':' ' '); do cp runtime/cuda/$f /tmp/site_$name/$CUDA/; done
done
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep "Model name" || true
python3 -c "import numba, numba_cuda; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)" || true
export GGQ_AB_VERSIONS=${GGQ_AB_VERSIONS:-new=/tmp/site,head=/tmp/site_head,quant=/tmp/site_quant}
python3 -P bench/cuda_ab.py drive "$OUT"
