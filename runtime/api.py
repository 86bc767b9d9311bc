"""The Python API of the runtime.

    import ggq
    m = ggq.load("SmolLM2-135M-Instruct.Q4_1.gguf")
    m.chat([{"role": "user", "content": "What is the capital of France?"}], temperature=0)
    for piece in m.stream("Once upon a time", max_tokens=32): print(piece, end="")
    m.logits(m.tokenize("Hello"))          # float32 [n_tokens, n_vocab]
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.chat import render_chat, special_token_texts, template_for
from ggq.runtime.generate import generate_text
from ggq.runtime.model import Transformer, open_model
from ggq.runtime.sampling import Sampler, SamplerSettings
from ggq.runtime.tokenizer import Tokenizer


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads do not speed up these kernels)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            phys = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    cores.add((phys, line.split(":")[1].strip()))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


def set_threads(threads: int | None) -> int:
    """Numba's thread count for the kernels: `threads`, else the physical cores (capped at Numba's max)."""
    import numba
    n = threads if threads else physical_cores()
    if n < 1:
        raise GGQError(f"threads must be at least 1, got {n}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n


class Model:
    """A GGUF model opened for inference: tokenizer, chat template, weights and KV cache."""

    def __init__(self, transformer: Transformer, tokenizer: Tokenizer, chat_template: str | None = None):
        self.transformer = transformer
        self.tokenizer = tokenizer
        self._template_override = chat_template

    @property
    def metadata(self) -> dict:
        return self.transformer.gguf.metadata

    @property
    def has_chat_template(self) -> bool:
        return bool(self._template_override) or bool(self.metadata.get("tokenizer.chat_template"))

    # -- tokens -----------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`; add_special adds BOS/EOS where the model asks for them."""
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        """The text of token ids (special tokens left out)."""
        return self.tokenizer.decode([int(i) for i in ids])

    def logits(self, ids, last_only: bool = False) -> np.ndarray:
        """float32 logits [n_tokens, n_vocab] of every position of `ids` run from an empty context
        (or [n_vocab] of the last position with last_only)."""
        tf = self.transformer
        tf.cache_tokens = []
        out = tf.forward(list(ids), 0, all_logits=not last_only)
        tf.cache_tokens = [int(i) for i in ids]
        return out[0].copy() if last_only else out

    # -- generation -------------------------------------------------------------------------------
    def stream(self, prompt: str, max_tokens: int = 256, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
               seed: int | None = None) -> Iterator[str]:
        """Continue raw `prompt` text (special-token text in it is parsed), yielding text pieces."""
        ids = self.tokenize(prompt, add_special=True, parse_special=True)
        return self._stream_ids(ids, max_tokens, SamplerSettings(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
            seed=seed))

    def generate(self, prompt: str, max_tokens: int = 256, **sampling) -> str:
        """Continue raw `prompt` text; returns the generated text. Sampling options as in `stream`."""
        return "".join(self.stream(prompt, max_tokens=max_tokens, **sampling))

    def chat_stream(self, messages: list[dict], max_tokens: int = 512, **sampling) -> Iterator[str]:
        """Answer OpenAI-style messages ([{"role": "user", "content": "..."}]) through the chat
        template, yielding text pieces. Sampling options as in `stream`."""
        ids = self.chat_prompt_ids(messages)
        return self._stream_ids(ids, max_tokens, SamplerSettings(**_sampling(sampling)))

    def chat(self, messages: list[dict], max_tokens: int = 512, **sampling) -> str:
        """The assistant's answer to `messages` as one string."""
        return "".join(self.chat_stream(messages, max_tokens=max_tokens, **sampling))

    def chat_prompt(self, messages: list[dict]) -> str:
        """The prompt text the chat template makes of `messages` (generation prompt included)."""
        template = template_for(self.metadata, self._template_override)
        return render_chat(template, messages, add_generation_prompt=True, **special_token_texts(self.metadata))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.tokenize(self.chat_prompt(messages), add_special=True, parse_special=True)
        bos = self.tokenizer.bos_id
        if len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the template wrote BOS itself and the tokenizer added one more
        return ids

    def _stream_ids(self, ids: list[int], max_tokens: int, settings: SamplerSettings) -> Iterator[str]:
        if max_tokens < 0:
            raise GGQError(f"max_tokens must be >= 0, got {max_tokens}")
        return generate_text(self.transformer, self.tokenizer, ids, max_tokens, Sampler(settings))

    def close(self) -> None:
        """Release the memory map (the model cannot be used afterwards)."""
        self.transformer.gguf.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")


def _sampling(options: dict) -> dict:
    unknown = set(options) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
    return options


def load(path: str | os.PathLike, threads: int | None = None, ctx_size: int | None = None,
         chat_template: str | None = None, exact: bool = False, match_llamacpp: bool = False,
         device: str = "cpu") -> Model:
    """Open a GGUF model: `threads` for the kernels (default: physical cores), `ctx_size` positions of
    KV cache (default: the model's training context, at most 4096), `chat_template` to override the
    model's own. Prompts always run with float32 activations; generated tokens run with activations
    rounded to 8-bit blocks and integer dot products, as llama.cpp computes them, unless `exact`.
    `match_llamacpp` runs every token, prompt ones included, through llama.cpp's own CPU arithmetic
    (x86 AVX-512 build: 8-bit activations, F16 KV cache with flash attention, ggml's norm, rope and
    SiLU), so that greedy output is llama.cpp's bit for bit; prompts are then fed a token at a time.
    `device="cuda"` computes on an NVIDIA GPU (runtime/cuda; float32 activations, as exact)."""
    set_threads(threads)
    tf = open_model(path, ctx_size=ctx_size, exact=exact, match_llamacpp=match_llamacpp, device=device)
    try:
        tokenizer = Tokenizer.from_metadata(tf.gguf.metadata)
    except BaseException:
        tf.gguf.close()
        raise
    return Model(tf, tokenizer, chat_template)
