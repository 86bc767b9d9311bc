"""ggq.convert.mixing against llama.cpp.

ORACLE: golden tables written by llama.cpp's llama-quantize (bench/make_mixing_golden.py): for each model
(SmolLM2-135M F16 from convert_hf_to_gguf.py, and tiny synthetic llama GGUFs reaching other branches) and
each ftype / flag combination, the type of every tensor in llama-quantize's output and its general.file_type.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggq.convert.mixing import FTYPES, file_type_id, ftype_names, plan_types
from ggq.errors import GGQError

FIXTURES = Path(__file__).parent / "fixtures"


def _cases(filename: str) -> list:
    data = json.loads((FIXTURES / filename).read_text())
    codes = data["type_codes"]
    params = []
    for model_name, entry in data["models"].items():
        model = entry["model"]
        for case in entry["cases"]:
            flags = case["flags"]
            label = f"{model_name}-{case['ftype']}" + ("-" + "-".join(sorted(flags)) if flags else "")
            params.append(pytest.param(model, case, codes, id=label))
    return params


def _plan(model: dict, ftype: str, flags: dict) -> dict[str, str]:
    return plan_types(
        [(name, tuple(shape)) for name, shape, _ in model["tensors"]], ftype,
        n_layer=model["n_layer"], n_head=model["n_head"], n_head_kv=model["n_head_kv"],
        n_expert=model["n_expert"], output_type=flags.get("output_type"),
        embedding_type=flags.get("embedding_type"),
        tensor_types=[tuple(p) for p in flags.get("tensor_types", [])], pure=flags.get("pure", False),
        arch=model["arch"], source_types={name: src for name, _, src in model["tensors"]})


def _check(model: dict, case: dict, codes: dict) -> None:
    names = [t[0] for t in model["tensors"]]
    expected = {name: codes[c] for name, c in zip(names, case["types"], strict=True)}
    got = _plan(model, case["ftype"], case["flags"])
    assert list(got) == names
    wrong = {n: (got[n], expected[n]) for n in names if got[n] != expected[n]}
    assert not wrong, f"(ours, llama.cpp): {wrong}"
    assert file_type_id(case["ftype"]) == case["file_type"]


@pytest.mark.parametrize("model,case,codes", _cases("mixing_smollm2.json"))
def test_smollm2_matches_llama_quantize(model, case, codes):
    _check(model, case, codes)


@pytest.mark.parametrize("model,case,codes", _cases("mixing_synthetic.json"))
def test_synthetic_matches_llama_quantize(model, case, codes):
    _check(model, case, codes)


def test_golden_covers_every_supported_ftype():
    """Every ftype the CLI offers has a plain (no flags) golden table on every model."""
    for filename in ("mixing_smollm2.json", "mixing_synthetic.json"):
        data = json.loads((FIXTURES / filename).read_text())
        for entry in data["models"].values():
            plain = {c["ftype"] for c in entry["cases"] if not c["flags"]}
            assert plain == set(ftype_names()) == set(FTYPES)


def test_counters_follow_llama_processing_order_not_file_order():
    """llama-quantize walks tensors sorted by layer number; blk.10 comes after blk.2 (oracle: mha_tied_8 table
    reversed must give the same answer)."""
    data = json.loads((FIXTURES / "mixing_synthetic.json").read_text())
    model = data["models"]["mha_tied_8"]["model"]
    forward = _plan(model, "q4_k_m", {})
    model_reversed = {**model, "tensors": model["tensors"][::-1]}
    assert _plan(model_reversed, "q4_k_m", {}) == forward


def test_unknown_ftype_lists_choices():
    with pytest.raises(GGQError, match="q4_k_m"):
        plan_types([("output.weight", (8, 256))], "q4_k_x", 1, 1, 1)


@pytest.mark.parametrize("tensor_types,output_type", [
    ([("attn_q[", "q8_0")], None),  # bad regex
    ([("attn_q", "q9_9")], None),  # unknown type
    ([("", "q8_0")], None),  # empty pattern
    ([], "bogus"),
])
def test_bad_overrides_raise_ggq_error(tensor_types, output_type):
    with pytest.raises(GGQError):
        plan_types([("blk.0.attn_q.weight", (256, 256))], "q4_k_m", 1, 1, 1,
                   tensor_types=tensor_types, output_type=output_type)
