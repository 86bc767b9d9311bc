"""Golden tables for ggq.convert.mixing, produced by llama.cpp's llama-quantize (the oracle).

    .venv/bin/python -P bench/make_mixing_golden.py [smollm2|synthetic ...]

smollm2: quantizes ~/.cache/ggq-bench/ref/SmolLM2-F16.gguf (llama.cpp's own F16 conversion) with every
ftype and a few flag combinations -> tests/fixtures/mixing_smollm2.json.
synthetic: writes tiny llama GGUFs (gguf.GGUFWriter, random F16 tensors) whose shapes reach other branches
(rows divisible by 256, GQA 4, n_head == n_head_kv, tied/untied output, 32 layers, rows not divisible by 32,
8 experts), quantizes each the same way -> tests/fixtures/mixing_synthetic.json.
Each case records the tensor -> type table read back with gguf.GGUFReader and the general.file_type written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
QUANTIZE = Path.home() / ".cache/ggq-llamacpp/build/bin/llama-quantize"
SMOLLM2_F16 = Path.home() / ".cache/ggq-bench/ref/SmolLM2-F16.gguf"

FTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m",
          "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"]

# (ftype, flags) beyond the plain ftypes; flags mirror plan_types' keyword arguments.
SMOLLM2_FLAG_CASES = [
    ("q4_k_m", {"pure": True}),
    ("q4_k_m", {"output_type": "q5_0"}),  # tied: token_embd follows the output type
    ("q4_k_m", {"output_type": "q6_k", "embedding_type": "q8_0"}),
    ("q3_k_m", {"tensor_types": [["blk\\.0\\.attn_v", "q8_0"], ["FFN_DOWN", "q5_1"]]}),
    ("f16", {"tensor_types": [["attn_q", "q8_0"]], "output_type": "q8_0"}),
]
SYNTHETIC_FLAG_CASES = {
    "gqa4_untied": [
        ("q4_k_m", {"pure": True}),
        ("q2_k", {"output_type": "q4_k", "embedding_type": "q5_k"}),
        ("q3_k_m", {"tensor_types": [["blk\\.[01]\\.attn_v", "q8_0"], ["attn_output", "q2_k"]]}),
        ("q4_k_s", {"tensor_types": [["output", "q4_0"]]}),
    ],
    "llama_70b_shape": [
        ("q4_k_m", {"tensor_types": [["blk\\.7\\.attn_v", "q4_k"]]}),  # manual choice is not bumped
    ],
    "falcon16": [
        ("q4_k_m", {"output_type": "q6_k"}),
    ],
    "mha_tied_8": [
        ("q5_k_m", {"output_type": "q4_k"}),
        ("q4_k_m", {"tensor_types": [["token_embd", "q8_0"]]}),
    ],
}


def _llama_metadata(w: gguf.GGUFWriter, n_layer: int, hidden: int, n_ff: int, n_head: int, n_head_kv: int,
                    vocab: int, n_expert: int) -> None:
    w.add_name("ggq-mixing-synthetic")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_layer_norm_eps(1e-5)  # falcon's key
    w.add_rope_dimension_count(hidden // n_head)
    w.add_vocab_size(vocab)
    w.add_file_type(1)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)


def _falcon_layer(b, hidden, n_ff, kv_dim):
    return [(b + "attn_norm.weight", (hidden,), np.float32), (b + "attn_norm.bias", (hidden,), np.float32),
            (b + "attn_qkv.weight", (hidden + 2 * kv_dim, hidden), np.float16),
            (b + "attn_output.weight", (hidden, hidden), np.float16),
            (b + "ffn_up.weight", (n_ff, hidden), np.float16), (b + "ffn_down.weight", (hidden, n_ff), np.float16)]


def _synthetic_tensors(n_layer, hidden, n_ff, n_head, n_head_kv, vocab, n_expert, tied, arch="llama"):
    """(name, numpy shape, dtype) in convert_hf_to_gguf-like order."""
    kv_dim = hidden // n_head * n_head_kv
    out = [("token_embd.weight", (vocab, hidden), np.float16)]
    for i in range(n_layer):
        b = f"blk.{i}."
        if arch == "falcon":
            out += _falcon_layer(b, hidden, n_ff, kv_dim)
            continue
        out += [(b + "attn_norm.weight", (hidden,), np.float32),
                (b + "attn_q.weight", (hidden, hidden), np.float16),
                (b + "attn_k.weight", (kv_dim, hidden), np.float16),
                (b + "attn_v.weight", (kv_dim, hidden), np.float16),
                (b + "attn_output.weight", (hidden, hidden), np.float16),
                (b + "ffn_norm.weight", (hidden,), np.float32)]
        if n_expert:
            out += [(b + "ffn_gate_inp.weight", (n_expert, hidden), np.float32),
                    (b + "ffn_gate_exps.weight", (n_expert, n_ff, hidden), np.float16),
                    (b + "ffn_up_exps.weight", (n_expert, n_ff, hidden), np.float16),
                    (b + "ffn_down_exps.weight", (n_expert, hidden, n_ff), np.float16)]
        else:
            out += [(b + "ffn_down.weight", (hidden, n_ff), np.float16),
                    (b + "ffn_gate.weight", (n_ff, hidden), np.float16),
                    (b + "ffn_up.weight", (n_ff, hidden), np.float16)]
    out.append(("output_norm.weight", (hidden,), np.float32))
    if not tied:
        out.append(("output.weight", (vocab, hidden), np.float16))
    return out


SYNTHETIC_MODELS = {
    # rows divisible by 256, GQA 4 (the n_gqa >= 4 branches), untied output
    "gqa4_untied": dict(n_layer=4, hidden=256, n_ff=768, n_head=8, n_head_kv=2, vocab=64, n_expert=0, tied=False),
    # n_head == n_head_kv, 8 layers (use_more_bits pattern), tied embeddings
    "mha_tied_8": dict(n_layer=8, hidden=256, n_ff=768, n_head=4, n_head_kv=4, vocab=64, n_expert=0, tied=True),
    # 32 layers: the n/16 and n/8 layer cuts and the full use_more_bits pattern
    "gqa2_32": dict(n_layer=32, hidden=256, n_ff=512, n_head=4, n_head_kv=2, vocab=32, n_expert=0, tied=False),
    # ffn_down rows of 80 (not a multiple of 32): fallback to F16; hidden 288 (32 but not 256)
    "odd_rows": dict(n_layer=2, hidden=288, n_ff=80, n_head=4, n_head_kv=4, vocab=32, n_expert=0, tied=False),
    # 8 experts: attn_k/attn_v -> Q8_0, attn_output -> Q5_K, expert ffn_down layers from the name
    "moe8": dict(n_layer=4, hidden=256, n_ff=256, n_head=8, n_head_kv=2, vocab=32, n_expert=8, tied=False),
    # llama with 80 layers and GQA is what llama.cpp calls 70B: attn_v Q3_K/Q4_K bumped to Q5_K
    "llama_70b_shape": dict(n_layer=80, hidden=256, n_ff=256, n_head=8, n_head_kv=1, vocab=32, n_expert=0,
                            tied=False),
    # falcon: fused attn_qkv (an attn_v-like tensor), Q8_0 output, falcon's own ffn_down/attn_output rules
    "falcon16": dict(n_layer=16, hidden=256, n_ff=512, n_head=4, n_head_kv=1, vocab=32, n_expert=0, tied=False,
                     arch="falcon"),
}


def write_synthetic(path: Path, n_layer, hidden, n_ff, n_head, n_head_kv, vocab, n_expert, tied,
                    arch="llama") -> None:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch)
    _llama_metadata(w, n_layer, hidden, n_ff, n_head, n_head_kv, vocab, n_expert)
    for name, shape, dtype in _synthetic_tensors(n_layer, hidden, n_ff, n_head, n_head_kv, vocab, n_expert, tied,
                                                 arch):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path: Path) -> dict:
    """The model as plan_types sees it: tensors (name, numpy shape) in file order, their source types, hparams."""
    r = gguf.GGUFReader(str(path))
    arch = r.fields["general.architecture"].contents()

    def kv(key, default=0):
        f = r.fields.get(f"{arch}.{key}")
        return f.contents() if f is not None else default
    return {
        "arch": arch, "n_layer": kv("block_count"), "n_head": kv("attention.head_count"),
        "n_head_kv": kv("attention.head_count_kv"), "n_expert": kv("expert_count"),
        "tensors": [[t.name, [int(d) for d in reversed(t.shape)], t.tensor_type.name] for t in r.tensors],
    }


def _flag_args(flags: dict) -> list[str]:
    args = []
    if flags.get("pure"):
        args.append("--pure")
    if flags.get("output_type"):
        args += ["--output-tensor-type", flags["output_type"]]
    if flags.get("embedding_type"):
        args += ["--token-embedding-type", flags["embedding_type"]]
    for pattern, qtype in flags.get("tensor_types", []):
        args += ["--tensor-type", f"{pattern}={qtype}"]
    return args


def quantize_case(src: Path, ftype: str, flags: dict, workdir: Path) -> dict:
    out = workdir / "out.gguf"
    cmd = [str(QUANTIZE), *_flag_args(flags), str(src), str(out), ftype.upper(), "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    r = gguf.GGUFReader(str(out))
    case = {"ftype": ftype, "flags": flags, "file_type": int(r.fields["general.file_type"].contents()),
            "types": {t.name: t.tensor_type.name for t in r.tensors}}
    del r
    out.unlink()
    print(f"  {src.name} {ftype} {flags}: file_type {case['file_type']}", flush=True)
    return case


# One character per tensor keeps the JSON small: TYPE_CODES[i] is the type written as str(i) / letter.
TYPE_CODES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
CODE_CHARS = "0123456789abc"


def _compact(model: dict, cases: list[dict]) -> dict:
    """Store each case's types as one string, a code character per tensor in the model's tensor order."""
    names = [t[0] for t in model["tensors"]]
    for case in cases:
        assert set(case["types"]) == set(names), "llama-quantize changed the tensor set"
        case["types"] = "".join(CODE_CHARS[TYPE_CODES.index(case["types"][n])] for n in names)
    return {"model": model, "cases": cases}


def make_model_cases(src: Path, flag_cases, workdir: Path) -> dict:
    model = describe(src)
    cases = [quantize_case(src, ft, {}, workdir) for ft in FTYPES]
    cases += [quantize_case(src, ft, flags, workdir) for ft, flags in flag_cases]
    return _compact(model, cases)


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=None, separators=(",", ":")).replace('{"ftype"', '\n{"ftype"') + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main(which: list[str]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        meta = {"oracle": "llama.cpp llama-quantize (llama-cpp-python 0.3.36 sdist)",
                "made_by": "bench/make_mixing_golden.py",
                "type_codes": dict(zip(CODE_CHARS, TYPE_CODES))}
        if "synthetic" in which:
            models = {}
            for name, spec in SYNTHETIC_MODELS.items():
                src = work / f"{name}.gguf"
                write_synthetic(src, **spec)
                models[name] = make_model_cases(src, SYNTHETIC_FLAG_CASES.get(name, []), work)
            _write(FIXTURES / "mixing_synthetic.json", {**meta, "models": models})
        if "smollm2" in which:
            data = make_model_cases(SMOLLM2_F16, SMOLLM2_FLAG_CASES, work)
            _write(FIXTURES / "mixing_smollm2.json", {**meta, "source": SMOLLM2_F16.name, "models": {"smollm2": data}})


if __name__ == "__main__":
    main(sys.argv[1:] or ["synthetic", "smollm2"])
