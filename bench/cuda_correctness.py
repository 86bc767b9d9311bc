"""The CUDA backend against the CPU runtime (exact=True: float32 activations) on real GGUF files.

    python -P bench/cuda_correctness.py reference OUT_DIR FILE.gguf ...   # here: CPU figures -> OUT_DIR/NAME.npz
    python -P bench/cuda_correctness.py figures DIR FILE.gguf ...        # GPU machine: -> DIR/NAME.cuda.npz
    python -P bench/cuda_correctness.py compare DIR FILE.gguf ...        # here: both -> JSON on stdout

Per file: last-position logits of 5 prompts (max |difference|), greedy 64-token continuations (identical
or not), and perplexity of eval.txt at n_ctx 512 over all chunks (llama-perplexity's measure).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "The three primary colors are", "Water boils at a temperature of"]
GREEDY_TOKENS = 64


def figures(path: Path, text: str, device: str) -> dict:
    import ggq
    from ggq.runtime.perplexity import perplexity
    m = ggq.load(path, ctx_size=1024, exact=True, device=device)
    tf, logits, greedy = m.transformer, [], []
    for prompt in PROMPTS:
        ids = m.tokenize(prompt)
        out = tf.forward(ids, 0)[0].copy()
        logits.append(out)
        tokens = []
        for pos in range(len(ids), len(ids) + GREEDY_TOKENS):
            tokens.append(int(np.argmax(out)))
            out = tf.decode(tokens[-1], pos)[0]
        greedy.append(tokens)
    ppl = perplexity(tf, m.tokenizer, text, n_ctx=512).ppl
    return {"logits": np.array(logits), "greedy": np.array(greedy), "ppl": ppl}


def main() -> None:
    mode, folder, files = sys.argv[1], Path(sys.argv[2]), [Path(f) for f in sys.argv[3:]]
    text = (folder / "eval.txt").read_text() if mode == "figures" else \
        (Path.home() / ".cache" / "ggq-testdata" / "text" / "eval.txt").read_text()
    if mode in ("reference", "figures"):           # CPU figures here, or CUDA figures on the GPU machine
        device, suffix = ("cpu", "") if mode == "reference" else ("cuda", ".cuda")
        folder.mkdir(parents=True, exist_ok=True)
        if mode == "reference":
            (folder / "eval.txt").write_text(text)
        for f in files:
            r = figures(f, text, device)
            np.savez(folder / f"{f.stem}{suffix}.npz", logits=r["logits"], greedy=r["greedy"], ppl=r["ppl"])
            print(f.stem, device, "ppl", r["ppl"], flush=True)
        return
    report = {}
    for f in files:                                 # compare REF_DIR/NAME.npz with REF_DIR/NAME.cuda.npz
        ref, got = np.load(folder / f"{f.stem}.npz"), np.load(folder / f"{f.stem}.cuda.npz")
        report[f.stem] = {
            "max_logit_diff": float(np.abs(got["logits"] - ref["logits"]).max()),
            "greedy_identical": int(sum(np.array_equal(a, b) for a, b in zip(got["greedy"], ref["greedy"]))),
            "ppl_cuda": float(got["ppl"]), "ppl_cpu": float(ref["ppl"]),
            "ppl_rel_diff": abs(float(got["ppl"]) / float(ref["ppl"]) - 1.0)}
        print(json.dumps({f.stem: report[f.stem]}), flush=True)


if __name__ == "__main__":
    main()
