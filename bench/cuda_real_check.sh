#!/usr/bin/env bash
# bench/cuda_correctness.py's GPU figures on the shared model's real files, on the GPU machine (device tool).
# The files exceed one call's 64 MiB: bench/cuda_real_files.py pack cuts them into parts here; calls before
# this one each carry some of them and copy them to $GGQ_XFER (default /root/xfer, kept while the machine
# stays warm); this one carries the rest (and .whl), copies them there too and runs:
#   GGQ_XFER_NEW=.gpu/xfer/c4 bash bench/cuda_real_check.sh     # -> $OUT/*.cuda.npz, then compare here
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
XFER=${GGQ_XFER:-/root/xfer}
mkdir -p "$XFER"
[ -n "${GGQ_XFER_NEW:-}" ] && cp -r "$GGQ_XFER_NEW"/. "$XFER"/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -P bench/cuda_real_files.py unpack "$XFER" /root/real
mkdir -p /root/real/ref && cp "$XFER"/eval.txt /root/real/ref/
python3 -P bench/cuda_correctness.py figures /root/real/ref /root/real/smol.q4_k_m.gguf /root/real/smol.q8_0.gguf \
    --path "${GGQ_CHECK_PATH:-both}"
cp /root/real/ref/*.cuda.npz "$OUT"/
