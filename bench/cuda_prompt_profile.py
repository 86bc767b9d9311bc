"""Where a 512-token prompt's time goes on the GPU: every launch of the prompt path timed on its own with
CUDA events, summed by kind (matmul by matrix: qkv, wo, gate_up, down, output), then the whole pass timed
as ggq bench times it (as one captured graph, and launched kernel by kernel); for each of CONFIGS (the
old path: float tiles and attention.attend; int8 matmul tiles; attention_tiles; both, with each token
tile).
`check`: logits of a 200-token prompt (every position) on random-block copies of the files (bench/cuda_ab.py's
fill_random) of float tiles + attention_tiles and of int8 tiles + attention_tiles, against the old path
(float tiles, attention.attend: the one checked against the CPU runtime in bench/RESULTS.md).

    python3 -P bench/cuda_prompt_profile.py FILE.gguf [FILE.gguf ...]        # on the GPU machine; JSON lines
    python3 -P bench/cuda_prompt_profile.py check FILE.gguf [FILE.gguf ...]
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict

import numpy as np

N = 512
# (int8 matmul tiles, tiled attention, matmul_int tokens a thread): the old path first, the default last
CONFIGS = ((False, False, "auto"), (True, False, "auto"), (False, True, "auto"), (True, True, "8"),
           (True, True, "4"), (True, True, "auto"))


def _name(backend, launch) -> str:
    name = getattr(launch.kernel, "__name__", None) or getattr(getattr(launch.kernel, "py_func", None),
                                                                "__name__", "?")
    if "matmul" in name or "mm_" in name:
        table = launch.args[0]
        w = backend.w
        for label, mats in (("qkv", w.qkv), ("wo", w.wo), ("gate_up", w.gate_up), ("down", w.down),
                            ("output", [w.output])):
            if any(table is getattr(m, attr, None) for m in mats for attr in ("matmul", "matvec", "mmq")):
                return f"{name}:{label}"
    return name


def profile(path: str, reps: int = 3) -> list[dict]:
    from ggq.runtime.model import open_model
    tf = open_model(path, ctx_size=N + 1, device="cuda")
    ids = np.random.default_rng(0).integers(0, tf.params.n_vocab, N).astype(np.int64)
    out = []
    for prompt_int, att_tiles, mm_tokens in CONFIGS:
        tf.backend.prompt_int = prompt_int and tf.backend.int_dots
        tf.backend.att_tiles, tf.backend.mm_tokens = att_tiles, mm_tokens
        out.append({"prompt_int": tf.backend.prompt_int, "att_tiles": att_tiles, "mm_tokens": mm_tokens}
                   | _profile_path(tf, ids, path, reps))
    return out


def _profile_path(tf, ids, path: str, reps: int) -> dict:
    from numba import cuda
    backend = tf.backend
    tf.forward(ids, 0)                                       # compile
    stream = backend.replay.stream
    backend.b.ids[:N].copy_to_device(ids, stream=stream)
    launches = backend._prompt_launches(N) + backend._logit_launches(N, False)
    times: dict = defaultdict(float)
    for _ in range(reps):
        for lc in launches:
            a, b = cuda.event(), cuda.event()
            a.record(stream)
            lc.on(stream)
            b.record(stream)
            b.synchronize()
            times[_name(backend, lc)] += cuda.event_elapsed_time(a, b) / reps
    walls = {}
    for graph in (True, False):
        backend.prompt_graph = graph
        tf.forward(ids, 0)                                   # (captures the pass the first time)
        walls[graph] = []
        for _ in range(reps + 2):
            t = time.perf_counter()
            tf.forward(ids, 0)
            walls[graph].append(time.perf_counter() - t)
    backend.prompt_graph = True
    total = sum(times.values())
    return {"file": path, "launches": len(launches), "sum_ms": round(total, 3),
            "pass_ms": round(min(walls[True]) * 1e3, 3), "tok_s": round(N / min(walls[True])),
            "pass_ms_no_graph": round(min(walls[False]) * 1e3, 3),
            "ms": {k: round(v, 3) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}}


def check(path: str, n: int = 200) -> dict:
    sys.path.insert(0, "bench")
    from pathlib import Path

    from cuda_ab import fill_random

    from ggq.runtime.model import open_model
    filled = fill_random(Path(path), Path("/tmp") / f"random.{Path(path).name}")
    tf = open_model(str(filled), ctx_size=n + 1, device="cuda")
    ids = np.random.default_rng(1).integers(0, tf.params.n_vocab, n).astype(np.int64)
    logits = {}
    for prompt_int, att_tiles in ((False, False), (False, True), (True, True)):
        tf.backend.prompt_int = prompt_int and tf.backend.int_dots
        tf.backend.att_tiles = att_tiles
        logits[prompt_int, att_tiles] = tf.forward(ids, 0, all_logits=True).astype(np.float64)
    a = logits[False, False]
    out = {"file": path, "max_abs_logit": float(np.abs(a).max())}
    for key, label in (((False, True), "float_tiled_att"), ((True, True), "int_tiled_att")):
        b = logits[key]
        out[label] = {"max_abs_diff": float(np.abs(a - b).max()),
                      "rel_rms": float(np.sqrt(((a - b) ** 2).mean() / (a ** 2).mean())),
                      "same_top1": f"{int((a.argmax(1) == b.argmax(1)).sum())}/{n}"}
    return out


if __name__ == "__main__":
    what = check if sys.argv[1] == "check" else profile
    for f in sys.argv[2 if what is check else 1:]:
        try:
            r = what(f)
            for line in (r if isinstance(r, list) else [r]):
                print(json.dumps(line), flush=True)
        except Exception as e:  # noqa: BLE001 - a probe: say what failed and go on
            print(json.dumps({"file": f, "error": f"{type(e).__name__}: {e}"}), flush=True)
