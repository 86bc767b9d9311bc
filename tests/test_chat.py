"""ggq.runtime.chat. ORACLE: transformers' apply_chat_template, recorded in tests/fixtures/chat_golden.json by
tests/fixtures/make_chat_golden.py (the shared model's own template, read here from the llama.cpp-made GGUF,
and a multi-line template exercising trim_blocks/lstrip_blocks, tojson, loop controls)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggq.errors import GGQError
from ggq.gguf_read import open_gguf
from ggq.runtime.chat import render_chat, special_token_texts, template_for

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "chat_golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model_metadata(q4_1_gguf) -> dict:
    with open_gguf(q4_1_gguf) as f:
        return {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['template']}-{len(c['messages'])}-"
                                                               f"{c['add_generation_prompt']}")
def test_matches_transformers(case, model_metadata):
    if case["template"] == "model":
        template = template_for(model_metadata)
    else:
        template = template_for(model_metadata, GOLDEN["multiline_template"])
    tokens = special_token_texts(model_metadata)
    assert tokens == {"bos_token": GOLDEN["bos_token"], "eos_token": GOLDEN["eos_token"]}
    got = render_chat(template, case["messages"], case["add_generation_prompt"], **tokens)
    assert got == case["expected"]


def test_missing_template():
    with pytest.raises(GGQError, match="model has no chat template; pass --chat-template"):
        template_for({})
    assert template_for({}, "{{ 1 }}") == "{{ 1 }}"


@pytest.mark.parametrize("template", [
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__ }}",
    "{% set x = messages.append(1) %}{{ x }}",          # immutable sandbox: no mutation of inputs
    "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
])
def test_hostile_templates_are_refused(template):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(GGQError, match="^chat template: "):
        render_chat(template, messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_template_errors_become_ggqerror():
    with pytest.raises(GGQError, match="chat template: only user and assistant"):
        render_chat("{{ raise_exception('only user and assistant') }}", [])
    with pytest.raises(GGQError, match="chat template: TemplateSyntaxError"):
        render_chat("{% for %}", [])
    with pytest.raises(GGQError, match="chat template: "):
        render_chat("{{ 1 / 0 }}", [])


def test_helpers():
    assert render_chat("{{ {'a': 'é'} | tojson }}", []) == '{"a": "é"}'
    assert render_chat("{{ strftime_now('%Y') | length }}", []) == "4"
