"""SIGINT, SIGTERM and SIGHUP during `ggq convert`: non-zero exit, one 'ggq: interrupted' line, no
traceback, no output file and no hidden `.NAME.gguf.tmp-*` file beside it.

ORACLE: the CLI contract (no partial output; exit 128 + signal number as a shell reports a killed
command). Deterministic: the child is ggq's own `main(["convert", ...])` whose first quantize call
announces itself and then blocks reading stdin, so the signal always lands while the temp file is
open and half written; the test waits for that temp file to exist before signalling.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

import tiny_checkpoints as tiny

# ggq's CLI, with its first quantize call blocked until a signal arrives (stdin stays open, empty)
CHILD = """
import signal
import sys
import ggq.quants

# as a shell starts a foreground command: under nohup SIGHUP arrives ignored, and in a job started with
# `&` without job control SIGINT does; ggq rightly keeps an ignored signal so, which would leave nothing
# to test
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)

def blocked_quantize(*args, **kwargs):
    sys.stdin.read()

ggq.quants.quantize = blocked_quantize
from ggq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(predicate, what: str, proc, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"ggq exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_during_convert_leaves_nothing(tmp_path, signum):
    folder = tmp_path / "ckpt"
    tiny.write_checkpoint(folder, "llama")
    out = tmp_path / "out.gguf"
    argv = ["convert", str(folder), "--type", "q8_0", "-o", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-P", "-c", CHILD, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    temps = lambda: list(tmp_path.glob(".out.gguf.tmp-*"))  # noqa: E731
    _wait_for(temps, "the temp file to appear", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err == f"ggq: interrupted ({signum.name})\n", err
    assert "Traceback" not in err
    assert not out.exists()
    assert not temps()
