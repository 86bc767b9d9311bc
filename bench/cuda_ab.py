"""An A/B of CUDA backend versions against each other and llama.cpp's CUDA build, in one device call.

    bash bench/cuda_ab.sh        # on the GPU machine (device tool; carry as bench/cuda_ab.sh says)

Each version is an installed copy of ggq (NAME=SITE_DIR in GGQ_AB_VERSIONS) served by its own long-lived
process (`serve`), so that its kernels compile once, all versions at the same time, and the rounds then
interleave file by file: llama-bench, then every version (their order rotated each round), so that all
ratios are same-call and drift hits every side alike. Before the rounds, every version decodes the
same prompt greedily on files with random blocks (`fill_random`: the benchmark headers with random
quants and sane scales), and runs the tiny models against their float64 oracle.
Results: $OUT/ab.json, and one cuda_vs_llamacpp-style JSON per version and round for `report`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cuda_vs_llamacpp import BUILD, ggq_bench, llama_bench, prebuilt_binary, tiny_models, zero_files  # noqa: E402

PROMPT = [1, 504, 3055, 314, 4649, 314, 260, 1345]      # any ids below the vocabulary size
GREEDY = 32
REPLY = "@@"                                             # prefix of a server's answer lines on stdout
F16_FIELDS = ("d", "dmin", "m")


def fill_random(src: Path, dst: Path, seed: int = 0) -> Path:
    """src's header and tensors with random data: random quant bytes, f16 block scales in 0.0005..0.005
    (so that no value is inf or NaN), float tensors 1 +- 0.1 (norms) or +- 0.02 (weights)."""
    from ggq.gguf_read import open_gguf
    rng = np.random.default_rng(seed)
    data = bytearray(src.read_bytes())
    with open_gguf(src) as g:
        tensors = list(g.tensors.values())
    for t in tensors:
        view = np.frombuffer(data, np.uint8, t.nbytes, t.offset)
        if not t.qtype.is_quantized:
            scale = 0.1 if len(t.shape) == 1 else 0.02
            dtype = np.float32 if t.qtype.name == "F32" else np.float16
            vals = (1.0 if len(t.shape) == 1 else 0.0) + scale * rng.standard_normal(t.n_elements)
            view[:] = vals.astype(dtype).view(np.uint8)
            continue
        blocks = rng.integers(0, 256, t.nbytes, np.uint8).reshape(-1, t.qtype.type_size)
        at = 0
        for name, size in t.qtype.fields:
            if name in F16_FIELDS and size == 2:
                d = rng.uniform(0.0005, 0.005, len(blocks)).astype(np.float16)
                blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
            at += size
        view[:] = blocks.reshape(-1)
    dst.write_bytes(bytes(data))
    return dst


def greedy(path: str) -> dict:
    """Logits of PROMPT's last position and of GREEDY greedy decode steps after it, and the tokens."""
    import ggq
    m = ggq.load(path, device="cuda")
    tf = m.transformer
    out = tf.forward(np.array(PROMPT), 0)[0].copy()
    logits, tokens = [out], []
    for pos in range(len(PROMPT), len(PROMPT) + GREEDY):
        tokens.append(int(np.argmax(out)))
        out = tf.decode(tokens[-1], pos)[0].copy()
        logits.append(out)
    return {"tokens": tokens, "logits": np.array(logits).tolist()}


def attention_check(n_head: int = 9, n_kv: int = 3, hd: int = 64, ctx: int = 512) -> dict:
    """attend_decode on the GPU (its block shape as the backend launches it) at several positions against
    float64 numpy: max |error| / max |out|. Rope off (inv_freq 0), no bias or norms: the attention alone."""
    from numba import cuda
    from ggq.runtime.cuda import attention as at
    rng = np.random.default_rng(3)
    errors = {}
    for p in (3, 40, 127, 128, 300, 511):
        qkv = rng.standard_normal((1, (n_head + 2 * n_kv) * hd)).astype(np.float32)
        kc, vc = (rng.standard_normal((n_kv, ctx, hd)).astype(np.float32) for _ in range(2))
        dk, dv, att = cuda.to_device(kc), cuda.to_device(vc), cuda.device_array((1, n_head * hd), np.float32)
        zeros = cuda.to_device(np.zeros(qkv.shape[1], np.float32))
        at.attend_decode(hd)[(n_head,), at.ATT_WARPS * 32](
            cuda.to_device(qkv), zeros, zeros, zeros, cuda.to_device(np.zeros(hd // 2)), 1.0,
            cuda.to_device(np.array([0, p, 0], np.int64)), dk, dv, n_head, n_kv, hd, hd // 2, 0, 0, 0, 1e-6,
            1 / np.sqrt(hd), 0, att)
        q = qkv[0, :n_head * hd].reshape(n_head, hd).astype(np.float64) / np.sqrt(hd)
        k, v = kc.astype(np.float64), vc.astype(np.float64)
        k[:, p] = qkv[0, n_head * hd:(n_head + n_kv) * hd].reshape(n_kv, hd)
        v[:, p] = qkv[0, (n_head + n_kv) * hd:].reshape(n_kv, hd)
        g = np.arange(n_head) // (n_head // n_kv)
        s = np.einsum("hd,hjd->hj", q, k[g, :p + 1])
        w = np.exp(s - s.max(1, keepdims=True))
        ref = np.einsum("hj,hjd->hd", w / w.sum(1, keepdims=True), v[g, :p + 1]).reshape(-1)
        errors[p] = float(np.abs(att.copy_to_host()[0] - ref).max() / np.abs(ref).max())
    return errors


def serve() -> None:
    """Answer JSON commands from stdin: {"bench": PATH, "reps": N}, {"greedy": PATH}, {"tiny": 1}."""
    def answer(obj):
        print(REPLY + json.dumps(obj), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if os.environ.get("GGQ_AB_DRY") == "1":        # the protocol alone, without a GPU
                answer({"pp512": [1.0, 0.0], "tg128": [1.0, 0.0], "tokens": [1], "logits": [[1.0]],
                        "launches_per_token": 1, "python_launches_per_token": 1})
            elif "bench" in cmd:
                answer(ggq_bench(Path(cmd["bench"]), cmd["reps"]))
            elif "attention" in cmd:
                answer(attention_check())
            elif "greedy" in cmd:
                answer(greedy(cmd["greedy"]))
            else:
                answer(tiny_models())
        except Exception as e:  # noqa: BLE001 - report and keep serving
            answer({"error": f"{type(e).__name__}: {e}"})


class Server:
    """A `serve` process of one version: SITE is its install, SITE@VAR=VALUE@... adds settings."""

    def __init__(self, name: str, site: str, log: Path):
        self.name = name
        site, *settings = site.split("@")
        env = dict(os.environ, PYTHONPATH=site, **dict(kv.split("=", 1) for kv in settings))
        self.proc = subprocess.Popen([sys.executable, "-P", __file__, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        return {"error": f"server exited ({self.proc.wait()})"}

    def ask(self, cmd: dict) -> dict:
        self.send(cmd)
        return self.reply()


def compare_greedy(results: dict) -> dict:
    """Each version's greedy run against the first's: max |logit difference| / max |logit|, tokens equal."""
    names = list(results)
    ref = results[names[0]]
    out = {}
    for name in names[1:]:
        got = results[name]
        if "error" in got or "error" in ref:
            out[name] = {"error": got.get("error") or ref.get("error")}
            continue
        a, b = np.array(ref["logits"]), np.array(got["logits"])
        per_step = np.abs(a - b).max(1) / np.abs(a).max(1)
        same = [x == y for x, y in zip(ref["tokens"], got["tokens"])]
        out[name] = {"max_rel_logit_diff": float(per_step.max()), "rel_diff_steps": per_step[:12].tolist(),
                     "same_tokens": int(sum(same)), "of": len(same),
                     "first_other_token": same.index(False) if False in same else None}
    return out


def checks(servers: list[Server], filled: list[Path]) -> dict:
    """Greedy runs of every version on the random-block files, then the tiny models (versions in parallel)."""
    result = {}
    for f in filled:
        for s in servers:
            s.send({"greedy": str(f)})
        result[f.stem] = compare_greedy({s.name: s.reply() for s in servers})
    result["attention_vs_float64"] = {s.name: s.ask({"attention": 1}) for s in servers if s.name != "head"}
    if os.environ.get("GGQ_CUDA_TINY", "1") == "1":
        for s in servers:
            s.send({"tiny": 1})
        result["tiny_models_rel_err"] = {s.name: s.reply() for s in servers}
    return result


def rounds(servers: list[Server], files: list[Path], binary: Path, out: Path, deadline: float, reps: int) -> list:
    done = []
    for r in range(int(os.environ.get("GGQ_CUDA_ROUNDS", 3))):
        row = {s.name: {} for s in servers}
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        for f in files:
            theirs = llama_bench(binary, f, reps) if binary.is_file() else {"error": "no llama-bench"}
            for s in order:
                row[s.name][f.stem] = {"ggq": s.ask({"bench": str(f), "reps": reps}), "llama.cpp": theirs}
                print(r + 1, s.name, f.stem, row[s.name][f.stem]["ggq"].get("tg128"), theirs.get("tg128"), flush=True)
        done.append(row)
        for name, per_file in row.items():
            (out / f"{name}-{r + 1}.json").write_text(json.dumps({"rounds": [per_file]}, indent=1))
        if time.monotonic() > deadline:
            break
    return done


def drive(out: Path) -> None:
    start = time.monotonic()
    deadline = start + float(os.environ.get("GGQ_CUDA_DEADLINE_S", 300))
    out.mkdir(parents=True, exist_ok=True)
    unpack = prebuilt_binary(out / "build.log")
    files = zero_files(BENCH.parent / ".gpu" / "files", Path("/tmp/ggq-bench-files"))
    versions = [v.split("=", 1) for v in os.environ["GGQ_AB_VERSIONS"].split(",")]
    servers = [Server(name, site, out / f"{name}.log") for name, site in versions]
    for s in servers:                                   # compile every kernel, all versions at once
        s.send({"bench": str(files[0]), "reps": 1})
    filled = [fill_random(f, Path("/tmp") / f"random.{f.stem}.gguf") for f in files if f.stem.startswith("smol")]
    warm = {s.name: s.reply() for s in servers}
    print("warm", json.dumps(warm)[:2000], f"{time.monotonic() - start:.0f}s", flush=True)
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "versions": versions,
              "checks": checks(servers, filled)}
    print("checks", json.dumps(result["checks"]), f"{time.monotonic() - start:.0f}s", flush=True)
    (out / "ab.json").write_text(json.dumps(result, indent=1))
    binary = BUILD / "build" / "bin" / "llama-bench"
    result["llama_unpack_rc"] = unpack.wait() if unpack else "no prebuilt llama-bench"
    result["rounds"] = rounds(servers, files, binary, out, deadline, int(os.environ.get("GGQ_CUDA_REPS", 3)))
    result["seconds"] = time.monotonic() - start
    (out / "ab.json").write_text(json.dumps(result, indent=1))
    for s in servers:
        s.proc.stdin.close()


if __name__ == "__main__":
    serve() if sys.argv[1] == "serve" else drive(Path(sys.argv[2]))
