"""tg128 of the CUDA backend under several settings, in one process on the GPU machine (no llama.cpp):
a quick A/B of kernel choices before the full comparison (bench/cuda_vs_llamacpp.sh).

    python3 -P bench/cuda_variants.py FILE.gguf ... [--variants int,float,int-persm2]

Variants: int (default: int8 activations with dp4a), float (GGQ_CUDA_INT=0), and -persmN (GGQ_CUDA_PER_SM=N
matvec blocks an SM). Prints one JSON line per file and variant; a variant that fails prints its error.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

VARIANTS = {"int": {"GGQ_CUDA_INT": "1", "GGQ_CUDA_PER_SM": "4"},
            "float": {"GGQ_CUDA_INT": "0", "GGQ_CUDA_PER_SM": "4"},
            "int-persm2": {"GGQ_CUDA_INT": "1", "GGQ_CUDA_PER_SM": "2"},
            "int-persm8": {"GGQ_CUDA_INT": "1", "GGQ_CUDA_PER_SM": "8"}}


def main() -> None:
    args = sys.argv[1:]
    names = list(VARIANTS)
    if "--variants" in args:
        i = args.index("--variants")
        names, args = args[i + 1].split(","), args[:i] + args[i + 2:]
    from ggq.runtime.bench import bench
    failed = set()
    for path in args:
        for name in names:
            if name in failed:
                continue
            os.environ.update(VARIANTS[name])
            try:
                r = bench(path, 0, 128, repetitions=3, device="cuda")
                tg = next(s for s in r.speeds if s.test == "tg128")
                print(json.dumps({"config": os.environ.get("GGQ_TAG", ""), "file": os.path.basename(path),
                                  "variant": name, "tg128": round(tg.tokens_per_s, 1),
                                  "std": round(tg.stddev, 1), "launches": r.launches_per_token}), flush=True)
            except Exception:  # noqa: BLE001 - report and go on with the other variants
                failed.add(name)
                print(json.dumps({"file": os.path.basename(path), "variant": name,
                                  "error": traceback.format_exc()[-3000:]}), flush=True)


if __name__ == "__main__":
    main()
