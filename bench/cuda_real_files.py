"""Real GGUF files to the GPU machine over several device calls (each carries at most 64 MiB).

    python -P bench/cuda_real_files.py pack OUT_DIR A.gguf B.gguf ...   # here: OUT_DIR/stream.xz.NN + manifest
    python -P bench/cuda_real_files.py unpack DIR DEST_DIR              # there: the files again, md5 checked

Tensors whose bytes equal a tensor of the same name in an earlier file (the shared model's q4_k_m and
q8_0 files both hold token_embd as the same Q8_0 blocks: 30 MB) travel once; everything else is one
xz stream, cut into parts that the caller spreads over its calls.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import sys
from pathlib import Path

PART = 16_000_000               # bytes a part; calls take several


def _plan(files: list[Path]) -> list[dict]:
    """Per file: its segments in order, ["own", length] (from the stream) or ["copy", file, offset, length]."""
    from ggq.gguf_read import open_gguf
    seen, plan = {}, []
    for i, f in enumerate(files):
        data = f.read_bytes()
        with open_gguf(f) as g:
            tensors = sorted(g.tensors.values(), key=lambda t: t.offset)
        segs, at = [], 0
        for t in tensors:
            key = (t.name, hashlib.md5(data[t.offset:t.offset + t.nbytes]).hexdigest())
            if key in seen:
                if t.offset > at:
                    segs.append(["own", t.offset - at])
                segs.append(["copy", *seen[key], t.nbytes])
                at = t.offset + t.nbytes
            else:
                seen[key] = (i, t.offset)
        if len(data) > at:
            segs.append(["own", len(data) - at])
        plan.append({"name": f.name, "md5": hashlib.md5(data).hexdigest(), "segments": segs})
    return plan


def pack(out: Path, files: list[Path]) -> None:
    plan = _plan(files)
    comp = lzma.LZMACompressor(preset=6)
    stream = bytearray()
    for f, p in zip(files, plan):
        data, at = f.read_bytes(), 0
        for seg in p["segments"]:
            if seg[0] == "own":
                stream += comp.compress(data[at:at + seg[1]])
            at += seg[-1]
    stream += comp.flush()
    out.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(stream), PART):
        (out / f"stream.xz.{k // PART:02d}").write_bytes(stream[k:k + PART])
    (out / "manifest.json").write_text(json.dumps(plan))
    print(len(stream), "bytes in", -(-len(stream) // PART), "parts")


def unpack(folder: Path, dest: Path) -> None:
    plan = json.loads((folder / "manifest.json").read_text())
    parts = sorted(folder.glob("stream.xz.*"))
    stream = lzma.decompress(b"".join(p.read_bytes() for p in parts))
    dest.mkdir(parents=True, exist_ok=True)
    at, made = 0, []
    for p in plan:
        data = bytearray()
        for seg in p["segments"]:
            if seg[0] == "own":
                data += stream[at:at + seg[1]]
                at += seg[1]
            else:
                _, i, offset, length = seg
                data += made[i][offset:offset + length]
        if hashlib.md5(data).hexdigest() != p["md5"]:
            raise SystemExit(f"{p['name']}: md5 differs")
        (dest / p["name"]).write_bytes(data)
        made.append(bytes(data))
        print(p["name"], len(data), p["md5"])


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), [Path(f) for f in sys.argv[3:]])
    else:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
