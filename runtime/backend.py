"""Where a Transformer computes. The model's math is written once: the architecture flags of
params.ARCHS and the layer order of model.py. The CPU path is model.py's own methods with the kernels of
runtime/kernels (kernels/step.py for decode, kernels/ggml_step.py for match_llamacpp); another device
supplies a Backend, to which Transformer.forward and .decode hand over after checking their arguments.
runtime/cuda/backend.py is one: the same layer order and flags, as CUDA kernels.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    def forward(self, ids: np.ndarray, pos: int, logits: np.ndarray, all_logits: bool) -> np.ndarray:
        """Run int64 token ids at positions pos, pos+1, ... (the cache holds positions < pos) and fill
        `logits` ([n, n_vocab] if all_logits, else [1, n_vocab] for the last token); returns it."""

    def decode(self, token: int, pos: int) -> np.ndarray:
        """One token at pos; logits [1, n_vocab] in a buffer the next call overwrites."""

    def next_token(self, token: int, pos: int) -> int:
        """One token at pos; only the greedy next token's id comes back."""
