#!/usr/bin/env bash
# The integer-dot tests on aarch64, emulated by qemu-user on an x86-64 host (no ARM machine here).
#
#   bench/arm_emulated.sh setup            build the sysroot and site-packages (idempotent)
#   bench/arm_emulated.sh test [ARGS...]   pytest ARGS (default: tests/test_runtime_dot.py) under emulation,
#                                          once with the sdot form and once with GGQ_NO_SDOT=1 (generic IR);
#                                          checks that the sdot form's machine code has sdot
#   bench/arm_emulated.sh python [ARGS...] the emulated python3.11, for anything else
#   (no argument: setup, then test)
#
# Everything is cached under ~/.cache/ggq-arm64 ($GGQ_ARM_CACHE), never in the repository: Debian's
# arm64 python3.11 debs unpacked with `dpkg -x` (the host's packages are left alone; only the arm64
# architecture is added to dpkg so that `apt-get download` finds them), aarch64 wheels installed with
# the host's pip (--target, --platform), a private Numba cache. Needs root for apt (qemu-user-static).
# Emulation checks results only: it says nothing about speed on ARM hardware.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${GGQ_ARM_CACHE:-$HOME/.cache/ggq-arm64}
ROOT=$CACHE/sysroot
SITE=$CACHE/site-packages
PY=$ROOT/usr/bin/python3.11
HOST_PY=${HOST_PY:-python3}
[ -x "$REPO/.venv/bin/python" ] && HOST_PY=$REPO/.venv/bin/python

# Debian arm64 packages that python3.11 and the wheels' shared objects need (bookworm names).
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3
libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libgcc-s1 libstdc++6 libgomp1
libdb5.3 libnsl2 libtirpc3 libcrypt1 libzstd1 libgssapi-krb5-2 libkrb5-3 libk5crypto3
libkrb5support0 libcom-err2 libkeyutils1 media-types"

# The repository's runtime dependencies (pyproject.toml) plus pytest, for aarch64 / CPython 3.11.
WHEELS="numpy numba llvmlite gguf sentencepiece safetensors huggingface-hub jinja2 tqdm pyyaml pytest"

setup_qemu() {
    command -v qemu-aarch64-static >/dev/null && return
    apt-get install -y qemu-user-static
}

setup_sysroot() {
    [ -x "$PY" ] && return
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update; }
    mkdir -p "$CACHE/debs" "$ROOT"
    (cd "$CACHE/debs" && for p in $DEBS; do compgen -G "${p}_*.deb" >/dev/null \
        || apt-get download "$p:$( [ "$p" = media-types ] && echo all || echo arm64 )"; done)
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
    # the dynamic loader is found as /lib/ld-linux-aarch64.so.1 inside the -L prefix
    [ -e "$ROOT/lib" ] || ln -s usr/lib "$ROOT/lib"
}

setup_site() {
    [ -f "$SITE/.done" ] && return
    # Same versions as the dev venv where it has them, so both sides run the same numba/llvmlite.
    local constraints=$CACHE/constraints.txt
    "$HOST_PY" -m pip freeze 2>/dev/null | grep '==' >"$constraints" || true
    "$HOST_PY" -m pip install --quiet --target "$SITE" --only-binary=:all: --python-version 3.11 \
        --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_28_aarch64 -c "$constraints" $WHEELS
    # ggq from this working tree, as the host's editable install maps it (ggq.runtime lives in runtime/)
    cat >"$SITE/sitecustomize.py" <<EOF
import sys
from importlib.util import spec_from_file_location

_TREE = {"ggq": "$REPO/ggq", "ggq.convert": "$REPO/convert", "ggq.runtime": "$REPO/runtime"}


class _GgqTree:
    @staticmethod
    def find_spec(name, path=None, target=None):
        where = _TREE.get(name)
        return where and spec_from_file_location(name, where + "/__init__.py", submodule_search_locations=[where])


sys.meta_path.insert(0, _GgqTree)
EOF
    touch "$SITE/.done"
}

emulated() {
    # Under qemu-user LLVM reads the x86 host's /proc/cpuinfo and detects a "generic" aarch64 CPU, so
    # Numba is told the CPU to compile for: apple-m1 (ARMv8.5 with dotprod; qemu's default CPU model,
    # max, implements all of it). The Numba cache is private, one directory per form (GGQ_NO_SDOT is
    # not part of Numba's cache key), and the host's cache (x86 entries) is never touched.
    local form=sdot
    [ -n "${GGQ_NO_SDOT:-}" ] && form=generic
    env PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 NUMBA_CACHE_DIR="$CACHE/numba-$form" HF_HUB_OFFLINE=1 \
        NUMBA_CPU_NAME="${NUMBA_CPU_NAME:-apple-m1}" qemu-aarch64-static -L "$ROOT" "$PY" "$@"
}

run_tests() {
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(tests/test_runtime_dot.py)
    cd "$REPO"
    echo "== sdot form"
    emulated -c 'import platform; from ggq.runtime.kernels import vecir_isa as i
print(platform.machine(), i.describe()); assert i.HAVE_SDOT'
    emulated -m pytest -p no:cacheprovider -x "${args[@]}"
    echo "== aarch64 machine code of dot_legacy.matvec_q4_0 (sdot form): sdot instructions"
    emulated -c 'import os, tempfile; os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()  # cached code has no asm
from ggq.runtime.kernels import dot_legacy as d
f = d.matvec_q4_0; f.compile("(uint8[:, ::1], uint8[::1], float32[::1])")
sdot = [line.strip() for a in f.inspect_asm().values() for line in a.splitlines() if "sdot" in line]
print(len(sdot), "sdot instructions, e.g.", sdot[:3]); assert sdot'
    echo "== generic IR (GGQ_NO_SDOT=1)"
    GGQ_NO_SDOT=1 emulated -c 'import platform; from ggq.runtime.kernels import vecir_isa as i
print(platform.machine(), i.describe()); assert not i.HAVE_SDOT'
    GGQ_NO_SDOT=1 emulated -m pytest -p no:cacheprovider -x "${args[@]}"
}

case "${1:-all}" in
    setup) setup_qemu; setup_sysroot; setup_site ;;
    test) shift; run_tests "$@" ;;
    python) shift; cd "$REPO"; emulated "$@" ;;
    all) setup_qemu; setup_sysroot; setup_site; run_tests ;;
    *) echo "usage: $0 [setup|test [pytest args]|python [args]]" >&2; exit 2 ;;
esac
