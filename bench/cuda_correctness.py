"""The CUDA backend against the CPU runtime on real GGUF files, on both arithmetic paths.

    python -P bench/cuda_correctness.py reference OUT_DIR FILE.gguf ... [--path exact|default|both]  # CPU
    python -P bench/cuda_correctness.py figures DIR FILE.gguf ... [--path ...]    # GPU machine: NAME*.cuda.npz
    python -P bench/cuda_correctness.py compare DIR FILE.gguf ... [--path ...]    # both -> JSON on stdout

exact (exact=True, float32 activations; issue 14 acceptance 1): last-position logits of 5 prompts (max
|difference|), greedy 64-token continuations (identical or not), and perplexity of eval.txt at n_ctx 512
over all chunks (llama-perplexity's measure). default (int8 activations: the CPU runtime's 8-bit dots, the
CUDA backend's dp4a ones): every prompt fed one token at a time through decode (the prompt path of both
backends is another arithmetic), the logits at every prompt position, and the greedy 64 tokens after it;
no perplexity (it runs through the prompt path). The CPU side can run on the GPU machine's host too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "The three primary colors are", "Water boils at a temperature of"]
GREEDY_TOKENS = 64
PATHS = {"exact": "", "default": ".default"}          # path -> file-name part


def _greedy(tf, out, start: int) -> list[int]:
    tokens = []
    for pos in range(start, start + GREEDY_TOKENS):
        tokens.append(int(np.argmax(out)))
        out = tf.decode(tokens[-1], pos)[0]
    return tokens


def exact_figures(m, text: str) -> dict:
    from ggq.runtime.perplexity import perplexity
    tf, logits, greedy = m.transformer, [], []
    for prompt in PROMPTS:
        ids = m.tokenize(prompt)
        out = tf.forward(ids, 0)[0].copy()
        logits.append(out)
        greedy.append(_greedy(tf, out, len(ids)))
    ppl = perplexity(tf, m.tokenizer, text, n_ctx=512).ppl
    return {"logits": np.array(logits), "greedy": np.array(greedy), "ppl": ppl}


def default_figures(m, text: str) -> dict:
    tf, logits, greedy = m.transformer, [], []
    for prompt in PROMPTS:
        for pos, token in enumerate(m.tokenize(prompt)):
            out = tf.decode(int(token), pos)[0].copy()
            logits.append(out)
        greedy.append(_greedy(tf, out, pos + 1))
    return {"logits": np.array(logits), "greedy": np.array(greedy), "ppl": np.nan}


def figures(path: Path, text: str, device: str, path_kind: str) -> dict:
    import ggq
    m = ggq.load(path, ctx_size=1024, exact=path_kind == "exact", device=device)
    return (exact_figures if path_kind == "exact" else default_figures)(m, text)


def _prefix(a, b) -> int:
    differ = np.nonzero(np.asarray(a) != np.asarray(b))[0]
    return int(differ[0]) if len(differ) else len(a)


def compare(folder: Path, stem: str, path_kind: str) -> dict:
    part = PATHS[path_kind]
    ref, got = np.load(folder / f"{stem}{part}.npz"), np.load(folder / f"{stem}{part}.cuda.npz")
    diff = np.abs(got["logits"] - ref["logits"])
    report = {"max_logit_diff": float(diff.max()),
              "max_logit_diff_rel": float(diff.max() / np.abs(ref["logits"]).max()),
              "top1_same_positions": f"{int((got['logits'].argmax(1) == ref['logits'].argmax(1)).sum())}"
                                     f"/{len(ref['logits'])}",
              "greedy_identical": int(sum(np.array_equal(a, b) for a, b in zip(got["greedy"], ref["greedy"]))),
              "greedy_common_prefix": [_prefix(a, b) for a, b in zip(got["greedy"], ref["greedy"])]}
    if path_kind == "exact":
        report.update({"ppl_cuda": float(got["ppl"]), "ppl_cpu": float(ref["ppl"]),
                       "ppl_rel_diff": abs(float(got["ppl"]) / float(ref["ppl"]) - 1.0)})
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("reference", "figures", "compare"))
    ap.add_argument("folder", type=Path)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--path", choices=("exact", "default", "both"), default="exact")
    a = ap.parse_args()
    kinds = list(PATHS) if a.path == "both" else [a.path]
    if a.mode == "compare":
        for f in a.files:
            for kind in kinds:
                print(json.dumps({f.stem: {kind: compare(a.folder, f.stem, kind)}}), flush=True)
        return
    own = a.folder / "eval.txt"
    text = (own if own.exists() else Path.home() / ".cache" / "ggq-testdata" / "text" / "eval.txt").read_text()
    device, suffix = ("cpu", "") if a.mode == "reference" else ("cuda", ".cuda")
    a.folder.mkdir(parents=True, exist_ok=True)
    if not own.exists():
        own.write_text(text)
    for f in a.files:
        for kind in kinds:
            r = figures(f, text, device, kind)
            np.savez(a.folder / f"{f.stem}{PATHS[kind]}{suffix}.npz", **r)
            print(f.stem, device, kind, "ppl", r["ppl"], flush=True)


if __name__ == "__main__":
    main()
