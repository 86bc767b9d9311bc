"""runtime/resolve.py: what `ggq run MODEL` runs. Oracle: the gguf package reads the cached conversion."""
from __future__ import annotations

import gguf
import pytest

from ggq.errors import GGQError
from ggq.runtime.resolve import resolve_model
from tiny_checkpoints import write_checkpoint


def test_gguf_path_is_used_as_is(q4_1_gguf):
    assert resolve_model(str(q4_1_gguf)) == q4_1_gguf


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(GGQError, match="no such file"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_checkpoint_folder_converted_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GGQ_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "tiny"
    write_checkpoint(src, "llama")
    first = resolve_model(str(src), quiet=True)
    assert first.parent == tmp_path / "cache" and first.name.endswith(".q4_k_m.gguf")
    assert gguf.GGUFReader(first).fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    stamp = first.stat().st_mtime_ns
    assert resolve_model(str(src), quiet=True) == first and first.stat().st_mtime_ns == stamp
