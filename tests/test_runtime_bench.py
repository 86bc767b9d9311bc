"""`ggq bench` (runtime/bench.py) on the shared Q4_1 GGUF: llama-bench's test names and fields, numbers
that are consistent with the clock, and one-line errors for bad input."""
from __future__ import annotations

import json
import time

from ggq.cli import main as cli_main


def test_bench_json_has_llama_bench_tests(q4_1_gguf, capsys):
    start = time.perf_counter()
    assert cli_main(["bench", str(q4_1_gguf), "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--json"]) == 0
    elapsed = time.perf_counter() - start
    result = json.loads(capsys.readouterr().out)
    assert [s["test"] for s in result["speeds"]] == ["pp16", "tg4"]
    assert result["file_bytes"] == q4_1_gguf.stat().st_size and result["threads"] == 1
    for s in result["speeds"]:
        assert len(s["samples"]) == 2 and abs(s["tokens_per_s"] - sum(s["samples"]) / 2) < 1e-6 * s["tokens_per_s"]
        n = int(s["test"][2:])
        assert n / s["tokens_per_s"] < elapsed  # each timed run took less than the whole command
    assert 0 < result["load_s"] <= result["first_token_s"] < elapsed


def test_bench_text_output(q4_1_gguf, capsys):
    assert cli_main(["bench", str(q4_1_gguf), "-p", "0", "-n", "2", "-r", "1", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert "tg2" in out and "pp" not in out.split("\n", 2)[2]


def test_bench_bad_input_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.gguf"
    assert cli_main(["bench", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ggq: ") and "missing.gguf" in err[0]
    assert cli_main(["bench", str(missing), "-r", "0"]) == 1
    assert capsys.readouterr().err.startswith("ggq: bench:")
