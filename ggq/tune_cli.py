"""`ggq tune MODEL` and `ggq tune --show`: the decode kernel shapes measured on this machine
(runtime/tune.py), in the CLI's (name, help, add-arguments, run) form."""
from __future__ import annotations

import argparse

from ggq import blas_core
from ggq.errors import GGQError


def tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a .gguf model whose matrices to tune")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--force", action="store_true", help="measure again, replacing cached choices")
    p.add_argument("--show", action="store_true", help="print the cached choices for this CPU and exit")


def tune(args: argparse.Namespace) -> int:
    from ggq.runtime import tune as tuning
    if args.show:
        _print_header(tuning)
        _print_blas(blas_core.cached_choice())
        for threads, choices in sorted(tuning.cached_section().items()):
            print(f"{threads} thread(s):")
            print(tuning.format_choices(choices))
        return 0
    if not args.model:
        raise GGQError("tune: give a model, or --show")
    from ggq.runtime.api import set_threads
    from ggq.runtime.decode import DecodeStep
    from ggq.runtime.model import open_model
    threads = set_threads(args.threads)
    tf = open_model(args.model, ctx_size=16)  # a bad file is one ggq: line, before anything is printed
    _print_header(tuning)
    try:
        step = DecodeStep(tf, exact=False)  # not tf.compiled_step(): that tunes quietly on first use
        choices = tuning.tune(step, threads, force=args.force, progress=lambda key: print(f"  timing {key}"))
        blas = blas_core.tune((512, tf.params.n_embd, tf.params.n_ff), force=args.force)
    finally:
        tf.gguf.close()
    _print_blas(blas)
    print(f"{threads} thread(s):")
    print(tuning.format_choices(choices) if choices else "  nothing to tune (GGQ_TUNE=0)")
    return 0


def _print_header(tuning) -> None:
    from ggq.runtime.kernels.vecir_tile import describe
    print(f"CPU: {tuning.cpu_id()}")
    print(f"prompt kernels (chosen by the CPU's vector width, not timed): {describe()}")
    print(f"cache: {tuning.cache_path()}{'' if tuning.enabled() else '  (GGQ_TUNE=0: tuning is off)'}")


def _print_blas(record: dict | None) -> None:
    """The prompt path's OpenBLAS kernel set: the cached choice, and whether this process runs it."""
    import os
    if not record:
        print("OpenBLAS kernels: not measured on this CPU")
        return
    times = "  ".join(f"{core}: {g} GFLOP/s" for core, g in record["gflops"].items())
    running = os.environ.get("OPENBLAS_CORETYPE", "auto")
    print(f"OpenBLAS kernels (--exact prompt matmuls): {record['core'] or 'auto'} (1 thread: {times}; this process: "
          f"{running})")
    if running != (record["core"] or "auto") and os.environ.get("OPENBLAS_CORETYPE") is not None:
        print("  OPENBLAS_CORETYPE is set in the environment, and a value the user set wins: unset it for the "
              "measured choice")
