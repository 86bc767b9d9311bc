"""Interactive chat for `ggq run MODEL` (no -p): streaming answers, multi-line input, slash commands.

    >>> Hello!                      one line is one message
    >>> \"\"\"                          a line of three quotes starts and ends a multi-line message
    >>> /set temp 0.7               change a sampling setting (temp, top_k, top_p, min_p, repeat_penalty,
                                    seed, max_tokens) or the system prompt (/set system You are ...)
    >>> /clear                      forget the conversation
    >>> /bye                        leave (Ctrl-D too)

Ctrl-C while an answer streams stops that answer and keeps the session; at the prompt it only reminds
how to leave, like Ollama.
"""
from __future__ import annotations

import math
import signal
import sys
from typing import Callable, TextIO

from ggq.errors import GGQError

PROMPT, CONTINUE = ">>> ", "... "
HELP = """Commands:
  /set temp|top_k|top_p|min_p|repeat_penalty|seed|max_tokens VALUE   change a sampling setting
  /set system TEXT   set the system prompt (and clear the conversation)
  /show              show the settings
  /clear             forget the conversation
  /bye               leave
Start and end a multi-line message with a line of three double quotes (\"\"\")."""

def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _seed(text: str) -> int | None:
    return None if text.lower() in ("none", "random") else int(text)


# /set names -> (keyword of Model.chat_stream, parser raising ValueError on a bad value)
SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "temp": ("temperature", _finite), "temperature": ("temperature", _finite), "top_k": ("top_k", int),
    "top_p": ("top_p", _finite), "min_p": ("min_p", _finite), "repeat_penalty": ("repeat_penalty", _positive),
    "seed": ("seed", _seed), "max_tokens": ("max_tokens", _count),
}


class ChatSession:
    """The conversation and the sampling settings of one interactive session."""

    def __init__(self, model, settings: dict, system: str | None = None):
        self.model = model
        self.settings = dict(settings)
        self.system = system
        self.messages: list[dict] = []

    def clear(self) -> None:
        self.messages = []

    def conversation(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages


def read_message(read_line: Callable[[str], str]) -> str:
    """One user message: a line, or the lines between two lines of \"\"\". EOFError at end of input."""
    first = read_line(PROMPT)
    if first.strip() != '"""':
        return first
    lines = []
    while (line := read_line(CONTINUE)).strip() != '"""':
        lines.append(line)
    return "\n".join(lines)


def run_command(session: ChatSession, line: str, out: TextIO) -> bool:
    """Carry out a /command. Returns False when the session should end."""
    words = line.split(maxsplit=2)
    name = words[0].lower()
    if name in ("/bye", "/exit", "/quit"):
        return False
    if name == "/clear":
        session.clear()
        out.write("Cleared the conversation.\n")
    elif name == "/show":
        shown = {**session.settings, "system": session.system}
        out.write("".join(f"  {k} = {v}\n" for k, v in shown.items()))
    elif name == "/set" and len(words) == 3 and words[1] == "system":
        session.system = words[2]
        session.clear()
        out.write("Set the system prompt.\n")
    elif name == "/set" and len(words) == 3 and words[1].lower() in SETTINGS:
        key, parse = SETTINGS[words[1].lower()]
        try:
            session.settings[key] = parse(words[2])
            out.write(f"Set {key} to {session.settings[key]}.\n")
        except ValueError:
            out.write(f"Not a valid value for {words[1]}: {words[2]}\n")
    else:
        out.write(HELP + "\n")
    return True


class _CtrlC:
    """While an answer streams, Ctrl-C (SIGINT) only sets a flag that the loop reads between pieces.
    A KeyboardInterrupt raised wherever the interpreter happens to be is unreliable: raised inside a
    finalizer or a callback (Numba loads and links cached code between tokens) it is printed as
    "Exception ignored" and lost, and the answer runs on. A flag cannot be lost. Main thread only."""

    def __init__(self):
        self.pressed = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.pressed = True

    def __enter__(self) -> _CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def answer(session: ChatSession, text: str, out: TextIO) -> None:
    """Stream the model's answer to `text`; Ctrl-C stops it, keeping what was said so far in the
    conversation. A GGQError (template, context full) is printed and the turn is dropped."""
    pieces: list[str] = []
    stream = None
    with _CtrlC() as ctrl_c:
        try:
            stream = session.model.chat_stream(session.conversation() + [{"role": "user", "content": text}],
                                               **session.settings)
            for piece in stream:
                pieces.append(piece)
                out.write(piece)
                out.flush()
                if ctrl_c.pressed:
                    break
        except GGQError as e:
            out.write(f"\nggq: {e}\n\n")
            return
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # a generator stopped at a yield: the KV cache already holds what it ran
        if ctrl_c.pressed:
            out.write(" [stopped]")
    session.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces)}]
    out.write("\n\n")
    out.flush()


def chat_loop(session: ChatSession, read_line: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """Read messages until /bye or end of input; answer each one."""
    out.write("Type a message, /help for commands, /bye to leave.\n")
    while True:
        try:
            text = read_message(read_line)
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:
            out.write("\nUse /bye or Ctrl-D to leave.\n")
            out.flush()
            continue
        if not text.strip():
            continue
        try:
            if text.lstrip().startswith("/"):
                if not run_command(session, text.strip(), out):
                    return
                continue
            answer(session, text, out)
        except KeyboardInterrupt:  # a second Ctrl-C while the first one is being handled
            out.write("\nUse /bye or Ctrl-D to leave.\n")
