"""Token sampling in the order of llama.cpp's default sampler chain (common/sampling.cpp):
repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw. Temperature <= 0 means greedy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggq.errors import GGQError


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 0.8
    top_k: int = 40            # <= 0: off
    top_p: float = 0.95        # >= 1: off
    min_p: float = 0.05        # <= 0: off
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64    # 0: off, -1: whole history
    seed: int | None = None


class Sampler:
    """Holds the settings and the random generator (seeded: reproducible draws)."""

    def __init__(self, settings: SamplerSettings = SamplerSettings()):
        if settings.repeat_penalty <= 0:
            raise GGQError(f"repeat penalty must be > 0, got {settings.repeat_penalty}")
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)

    def sample(self, logits: np.ndarray, history: list[int] = ()) -> int:
        s = self.settings
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if s.repeat_penalty != 1.0 and s.repeat_last_n != 0:
            logits = apply_repeat_penalty(logits, history, s.repeat_penalty, s.repeat_last_n)
        if s.temperature <= 0:
            return int(np.argmax(logits))
        ids = np.arange(logits.size)
        ids, vals = top_k(ids, logits, s.top_k)
        ids, vals = top_p(ids, vals, s.top_p)
        ids, vals = min_p(ids, vals, s.min_p)
        probs = softmax(vals / np.float32(s.temperature))
        return int(ids[_draw(probs, self.rng.random())])


def apply_repeat_penalty(logits: np.ndarray, history, penalty: float, last_n: int) -> np.ndarray:
    """llama.cpp's penalties sampler (repeat part): each distinct token of the last `last_n` ids has its
    logit divided by the penalty if positive, multiplied if not."""
    recent = list(history) if last_n < 0 else list(history)[-last_n:]
    if not recent:
        return logits
    out = logits.copy()
    seen = np.unique(np.asarray(recent, dtype=np.int64))
    seen = seen[(seen >= 0) & (seen < out.size)]
    vals = out[seen]
    out[seen] = np.where(vals <= 0, vals * np.float32(penalty), vals / np.float32(penalty))
    return out


def top_k(ids: np.ndarray, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest logits, sorted descending (all of them sorted when k <= 0 or k >= n)."""
    if 0 < k < vals.size:
        part = np.argpartition(-vals, k - 1)[:k]
        ids, vals = ids[part], vals[part]
    order = np.argsort(-vals, kind="stable")
    return ids[order], vals[order]


def top_p(ids: np.ndarray, vals: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Smallest prefix (of logits sorted descending) whose probability mass reaches p; at least one."""
    if p >= 1.0:
        return ids, vals
    cum = np.cumsum(softmax(vals).astype(np.float64))
    keep = int(np.searchsorted(cum, p, side="left")) + 1
    keep = max(1, min(keep, vals.size))
    return ids[:keep], vals[:keep]


def min_p(ids: np.ndarray, vals: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Tokens whose probability is at least p times the top one's (logit >= max + log p); at least one."""
    if p <= 0.0 or vals.size == 0:
        return ids, vals
    mask = vals >= vals.max() + np.float32(np.log(p))
    if not mask.any():
        return ids[:1], vals[:1]
    return ids[mask], vals[mask]


def softmax(vals: np.ndarray) -> np.ndarray:
    e = np.exp((vals - vals.max()).astype(np.float64))
    return e / e.sum()


def _draw(probs: np.ndarray, u: float) -> int:
    idx = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
    return min(idx, probs.size - 1)
