"""Kernel shapes measured on the machine the model runs on (`ggq tune`, and at first use).

A decode kernel's best shape (kernels/shapes.py: rows per step of the legacy blocks, rows per work item
of the k-quants) depends on the core: 32 interleaved rows won on an Intel Xeon and lost 3-5x on an
AMD Zen 5. So ggq measures instead of guessing. The unit measured is the whole decode step, since that
is what a user waits for and it keeps every cache and prefetcher effect of the real run (a matrix
timed alone sits in the L2; in decode it streams from memory behind all the others). Matrices are
grouped by key (type, rows, bytes per row); for each key, largest first, every candidate shape is
timed with the other keys at their current best, in interleaved rounds, and kept only if it beats
the current one by more than MARGIN (run-to-run noise here is a few per cent: a tie keeps the untuned
shape). The shapes are timed at a middle prefetch distance (shapes.SHAPE_TIMING_PREFETCH); after them,
one software prefetch distance for the whole step is chosen the same way (shapes.PREFETCH_CANDIDATES). Every choice gives the same bits, so tuning changes speed only.

Results are cached per CPU (model name, Numba's target CPU and the integer-dot forms compiled), thread
count and key, in ggq-tune.json beside Numba's cache (NUMBA_CACHE_DIR, see runtime/__init__.py); a
later model with the same keys tunes nothing. GGQ_TUNE=0 turns tuning off (the untuned shapes).
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from ggq import tune_cache
from ggq.runtime.kernels.shapes import (CANDIDATES, FAMILY, PREFETCH_CANDIDATES, SHAPE_TIMING_PREFETCH, UNTUNED,
                                       UNTUNED_PREFETCH)
from ggq.runtime.kernels.step import KINDS

DISTURBED = 0.25       # reference steps further apart than this: the machine was not steady (_steady)
MARGIN = 0.03          # a candidate must be this much faster than the current shape to replace it
ROUNDS = 3             # interleaved rounds per key; each candidate's best round counts
MIN_ROUND_S = 0.02     # each timed round runs whole decode steps for at least this long
WARM_UP_S = 5.0        # at most this long of untimed steps before the first measurement
# Steps are timed at the spare last position (nothing real is cached there), where attention would read
# the whole context: at ctx 4096 that was half of a 135M Q4_0 step (8 ms timed vs 4.4 ms a token in
# tg128), and at the 1.1B shape's 2048 every Q4_K candidate timed 27.0-28.3 ms, the kernels' differences
# lost under it. So each layer attends over this many positions while tuning, as in a short chat turn.
TIMING_WINDOW = 128
KIND, SHAPE, PREFETCH = 3, 4, 5   # columns of the decode step's matrix table (decode._matrix_table)
PREFETCH_KEY = "prefetch distance"  # the whole step's prefetch distance, cached per model beside the shapes


cache_path, enabled = tune_cache.cache_path, tune_cache.enabled


def cpu_id() -> str:
    """What the choice depends on: the CPU model, the target Numba compiles for, the dot forms."""
    from ggq.runtime.kernels.vecir_isa import describe
    model = tune_cache.cpuinfo()[0] or platform.processor() or platform.machine()
    return f"{model} | {describe()}"


def matrix_key(mats: np.ndarray, m: int) -> str:
    return f"{KINDS[mats[m, KIND]]} {mats[m, 1]}x{mats[m, 2]}B"


def _section(data: dict, threads: int) -> dict:
    return data.setdefault(cpu_id(), {}).setdefault(str(threads), {})


def cached_section() -> dict:
    """{threads: {key: {"shape": n, "times": {shape: seconds per step}}}} measured on this CPU."""
    return tune_cache.read().get(cpu_id(), {})


def untuned_shapes(mats: np.ndarray) -> np.ndarray:
    return np.array([UNTUNED[FAMILY[KINDS[k]]] for k in mats[:, KIND]], np.int64)


def _time_steps(step, pos: int) -> float:
    """Seconds per decode step, over whole steps for at least MIN_ROUND_S."""
    n, start = 0, time.perf_counter()
    while True:
        step.run(pos)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_ROUND_S and n >= 2:
            return elapsed / n


def _warm_up(step) -> None:
    """Run steps until they stop getting faster (by 10 %), at most WARM_UP_S. A file the page cache let
    go (or memory the VM handed back to its host) is slow for the first passes: on this machine a
    1.1 GB model's first seconds of steps ran 3x slower, and timed, that chose a wrong distance."""
    start, last = time.perf_counter(), float("inf")
    while time.perf_counter() - start < WARM_UP_S:
        now = _time_steps(step, step.spare_position)
        if now > 0.9 * last:
            return
        last = now


def _best_of(step, rows: np.ndarray, column: int, candidates, untuned: int,
             fastest: list[float]) -> tuple[int, dict] | None:
    """Best value of step.mats[rows, column] among candidates, timed in interleaved rounds; a value
    replaces the untuned one only if it is faster by more than MARGIN. None, with the column as it was,
    if the machine was not steady meanwhile (_steady). fastest[0]: the fastest step this tuning has timed
    as the table then was (each choice only makes the step faster), updated here."""
    mats, pos = step.mats, step.spare_position
    entry = mats[rows, column].copy()
    before = _time_steps(step, pos)
    best = {c: float("inf") for c in candidates}
    for _ in range(ROUNDS):
        for c in candidates:
            mats[rows, column] = c
            best[c] = min(best[c], _time_steps(step, pos))
    mats[rows, column] = entry
    after = _time_steps(step, pos)
    steady = _steady(before, after, best.get(int(entry[0])), fastest[0])
    fastest[0] = min(fastest[0], before, after)
    if not steady:
        return None
    choice = untuned
    for c in candidates:
        if best[c] < best[choice] * (1 - MARGIN):
            choice = c
    mats[rows, column] = choice
    return choice, {str(c): best[c] for c in candidates}


def _steady(before: float, after: float, entry_best: float | None, fastest: float) -> bool:
    """Whether the step as it was took the same time before and after a key's rounds, as long as its
    best round (where the entry value was a candidate), and no longer than the fastest step timed before. A neighbour that takes the cores
    or the page cache in between makes steps slower by whole factors (here once 5-8 ms steps timed at
    70-400 ms, and the choices then made were kept in the cache): such a key is left as it was and
    measured again next time, rather than chosen from noise."""
    slow, fast = max(before, after), min(before, after)
    limit = (1 + DISTURBED) * min(fast, fastest)
    return slow <= limit and (entry_best is None or entry_best <= limit)


def _tune_key(step, rows: np.ndarray, family: str, fastest: list[float]) -> tuple[int, dict] | None:
    """Best shape for the matrices `rows` of step.mats (one key), the other matrices as they are."""
    return _best_of(step, rows, SHAPE, CANDIDATES[family], UNTUNED[family], fastest)


def _keys_by_size(mats: np.ndarray) -> dict[str, np.ndarray]:
    """Table rows per key, the key with the most bytes first (it matters most)."""
    keys = np.array([matrix_key(mats, m) for m in range(mats.shape[0])])
    total = {k: int((mats[keys == k, 1] * mats[keys == k, 2]).sum()) for k in set(keys)}
    return {k: np.flatnonzero(keys == k) for k in sorted(total, key=total.get, reverse=True)}


class _ShortAttention:
    """Within: every layer of step attends over at most TIMING_WINDOW positions (its own window if that
    is shorter); the windows as they were after."""

    def __init__(self, step):
        self.window = step.rope[2]

    def __enter__(self):
        self.saved = self.window.copy()
        self.window[(self.window == 0) | (self.window > TIMING_WINDOW)] = TIMING_WINDOW

    def __exit__(self, *exc):
        self.window[:] = self.saved


def tune(step, threads: int, force: bool = False, progress=None) -> dict:
    """Set step.mats' shape column for this machine: cached choices where there are, measured ones
    (and cached) for the rest, or all measured again with force. Returns {key: choice record}."""
    with _ShortAttention(step):
        return _tune(step, threads, force, progress)


def _tune(step, threads: int, force: bool, progress) -> dict:
    mats = step.mats
    mats[:, SHAPE] = untuned_shapes(mats)
    mats[:, PREFETCH] = UNTUNED_PREFETCH
    if not enabled() or step.flags[0]:  # exact: float activations, whose kernels take no shape
        return {}
    data = tune_cache.read()
    known = _section(data, threads)
    groups = _keys_by_size(mats)
    family = {key: FAMILY[KINDS[mats[rows[0], KIND]]] for key, rows in groups.items()}
    for key, rows in groups.items():  # cached choices first: the measured keys then see them
        if key in known and known[key].get("shape") not in CANDIDATES[family[key]]:
            del known[key]  # measured among other candidates (an older ggq): measure again
        if key in known and not force:
            mats[rows, SHAPE] = known[key]["shape"]
    to_measure = [key for key in groups if len(CANDIDATES[family[key]]) > 1 and (force or key not in known)]
    if to_measure:
        cached_distance = known.get(prefetch_key(mats), {}).get("shape")
        mats[:, PREFETCH] = cached_distance if cached_distance in PREFETCH_CANDIDATES else SHAPE_TIMING_PREFETCH
        _warm_up(step)
    fastest = [float("inf")]
    for key in to_measure:
        if progress:
            progress(key)
        measured = _tune_key(step, groups[key], family[key], fastest)
        if measured is not None:
            known[key] = {"shape": measured[0], "times": measured[1]}
    measured = _tune_prefetch(step, known, force, progress)  # with the shapes chosen (the untuned 32-row
    if to_measure or measured:                               # steps ran Q8_0 at a third of the speed)
        tune_cache.write(data)
    return {key: known[key] for key in [prefetch_key(mats), *groups] if key in known}


def prefetch_key(mats: np.ndarray) -> str:
    """The prefetch distance's cache key: one per model (matrix count and bytes), since the best
    distance moved with the sizes of the matrices (the hardware prefetchers' ramp on each)."""
    return f"{PREFETCH_KEY}, {mats.shape[0]} matrices, {int((mats[:, 1] * mats[:, 2]).sum()) >> 20} MiB"


def _tune_prefetch(step, known: dict, force: bool, progress) -> bool:
    """The step's prefetch distance, cached or measured with the shapes as chosen; True if measured."""
    rows, key = np.arange(step.mats.shape[0]), prefetch_key(step.mats)
    record = known.get(key)
    if record and record.get("shape") in PREFETCH_CANDIDATES and not force:
        step.mats[rows, PREFETCH] = record["shape"]
        return False
    _warm_up(step)
    if progress:
        progress(key)
    measured = _best_of(step, rows, PREFETCH, PREFETCH_CANDIDATES, UNTUNED_PREFETCH, [float("inf")])
    if measured is None:
        return False
    known[key] = {"shape": measured[0], "times": measured[1]}
    return True


def format_choices(choices: dict) -> str:
    """One line per key: the chosen shape (or prefetch bytes) and each candidate's time per decode step."""
    lines = []
    for key, rec in choices.items():
        times = "  ".join(f"{c}: {t * 1e3:.2f} ms" for c, t in rec["times"].items())
        if key.startswith(PREFETCH_KEY):
            lines.append(f"  {key}: {rec['shape']} bytes   ({times})")
        else:
            lines.append(f"  {key:<22} shape {rec['shape']:>3}   ({times})")
    return "\n".join(lines)
