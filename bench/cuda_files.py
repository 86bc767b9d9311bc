"""Benchmark files for the GPU machine, made here: a GGUF's header (its bytes before the data section) and
its size, so that the GPU machine can rebuild the file with zero data (bench/cuda_vs_llamacpp.py) without
carrying 100+ MB. Also the header of a 1.1B-shaped file (bench/make_big_checkpoint.py's shape, the shared
model's tokenizer) with the tensor types `ggq convert` would choose, written without quantizing anything.

    python -P bench/cuda_files.py OUT_DIR FILE.gguf [FILE.gguf ...]   # plus big-1.1b.{q4_k_m,q8_0}
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent.parent))  # bench.*; ggq itself as installed

from ggq.convert.mixing import file_type_id, plan_types  # noqa: E402
from ggq.gguf_read import open_gguf  # noqa: E402
from ggq.gguf_write import TensorSpec, write_gguf  # noqa: E402
from bench.make_big_checkpoint import HIDDEN, N_FF, N_HEAD, N_HEAD_KV, N_LAYER, N_VOCAB  # noqa: E402


def save_header(src: Path, out: Path, name: str) -> None:
    with open_gguf(src) as g:
        offset, size = g.data_offset, g.file_size
    (out / f"{name}.head").write_bytes(src.read_bytes()[:offset] if size < 2**31 else open(src, "rb").read(offset))
    (out / f"{name}.json").write_text(json.dumps({"size": size, "data_offset": offset}))


def big_shapes() -> list[tuple[str, tuple[int, ...]]]:
    kv = N_HEAD_KV * (HIDDEN // N_HEAD)
    shapes = [("token_embd.weight", (N_VOCAB, HIDDEN))]
    for i in range(N_LAYER):
        b = f"blk.{i}."
        shapes += [(b + "attn_norm.weight", (HIDDEN,)), (b + "attn_q.weight", (HIDDEN, HIDDEN)),
                   (b + "attn_k.weight", (kv, HIDDEN)), (b + "attn_v.weight", (kv, HIDDEN)),
                   (b + "attn_output.weight", (HIDDEN, HIDDEN)), (b + "ffn_norm.weight", (HIDDEN,)),
                   (b + "ffn_gate.weight", (N_FF, HIDDEN)), (b + "ffn_up.weight", (N_FF, HIDDEN)),
                   (b + "ffn_down.weight", (HIDDEN, N_FF))]
    return shapes + [("output_norm.weight", (HIDDEN,)), ("output.weight", (N_VOCAB, HIDDEN))]


def big_file(template: Path, ftype: str, path: Path) -> None:
    """The 1.1B shape with the template's tokenizer metadata; zero tensor data (only the header is used)."""
    with open_gguf(template) as g:
        meta = {k: v for k, v in g.metadata.items() if not k.startswith("GGUF.")}
    meta.update({"llama.embedding_length": HIDDEN, "llama.feed_forward_length": N_FF, "llama.block_count": N_LAYER,
                 "llama.attention.head_count": N_HEAD, "llama.attention.head_count_kv": N_HEAD_KV,
                 "llama.rope.dimension_count": HIDDEN // N_HEAD, "general.file_type": file_type_id(ftype),
                 "general.name": f"big-1.1b {ftype}"})
    shapes = big_shapes()
    types = plan_types(shapes, ftype, N_LAYER, N_HEAD, N_HEAD_KV)
    specs = [TensorSpec(n, s, types[n]) for n, s in shapes]
    write_gguf(path, meta, specs, (np.zeros(spec.nbytes, np.uint8) for spec in specs))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for src in map(Path, sys.argv[2:]):
        save_header(src, out, src.stem)
    for ftype in ("q4_k_m", "q8_0"):
        tmp = out / f"big-1.1b.{ftype}.gguf"
        big_file(Path(sys.argv[2]), ftype, tmp)
        save_header(tmp, out, tmp.stem)
        tmp.unlink()


if __name__ == "__main__":
    main()
