"""Compare ggq's GGUF tokenizer for the shared model (pre = smollm) with the HF `tokenizers` library on the
test texts. ORACLE: tokenizer.json of the HF checkpoint via `tokenizers` (optional dependency, bench only).

    .venv/bin/python -P bench/tokenizer_vs_hf.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import DATA, Q4_1_GGUF, SHARED_MODEL  # noqa: E402


def main() -> int:
    from tokenizers import Tokenizer as HFTokenizer

    from ggq.gguf_read import open_gguf
    from ggq.runtime.tokenizer import Tokenizer

    with open_gguf(Q4_1_GGUF) as f:
        ours = Tokenizer.from_metadata(dict(f.metadata))
    hf = HFTokenizer.from_file(str(SHARED_MODEL / "tokenizer.json"))
    failures = 0
    for name in ("eval.txt", "calibration.txt"):
        text = (DATA / "text" / name).read_text(encoding="utf-8")
        t0 = time.perf_counter()
        mine = ours.encode(text, add_special=False)
        dt = time.perf_counter() - t0
        ref = hf.encode(text, add_special_tokens=False).ids
        same = mine == ref
        first = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
        print(f"{name}: {len(text)} chars, {len(mine)} tokens in {dt:.2f} s; identical to HF: {same}"
              + ("" if same else f" (first difference at token {first})"))
        print(f"  decode round-trip: {ours.decode(mine) == text}")
        failures += not same
    lines = [ln for ln in (DATA / "text" / "eval.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    bad = sum(ours.encode(ln, add_special=False) != hf.encode(ln, add_special_tokens=False).ids for ln in lines)
    print(f"per-line: {len(lines) - bad}/{len(lines)} lines identical")
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())
