"""runtime/tune.py: kernel shapes measured where the model runs, cached per CPU, off with GGQ_TUNE=0.

Oracles: the untuned decode step (its kernels are checked bit for bit against numpy transcriptions of
ggml in test_runtime_dot.py): a tuned step must give the same logits, bit for bit, since shapes change
speed only; the candidate table of kernels/shapes.py; the cache file's JSON as written to disk.
"""
import json

import numpy as np
import pytest

from ggq.cli import main
from ggq.runtime import tune
from ggq.runtime.api import set_threads
from ggq.runtime.kernels.shapes import CANDIDATES, FAMILY, PREFETCH_CANDIDATES, UNTUNED, UNTUNED_PREFETCH
from ggq.runtime.kernels.step import KINDS
from ggq.runtime.model import open_model

TOKENS = [1, 504, 2143, 30, 9]


@pytest.fixture
def tune_cache(tmp_path, monkeypatch):
    """A fresh tuning cache (only the JSON file; Numba's compiled code stays where it is). The
    steadiness check is off (a loaded test machine is not steady, and these tests are about what is
    chosen and cached); test_a_machine_that_was_not_steady... turns it back on."""
    monkeypatch.setattr(tune, "DISTURBED", float("inf"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GGQ_TUNE", raising=False)
    set_threads(1)
    return tmp_path / "ggq-tune.json"


def _decode(path, tokens):
    """Logits of each token decoded in turn, and the shape column the step ran with."""
    tf = open_model(path, ctx_size=64)
    try:
        logits = np.stack([tf.decode(t, pos)[0].copy() for pos, t in enumerate(tokens)])
        return logits, tf.compiled_step().mats[:, 4].copy(), tf.compiled_step().mats
    finally:
        tf.gguf.close()


def test_tuning_off_keeps_the_untuned_shapes_and_writes_nothing(q4_1_gguf, tune_cache, monkeypatch):
    monkeypatch.setenv("GGQ_TUNE", "0")
    _, shapes, mats = _decode(q4_1_gguf, TOKENS[:1])
    assert list(shapes) == [UNTUNED[FAMILY[KINDS[k]]] for k in mats[:, 3]]
    assert np.all(mats[:, tune.PREFETCH] == UNTUNED_PREFETCH)
    assert not tune_cache.exists()


def test_tuned_shapes_are_candidates_cached_and_change_no_bits(q4_1_gguf, tune_cache, monkeypatch):
    monkeypatch.setenv("GGQ_TUNE", "0")
    untuned, _, _ = _decode(q4_1_gguf, TOKENS)
    monkeypatch.delenv("GGQ_TUNE")
    tuned, shapes, mats = _decode(q4_1_gguf, TOKENS)
    assert np.array_equal(tuned, untuned)  # bit for bit: a shape changes speed only

    section = json.loads(tune_cache.read_text())[tune.cpu_id()]["1"]
    for m in range(mats.shape[0]):
        family = FAMILY[KINDS[mats[m, 3]]]
        assert shapes[m] in CANDIDATES[family]
        if len(CANDIDATES[family]) > 1:  # measured: every candidate timed, the choice recorded
            record = section[tune.matrix_key(mats, m)]
            assert record["shape"] == shapes[m]
            assert sorted(int(c) for c in record["times"]) == sorted(CANDIDATES[family])
    prefetch = section[tune.prefetch_key(mats)]  # one distance for the whole step, every candidate timed
    assert sorted(int(c) for c in prefetch["times"]) == sorted(PREFETCH_CANDIDATES)
    assert np.all(mats[:, tune.PREFETCH] == prefetch["shape"])


def test_a_second_model_with_the_same_keys_measures_nothing(q4_1_gguf, tune_cache, capsys):
    assert main(["tune", str(q4_1_gguf), "-t", "1"]) == 0
    first = capsys.readouterr().out
    assert "timing " in first
    cached = json.loads(tune_cache.read_text())
    assert main(["tune", str(q4_1_gguf), "-t", "1"]) == 0
    again = capsys.readouterr().out
    assert "timing " not in again  # every key came from the cache
    assert json.loads(tune_cache.read_text()) == cached
    assert main(["tune", "--show"]) == 0
    shown = capsys.readouterr().out
    for key in cached[tune.cpu_id()]["1"]:
        assert key in shown


def test_tune_of_a_file_that_is_not_gguf_is_one_clear_line(tmp_path, tune_cache, capsys):
    """The CLI's documented error form: one `ggq: <file>: ...` line on stderr, exit 1, nothing on stdout."""
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model\n")
    assert main(["tune", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ggq: {bad}: ") and err.count("\n") == 1
    assert not tune_cache.exists()


def test_a_machine_that_was_not_steady_chooses_and_caches_nothing(q4_1_gguf, tune_cache, monkeypatch):
    """Steps timed 50x slower while the candidates run (a neighbour took the cores): every key is left
    untuned and uncached, so the next run measures again instead of keeping choices made from noise."""
    calls = {"n": 0}

    def neighbour_during_rounds(step, pos):
        calls["n"] += 1
        return 0.250 if calls["n"] % 7 not in (1, 0) else 0.005  # only some reference steps are quick

    monkeypatch.setattr(tune, "_time_steps", neighbour_during_rounds)
    monkeypatch.setattr(tune, "_warm_up", lambda step: None)
    monkeypatch.setattr(tune, "DISTURBED", 0.25)
    _, shapes, mats = _decode(q4_1_gguf, TOKENS[:1])
    assert list(shapes) == [UNTUNED[FAMILY[KINDS[k]]] for k in mats[:, 3]]
    section = json.loads(tune_cache.read_text()).get(tune.cpu_id(), {}).get("1", {}) if tune_cache.exists() else {}
    assert not any(key in section for key in (tune.matrix_key(mats, m) for m in range(mats.shape[0])))


def test_steps_are_timed_over_a_short_attention_span_and_the_windows_restored(q4_1_gguf, tune_cache, monkeypatch):
    """The tuner times steps at the spare last position; there each layer attends over at most
    TIMING_WINDOW positions (the kernels' differences, not a whole context's attention), and the
    model's own windows (the file says none: no sliding-window layers) are back afterwards."""
    seen = []

    def record(step, pos):
        seen.append(step.rope[2].copy())
        return 0.005

    monkeypatch.setattr(tune, "_time_steps", record)
    monkeypatch.setattr(tune, "_warm_up", lambda step: None)
    tf = open_model(q4_1_gguf, ctx_size=1024)
    try:
        step = tf.compiled_step()
        assert seen and all((w == tune.TIMING_WINDOW).all() for w in seen)
        assert not tf.gguf.metadata.get("llama.attention.sliding_window")
        assert (step.rope[2] == 0).all()
    finally:
        tf.gguf.close()
