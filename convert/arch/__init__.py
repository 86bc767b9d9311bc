"""Supported architectures, each described as data in its own module (llama, qwen2, gemma3)."""
from __future__ import annotations

from ggq.convert.arch.base import ArchSpec, Params, params_from_config
from ggq.convert.arch.gemma3 import GEMMA3
from ggq.convert.arch.llama import LLAMA
from ggq.convert.arch.qwen2 import QWEN2
from ggq.errors import GGQError

ARCHES: dict[str, ArchSpec] = {name: spec for spec in (LLAMA, QWEN2, GEMMA3) for name in spec.hf_names}


def arch_for(hf_arch: str) -> ArchSpec:
    spec = ARCHES.get(hf_arch)
    if spec is None:
        raise GGQError(f"unsupported architecture '{hf_arch}' (supported: {', '.join(ARCHES)})")
    return spec


__all__ = ["ARCHES", "ArchSpec", "Params", "arch_for", "params_from_config"]
