"""Termination signals as one exception, so every clean-up path that handles Ctrl-C handles them too.

Python turns SIGINT into KeyboardInterrupt, and ggq's writers already undo partial work on it (the
GGUF writer removes its temp file on any BaseException). SIGTERM and SIGHUP, left to their default,
kill the process at once and nothing is undone: hidden `.NAME.gguf.tmp-*` files stayed behind.
`install()` makes them raise `Interrupted`, a KeyboardInterrupt, at the point the interpreter is at,
so the same `except`/`finally` blocks run and the CLI exits the way the signal asks (128 + number).
"""
from __future__ import annotations

import signal
import threading

# the signals that ask a command to stop; SIGINT is among them so all three take one path
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A terminating signal arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through Interrupted (main thread only, as Python requires).
    A signal the parent set to be ignored (nohup's SIGHUP) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; a caller in another thread keeps its own handling
    for s in TERMINATING:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _raise_interrupted)
