#!/usr/bin/env bash
# The whole GPU comparison in one call on the GPU machine (device tool: carry .gpu and .whl):
#   .gpu/llama.cpp.tar.xz   trimmed llama.cpp source of the llama-cpp-python sdist (see bench/README.md)
#   .gpu/files/*.head/json  benchmark file headers (bench/cuda_files.py)
#   .whl/gguf-*.whl         the one package ggq needs that the GPU image lacks
# Results go to $OUT (cuda_vs_llamacpp.json, logs); bench/cuda_vs_llamacpp.py report writes RESULTS.md here.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep "Model name" || true
python3 -c "import numba, numba_cuda; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)" || true
python3 -P bench/cuda_vs_llamacpp.py run "${OUT:-/tmp/out}"
