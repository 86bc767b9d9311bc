"""`ggq run MODEL` driven through a pseudo-terminal, as a person at a terminal would use it.

Oracles: the acceptance answer "Paris" (what transformers' float model answers for this question, see
test_runtime_api.py; so the runs that ask it use --exact, float32 activations, as that model does); the documented behaviour of the interactive loop (runtime/repl.py docstring:
\"\"\" multi-line input, /set and /clear acknowledged, Ctrl-C stops an answer with "[stopped]" and keeps
the session, /bye exits 0); the terminal itself turning a typed Ctrl-C (byte 0x03) into SIGINT.
"""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

QUESTION = "What is the capital of France?"
PROMPT = b">>> "


class Terminal:
    """A child process on the slave side of a pty (its controlling terminal); we hold the master side."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        pid, fd = pty.fork()
        if pid == 0:  # child: exec at once (nothing else is safe after fork)
            try:
                # as a shell starts a foreground command: a runner that started this suite in the
                # background (`cmd &` without job control) left SIGINT ignored, which ggq, like Python,
                # keeps so; a terminal's Ctrl-C would then do nothing at the prompt
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = b""  # everything the terminal showed
        self.mark = 0      # start of what the last expect() has not consumed yet
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False at end of output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.output += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float) -> bytes:
        """Wait for `pattern` (a regex) after the mark; returns the output up to and including it."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output, self.mark)
            if found:
                seen, self.mark = self.output[self.mark:found.end()], found.end()
                return seen
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)):
                pytest.fail(f"no {pattern!r} within {timeout}s; terminal showed:\n"
                            f"{self.output.decode('utf-8', 'replace')}")

    def send_line(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\r")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float) -> int:
        """The exit code, reading output meanwhile (a child blocked on a full pty would never exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            self._read(0.1)
        pytest.fail(f"ggq still running after {timeout}s; terminal showed:\n"
                    f"{self.output.decode('utf-8', 'replace')}")

    def wait_reading(self, timeout: float = 30) -> None:
        """Until the child's main thread sleeps in select/poll, waiting for a key: the kernel's record
        of the blocked system call (/proc), not a guess at how long the child needs to get there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _blocked_in_select(self.pid):
                return
            self._read(0.02)
        pytest.fail(f"ggq never waited for input within {timeout}s")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


# select/pselect6/poll/ppoll system call numbers (x86_64; aarch64 has only pselect6 and ppoll)
_WAIT_SYSCALLS = {"x86_64": {7, 23, 270, 271}, "aarch64": {72, 73}}


def _blocked_in_select(pid: int) -> bool:
    """Whether thread `pid` sleeps in a select-family system call (/proc/PID/syscall: number first)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/syscall") as f:
            number = f.read().split()[0]
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "S" and number.isdigit() and int(number) in _WAIT_SYSCALLS.get(os.uname().machine, ())


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TERM="dumb", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def _answer_text(seen: bytes) -> str:
    return seen.decode("utf-8", "replace").replace("\r", "")


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels(q4_1_gguf):
    """Compile (or load) the model's kernels into Numba's on-disk cache here, so that the timeouts below
    measure the chat loop, not a first compile of the decode step (tens of seconds on a fresh machine)."""
    import ggq
    with ggq.load(q4_1_gguf, threads=1, ctx_size=1024) as m:
        m.generate("Hi", max_tokens=2, temperature=0)


@pytest.fixture
def terminal(q4_1_gguf):
    argv = [sys.executable, "-P", "-m", "ggq", "run", str(q4_1_gguf), "--temp", "0", "-n", "24",
            "--threads", "1", "--ctx-size", "1024", "--exact"]
    term = Terminal(argv, _env())
    yield term
    term.close()


def _ask(t: Terminal, question: str, timeout: float = 30) -> str:
    """Send one line; the answer is what the terminal shows after its echo, up to the next prompt."""
    t.send_line(question)
    t.expect(re.escape(question.encode()) + rb"\r\n", 10)
    return _answer_text(t.expect(PROMPT, timeout))


def _command(t: Terminal, line: str, acknowledgement: bytes) -> None:
    t.send_line(line)
    t.expect(acknowledgement, 10)
    t.expect(PROMPT, 10)


def test_interactive_chat_through_a_terminal(terminal):
    t = terminal
    t.expect(rb"/bye to leave\.", 300)  # a fresh Numba cache compiles the decode step before the banner
    t.expect(PROMPT, 30)

    assert "Paris" in _ask(t, QUESTION)

    # Multi-line message: continuation prompts while inside the quotes, one answer at the end.
    t.send_line('"""')
    for line in ("Repeat after me:", "hello world"):
        t.expect(rb"\.\.\. ", 10)
        t.send_line(line)
    t.expect(rb"\.\.\. ", 10)
    reply = _ask(t, '"""')
    assert re.search(r"\w", reply) and "..." not in reply, reply

    _command(t, "/set temp 0.7", rb"Set temperature to 0\.7\.")
    _command(t, "/set temp 0", rb"Set temperature to 0\.0\.")
    _command(t, "/set max_tokens 400", rb"Set max_tokens to 400\.")

    # Ctrl-C as soon as the long answer starts: it stops with [stopped] and the prompt comes back.
    t.send_line("Write a long story about a dragon.")
    t.expect(rb"dragon\.\r\n", 10)
    t.expect(rb"\w", 30)           # the first word of the answer
    started = time.monotonic()
    t.send(b"\x03")
    stopped = _answer_text(t.expect(PROMPT, 30))
    assert "[stopped]" in stopped
    assert time.monotonic() - started < 20  # 400 tokens would take far longer
    assert "Traceback" not in t.output.decode("utf-8", "replace")

    # The session goes on, with the partial story in the conversation (KV cache reused after the stop).
    _command(t, "/set max_tokens 24", rb"Set max_tokens to 24\.")
    assert "Paris" in _ask(t, QUESTION)

    _command(t, "/clear", rb"Cleared the conversation\.")
    # A person presses Ctrl-C some time after the prompt appears. Sent within microseconds of it, the
    # signal can land before CPython's readline enters select() and is then only noticed at the next
    # keystroke (a CPython race, seen here on a loaded machine), so wait until ggq waits for input.
    t.wait_reading()
    t.send(b"\x03")                # Ctrl-C at the prompt: a reminder, not an exit
    t.expect(rb"Use /bye or Ctrl-D to leave\.", 10)
    t.send_line("/bye")
    assert t.wait(20) == 0
    assert "Traceback" not in t.output.decode("utf-8", "replace")


def test_ctrl_d_at_the_prompt_exits_0(terminal):
    terminal.expect(PROMPT, 300)  # after the decode step compiles (a fresh Numba cache: tens of seconds)
    terminal.send(b"\x04")
    assert terminal.wait(20) == 0


def test_one_shot_prints_only_the_answer(q4_1_gguf):
    """-p: stdout is the answer alone (no banner, prompt or progress), stderr is empty."""
    argv = [sys.executable, "-P", "-m", "ggq", "run", str(q4_1_gguf), "-p", QUESTION, "--temp", "0",
            "-n", "16", "--threads", "1", "--exact"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert ">>>" not in done.stdout and "/bye" not in done.stdout
    assert done.stdout.strip().count("\n") <= 1  # one short answer


def _copy_without_template(src_path, dst_path) -> None:
    from ggq.gguf_read import open_gguf
    from ggq.gguf_write import Typed, TensorSpec, write_gguf

    with open_gguf(src_path) as src:
        metadata = {k: Typed(*src.metadata_types[k][:1], v, src.metadata_types[k][1])
                    for k, v in src.metadata.items() if k != "tokenizer.chat_template"}
        specs = [TensorSpec(t.name, t.shape, t.qtype) for t in src.tensors.values()]
        write_gguf(dst_path, metadata, specs, (src.raw(t.name) for t in specs), alignment=src.alignment)


def test_model_without_chat_template_is_one_clear_line(q4_1_gguf, tmp_path):
    """Interactive chat needs a template: a model without one gets a single `ggq:` line on stderr and
    exit 1; --chat-template FILE supplies one (read from the file)."""
    bare = tmp_path / "bare.gguf"
    _copy_without_template(q4_1_gguf, bare)
    argv = [sys.executable, "-P", "-m", "ggq", "run", str(bare), "--threads", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60, input="hi\n")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("ggq: ") and done.stderr.count("\n") == 1, done.stderr
    assert "chat template" in done.stderr and "Traceback" not in done.stderr

    template = tmp_path / "chatml.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    argv += ["--chat-template", str(template), "--temp", "0", "-n", "16", "--exact"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60, input=QUESTION + "\n")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_context_too_large_for_memory_is_one_clear_line(q4_1_gguf):
    """-c 100000000 asks for terabytes of KV cache: the mmap fails, and that is the user's input, so one
    `ggq:` line naming the context size, exit 1, no traceback (oracle: the CLI's documented error form)."""
    argv = [sys.executable, "-P", "-m", "ggq", "run", str(q4_1_gguf), "-p", "Hi", "-n", "1", "-c", "100000000",
            "--threads", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("ggq: ") and done.stderr.count("\n") == 1, done.stderr
    assert "100000000" in done.stderr and "Traceback" not in done.stderr
