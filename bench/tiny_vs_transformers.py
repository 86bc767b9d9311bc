"""Acceptance 5: tiny random Gemma3, Qwen2 and Llama checkpoints, converted by ggq, give transformers' logits.

For each architecture, tests/tiny_checkpoints.py writes a random F32 checkpoint (2 layers, n_embd 256,
GQA 4/2 heads, byte-level BPE of 42 tokens); ggq.convert.pipeline.convert makes F32 and F16 GGUFs of it
(as `ggq convert SRC --type f32|f16`). The oracle is transformers (float32, eager attention) on the
checkpoint itself. On fixed token-id sequences of 8, 23, 40 and 600 ids (600 > the tiny Gemma3's sliding
window of 512, so its two sliding-window layers really slide: an off-by-one window moves logits by 0.09),
checked:
  - every position's logits: max |ggq - transformers| (limits 1e-3 F32, 2e-2 F16), beside max |logit|;
  - greedy 16-token continuations of the three short sequences: transformers' generate(do_sample=False)
    vs argmax over ggq's KV-cache decode, identical ids?
Ids are drawn from the tokenizer's 42 tokens (the GGUF vocabulary is padded to config's 48, as
convert_hf_to_gguf pads it). Should a GGUF have fewer rows than config's vocab_size (Gemma3's converter
trims token_embd to the tokenizer), only its logits are compared and generate() may not pick the others.

    .venv/bin/python -P bench/tiny_vs_transformers.py
Writes the `tiny_vs_transformers` section of bench/RESULTS.md; exits 1 if a logit limit fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # `bench.*`, `tests.*` under -P; ggq itself: the installed package
from bench.results import command_line, git_revision, machine, markdown_table, write_section  # noqa: E402
from tests.tiny_checkpoints import write_checkpoint  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ARCHS = ("gemma3", "qwen2", "llama")
TYPES = {"f32": 1e-3, "f16": 2e-2}
N_TOKENS = 42  # tokens of the tiny tokenizer (config vocab_size is 48)
_rng = np.random.default_rng(20240605)
SEQUENCES = [_rng.integers(3, N_TOKENS, n).tolist() for n in (8, 23, 40, 600)]
N_GREEDY_SEQS, N_GREEDY = 3, 16


def installed_is_head() -> bool:
    """Is the ggq this script imports (installed or editable) git HEAD's ggq/, runtime/ and convert/?"""
    import ggq
    import ggq.convert
    import ggq.runtime
    where = {"ggq": Path(ggq.__file__).parent, "runtime": Path(ggq.runtime.__file__).parent,
             "convert": Path(ggq.convert.__file__).parent}

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout

    for path in git("ls-files", "ggq/*.py", "runtime/*.py", "convert/*.py").decode().split():
        top, rest = path.split("/", 1)
        imported = where[top] / rest
        if not imported.is_file() or imported.read_bytes() != git("show", f"HEAD:{path}"):
            return False
    return True


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def hf_greedy(model, ids: list[int], n_vocab: int) -> list[int]:
    import torch
    extra = list(range(n_vocab, model.config.vocab_size))  # ids the GGUF does not have (gemma3)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=N_GREEDY, do_sample=False, suppress_tokens=extra or None)
    return out[0, len(ids):].tolist()


def ggq_greedy(tf, ids: list[int]) -> list[int]:
    """Prefill, then one token at a time over the KV cache, always the argmax."""
    logits = tf.forward(ids, 0)
    out = []
    for _ in range(N_GREEDY):
        out.append(int(np.argmax(logits[0])))
        if len(out) < N_GREEDY:
            logits = tf.decode(out[-1], len(ids) + len(out) - 1)
    return out


def hf_model(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    model.generation_config.eos_token_id = None  # always 16 tokens, as ggq's loop
    model.generation_config.pad_token_id = 0
    return model


def compare(arch: str, ftype: str, gguf: Path, hf) -> list[object]:
    from ggq.runtime.model import open_model
    tf = open_model(gguf, ctx_size=1024)
    n_vocab = tf.params.n_vocab
    diff = peak = 0.0
    for ids in SEQUENCES:
        ours = tf.forward(ids, 0, all_logits=True).astype(np.float64)
        ref = hf_logits(hf, ids)[:, :n_vocab]
        diff = max(diff, float(np.abs(ours - ref).max()))
        peak = max(peak, float(np.abs(ref).max()))
    same = 0
    for ids in SEQUENCES[:N_GREEDY_SEQS]:
        g, h = ggq_greedy(tf, ids), hf_greedy(hf, ids, n_vocab)
        same += g == h
        if g != h:
            print(f"  {arch} {ftype}: greedy differs: ggq {g} vs transformers {h}")
    tf.gguf.close()
    limit = TYPES[ftype]
    ok = diff <= limit
    print(f"{arch:7s} {ftype}: max |dlogit| {diff:.2e} (limit {limit}), max |logit| {peak:.2f}, "
          f"greedy identical {same}/{N_GREEDY_SEQS}" + ("" if ok else "  <-- FAIL"))
    return [arch, ftype.upper(), f"{n_vocab}/{hf.config.vocab_size}", f"{diff:.2e}", f"{peak:.2f}", limit,
            "yes" if ok else "NO", f"{same}/{N_GREEDY_SEQS}"]


def main() -> int:
    import torch
    from ggq.convert.pipeline import convert
    torch.set_num_threads(2)
    same_source = installed_is_head()
    if not same_source:
        print("warning: the installed ggq is not git HEAD's (pip install . to refresh)")
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHS:
            folder = Path(tmp) / f"tiny-{arch}"
            write_checkpoint(folder, arch, dtype="F32")
            hf = hf_model(folder)
            for ftype in TYPES:
                gguf = convert(str(folder), ftype, str(Path(tmp) / f"tiny-{arch}-{ftype}.gguf"), quiet=True).path
                rows.append(compare(arch, ftype, gguf, hf))
    failed = [r for r in rows if r[6] != "yes"]
    headers = ["arch", "GGUF", "logits compared / config vocab", "max abs logit diff (all positions)",
               "max abs logit", "limit", "within", f"greedy {N_GREEDY} tokens identical"]
    body = "\n".join([
        "## Tiny random checkpoints: ggq convert + runtime vs transformers (acceptance 5)",
        "",
        f"`{command_line()}` — git {git_revision()}, {machine()}; {time.perf_counter() - t0:.0f} s.",
        "Checkpoints: tests/tiny_checkpoints.py, F32, 2 layers, n_embd 256, 4/2 heads of 64, seed 0; converted by "
        "ggq.convert.pipeline.convert. Reference: transformers float32 (eager attention) on the checkpoint.",
        f"Sequences: fixed random ids of lengths {', '.join(str(len(s)) for s in SEQUENCES)} (600 > Gemma3's "
        "sliding window 512; both of its layers are sliding-window layers); greedy from the three short ones.",
        "An off-by-one sliding window would move Gemma3's logits by 0.09 on the 600-id sequence.",
        "ggq as installed = git HEAD's sources." if same_source else "Warning: the installed ggq was not git HEAD's.",
        "",
        markdown_table(headers, rows),
    ])
    write_section("tiny_vs_transformers", body)
    print(body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
