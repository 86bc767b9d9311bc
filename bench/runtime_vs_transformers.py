"""ggq's runtime against transformers (the oracle) on the shared model, and its speed.

For the F32 and F16 GGUFs that llama.cpp's converter made of SmolLM2-135M-Instruct (bench/reference_files.py):
  - last-position logits on 5 prompts: max |ggq - transformers(float32)| (limits 1e-3 F32, 2e-2 F16);
  - greedy 64-token continuations: identical token ids?
  - prefill and decode speed of ggq and of transformers (float32, torch threads = ggq threads).
Both sides get the same token ids (transformers' tokenizer), so only the model math is compared.

    .venv/bin/python -P bench/runtime_vs_transformers.py [--threads N]
Writes the `runtime_vs_transformers` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))
from bench.reference_files import REF  # noqa: E402
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402
from tests.conftest import SHARED_MODEL  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "Photosynthesis converts light energy into chemical energy. The main steps are",
]
LIMITS = {"F32": 1e-3, "F16": 2e-2}
N_GREEDY = 64


def hf_model():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(SHARED_MODEL)
    model = AutoModelForCausalLM.from_pretrained(SHARED_MODEL, torch_dtype=torch.float32)
    model.eval()
    return tok, model


def hf_last_logits(model, ids: list[int]) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].double().numpy()


def hf_greedy(model, ids: list[int]) -> tuple[list[int], float]:
    import torch
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=N_GREEDY, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist(), time.perf_counter() - t


def ggq_greedy(m, ids: list[int]) -> tuple[list[int], float, float]:
    """Greedy ids (stopping at end-of-generation like transformers), prefill seconds, seconds per token."""
    from ggq.runtime.generate import prefill
    tf = m.transformer
    tf.cache_tokens = []
    t0 = time.perf_counter()
    logits = prefill(tf, ids)
    t1 = time.perf_counter()
    out = []
    for _ in range(N_GREEDY):
        token = int(np.argmax(logits[0]))
        out.append(token)
        if m.tokenizer.is_eog(token) or len(out) == N_GREEDY:
            break
        logits = tf.decode(token, len(tf.cache_tokens))
        tf.cache_tokens.append(token)
    t2 = time.perf_counter()
    return out, t1 - t0, (t2 - t1) / max(1, len(out) - 1)


def compare(name: str, path: Path, tok, hf, threads: int) -> list[object]:
    import ggq
    m = ggq.load(path, threads=threads, ctx_size=512)
    prompt_ids = [tok(p)["input_ids"] for p in PROMPTS]
    ggq_greedy(m, prompt_ids[0][:4])  # compile / warm up
    diffs, same, prefill_tps, decode_tps, hf_tps = [], 0, [], [], []
    for ids in prompt_ids:
        ours = m.logits(ids, last_only=True).astype(np.float64)
        diffs.append(float(np.abs(ours - hf_last_logits(hf, ids)).max()))
        g_ids, t_prefill, t_tok = ggq_greedy(m, ids)
        h_ids, t_hf = hf_greedy(hf, ids)
        h_ids = h_ids[:len(h_ids)]
        same += g_ids == h_ids
        if g_ids != h_ids:
            first = next((i for i, (a, b) in enumerate(zip(g_ids, h_ids)) if a != b), min(len(g_ids), len(h_ids)))
            print(f"  {name}: continuation differs at token {first}: {g_ids[first:first + 3]} vs {h_ids[first:first + 3]}")
        prefill_tps.append(len(ids) / t_prefill)
        decode_tps.append(1.0 / t_tok)
        hf_tps.append(len(h_ids) / t_hf)
    m.close()
    worst = max(diffs)
    print(f"{name}: max |dlogit| {worst:.2e} (limit {LIMITS[name]}), greedy identical {same}/{len(PROMPTS)}")
    return [name, f"{worst:.2e}", LIMITS[name], "yes" if worst <= LIMITS[name] else "NO", f"{same}/{len(PROMPTS)}",
            f"{np.median(prefill_tps):.0f}", f"{np.median(decode_tps):.1f}", f"{np.median(hf_tps):.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="threads for ggq and torch (default: physical cores)")
    args = ap.parse_args()
    import torch
    from ggq.runtime.api import physical_cores
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    tok, hf = hf_model()
    rows = [compare(name, REF / f"SmolLM2-{name}.gguf", tok, hf, threads) for name in ("F32", "F16")]
    headers = ["GGUF", "max abs logit diff (5 prompts, last position)", "limit", "within", "greedy 64 tokens identical",
               "ggq prefill tok/s", "ggq decode tok/s", "transformers generate tok/s"]
    body = "\n".join([
        "## ggq runtime vs transformers (SmolLM2-135M-Instruct)",
        "",
        f"`{command_line()}` — git {git_revision()}, {machine()}, {threads} thread(s) for ggq and torch.",
        "Reference: transformers float32 on the HF checkpoint; ggq on llama.cpp-converted GGUFs; same token ids.",
        "Speeds are medians over the 5 prompts (prompts are 5-30 tokens; decode = one token at a time over the KV cache).",
        "",
        markdown_table(headers, rows),
    ])
    write_section("runtime_vs_transformers", body)
    print(body)


if __name__ == "__main__":
    main()
