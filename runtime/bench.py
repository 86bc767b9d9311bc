"""`ggq bench`: prompt processing and generation speed, measured as llama-bench measures them.

    result = bench("model.gguf", n_prompt=512, n_gen=128, threads=2, repetitions=5)

pp<N>: N prompt tokens run as one batch into an empty KV cache (all tokens through the prompt path);
tg<N>: N tokens generated one at a time into an empty KV cache (the decode step only, no sampling).
Both use random token ids, as llama-bench does, after one untimed warm-up run; tokens/s is the mean
over the repetitions of N / seconds, with its sample standard deviation. Also: the time to open the
model, and the first-token latency (open the model, run a short prompt, have its logits).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from ggq.errors import GGQError
from ggq.runtime.api import set_threads
from ggq.runtime.model import Transformer, open_model

FIRST_TOKEN_PROMPT = 8  # tokens in the prompt of the first-token latency


@dataclass(frozen=True)
class Speed:
    test: str           # "pp512" or "tg128", llama-bench's names
    tokens_per_s: float
    stddev: float
    samples: tuple[float, ...]


@dataclass(frozen=True)
class BenchResult:
    model: str
    file_bytes: int
    threads: int
    exact: bool
    load_s: float
    first_token_s: float
    speeds: tuple[Speed, ...]
    device: str = "cpu"
    launches_per_token: int = 0     # kernel launches the decode step makes per token (cuda)
    python_launches_per_token: int = 0  # launches made from Python per token: 1 when a CUDA graph replays
    graph_note: str = ""            # why no CUDA graph, where there is none
    weight_bytes_per_token: int = 0   # every matrix the decode step reads, once per token (cpu)
    copy_bytes_per_s: float = 0.0     # memory-copy bandwidth (read + write) in the same run: the limit
    kernel_shapes: str = ""           # the decode kernels' shapes (runtime/tune.py), per matrix key

    def decode_bytes_per_s(self) -> float:
        """Weight bytes streamed per second during decode: the fastest tg repetition's tokens/s x bytes
        per token. Fastest, since the copy bandwidth beside it is the best of its rounds: peak against
        peak, so that a noisy neighbour during one repetition does not count against one side only."""
        tg = [max(s.samples) for s in self.speeds if s.test.startswith("tg")]
        return tg[0] * self.weight_bytes_per_token if tg and self.weight_bytes_per_token else 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _random_ids(tf: Transformer, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, tf.params.n_vocab, n)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _prompt_run(tf: Transformer, ids: np.ndarray) -> None:
    tf.forward(ids, 0)


def _gen_run(tf: Transformer, ids: np.ndarray) -> None:
    if tf.backend is not None:      # a device: its decode step with device-side argmax, one id back a token
        for pos, token in enumerate(ids):
            tf.backend.next_token(int(token), pos)
        return
    for pos, token in enumerate(ids):
        tf.decode(int(token), pos)


def _speed(name: str, run, tf: Transformer, n: int, repetitions: int) -> Speed:
    ids = _random_ids(tf, n, seed=n)
    run(tf, ids)  # warm-up (and, on a cold cache, the compile)
    samples = tuple(n / _time(lambda: run(tf, ids)) for _ in range(repetitions))
    std = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return Speed(name, statistics.fmean(samples), std, samples)


def bench(path: str, n_prompt: int = 512, n_gen: int = 128, threads: int | None = None,
          repetitions: int = 5, exact: bool = False, device: str = "cpu") -> BenchResult:
    if n_prompt < 0 or n_gen < 0 or repetitions < 1:
        raise GGQError("bench: -p and -n must be >= 0 and -r >= 1")
    n_threads = set_threads(threads)
    start = time.perf_counter()
    tf = open_model(path, ctx_size=max(n_prompt, n_gen, FIRST_TOKEN_PROMPT) + 1, exact=exact, device=device)
    load_s = time.perf_counter() - start
    try:
        first = _random_ids(tf, FIRST_TOKEN_PROMPT, seed=0)
        first_token_s = load_s + _time(lambda: tf.forward(first, 0))
        speeds = []
        if n_prompt:
            speeds.append(_speed(f"pp{n_prompt}", _prompt_run, tf, n_prompt, repetitions))
        if n_gen:
            speeds.append(_speed(f"tg{n_gen}", _gen_run, tf, n_gen, repetitions))
        return BenchResult(str(path), tf.gguf.file_size, n_threads, exact, load_s, first_token_s, tuple(speeds),
                           device, *_launch_counts(tf), *_memory_figures(tf, n_gen))
    finally:
        tf.gguf.close()


def _launch_counts(tf: Transformer) -> tuple[int, int, str]:
    replay = getattr(tf.backend, "replay", None)
    if replay is None:
        return 0, 0, ""
    return len(replay.launches), replay.launches_per_run, replay.graph_error


def _memory_figures(tf: Transformer, n_gen: int) -> tuple[int, float, str]:
    """What decode streams per token, the copy bandwidth beside it, and the kernel shapes (CPU decode)."""
    if tf.backend is not None or not n_gen or tf.match_llamacpp:
        return 0, 0.0, ""
    from ggq.runtime.membw import copy_bandwidth
    from ggq.runtime.tune import matrix_key
    mats = tf.compiled_step().mats
    shapes = sorted({f"{matrix_key(mats, m)}: {mats[m, 4]}" for m in range(mats.shape[0])})
    return int((mats[:, 1] * mats[:, 2]).sum()), copy_bandwidth(), ", ".join(shapes)


def format_result(r: BenchResult) -> str:
    lines = [f"model {r.model}: {r.file_bytes / 2**20:.2f} MiB, {r.threads} threads, "
             f"{'float32' if r.exact else '8-bit'} decode activations",
             f"load {r.load_s * 1000:.0f} ms, first token {r.first_token_s * 1000:.0f} ms "
             f"(open + {FIRST_TOKEN_PROMPT}-token prompt)"]
    if r.device != "cpu":
        how = "one CUDA graph" if r.python_launches_per_token == 1 else f"no graph: {r.graph_note}"
        lines[0] = f"model {r.model}: {r.file_bytes / 2**20:.2f} MiB, device {r.device}, float32 activations"
        lines.append(f"decode: {r.launches_per_token} kernel launches per token ({how})")
    for s in r.speeds:
        lines.append(f"{s.test:>8}  {s.tokens_per_s:9.2f} ± {s.stddev:.2f} tokens/s")
    if r.weight_bytes_per_token:
        streamed, copy = r.decode_bytes_per_s(), r.copy_bytes_per_s
        lines.append(f"decode streams {r.weight_bytes_per_token / 1e6:.1f} MB of weights a token: "
                     f"{streamed / 1e9:.1f} GB/s in the fastest repetition, {100 * streamed / copy:.0f} % of the "
                     f"memory-copy bandwidth measured now ({copy / 1e9:.1f} GB/s read + write, best of its "
                     f"rounds, {r.threads} threads)")
        lines.append(f"kernel shapes (ggq tune --show): {r.kernel_shapes}")
    if r.device == "cpu" and not r.exact:
        from ggq.runtime.kernels.vecir_tile import describe
        lines.append(f"prompt kernels: {describe()}")
    return "\n".join(lines)
