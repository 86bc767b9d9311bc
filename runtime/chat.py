"""Chat templates: render a conversation with the model's Jinja template, as transformers'
apply_chat_template does (sandboxed environment, trim_blocks/lstrip_blocks, raise_exception, strftime_now,
tojson). Templates come from GGUF files and are treated as hostile: the sandbox refuses unsafe attribute
access and every template error becomes a GGQError.
"""
from __future__ import annotations

import json
from datetime import datetime

from ggq.errors import GGQError

TEMPLATE_KEY = "tokenizer.chat_template"


def _raise_exception(message: str):
    raise _TemplateRaised(message)


class _TemplateRaised(Exception):
    """raise_exception() called by the template itself."""


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # transformers' tojson: no HTML escaping (unlike jinja2's own filter).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment():
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj, attribute):
            # The stock sandbox returns an Undefined that only fails when used further; a template that
            # reaches for internals at all is refused outright.
            raise jinja2.exceptions.SecurityError(f"access to attribute {attribute!r} of "
                                                  f"{type(obj).__name__!r} object is unsafe")

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], undefined=jinja2.Undefined)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", **extra) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
    import jinja2

    try:
        compiled = _environment().from_string(template)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except _TemplateRaised as e:
        raise GGQError(f"chat template: {e}") from None
    except jinja2.exceptions.SecurityError as e:
        raise GGQError(f"chat template: unsafe operation refused: {e}") from None
    except jinja2.TemplateError as e:
        raise GGQError(f"chat template: {type(e).__name__}: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
            RecursionError) as e:
        raise GGQError(f"chat template: {type(e).__name__}: {e}") from None


def template_for(metadata: dict, override: str | None = None) -> str:
    """The chat template to use: `override` if given, else the model's tokenizer.chat_template."""
    if override:
        return override
    template = metadata.get(TEMPLATE_KEY)
    if not isinstance(template, str) or not template.strip():
        raise GGQError("model has no chat template; pass --chat-template")
    return template


def special_token_texts(metadata: dict) -> dict[str, str]:
    """bos_token / eos_token strings for render_chat, from the GGUF special token ids."""
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    out = {}
    for name in ("bos", "eos"):
        tid = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if isinstance(tid, int) and 0 <= tid < len(tokens):
            out[f"{name}_token"] = tokens[tid]
    return out
