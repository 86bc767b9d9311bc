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

import sys
from typing import Callable, TextIO

PROMPT, CONTINUE = ">>> ", "... "
HELP = """Commands:
  /set temp|top_k|top_p|min_p|repeat_penalty|seed|max_tokens VALUE   change a sampling setting
  /set system TEXT   set the system prompt (and clear the conversation)
  /show              show the settings
  /clear             forget the conversation
  /bye               leave
Start and end a multi-line message with a line of three double quotes (\"\"\")."""

# /set names -> (keyword of Model.chat_stream, parser)
SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "temp": ("temperature", float), "temperature": ("temperature", float), "top_k": ("top_k", int),
    "top_p": ("top_p", float), "min_p": ("min_p", float), "repeat_penalty": ("repeat_penalty", float),
    "seed": ("seed", int), "max_tokens": ("max_tokens", int),
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


def answer(session: ChatSession, text: str, out: TextIO) -> None:
    """Stream the model's answer to `text`; Ctrl-C stops it, keeping what was said so far."""
    session.messages.append({"role": "user", "content": text})
    pieces: list[str] = []
    try:
        for piece in session.model.chat_stream(session.conversation(), **session.settings):
            pieces.append(piece)
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [stopped]")
    out.write("\n\n")
    session.messages.append({"role": "assistant", "content": "".join(pieces)})


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
            continue
        if not text.strip():
            continue
        if text.lstrip().startswith("/"):
            if not run_command(session, text.strip(), out):
                return
            continue
        answer(session, text, out)
