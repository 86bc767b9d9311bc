"""ggq/tune_cache.py: where compiled kernels and measured tunings live.

ORACLE: Numba's own cache rule (it keys on the defining file's timestamp and the CPU, not on the
environment), so every setting that changes what the kernels compile to must change the directory.
"""
from __future__ import annotations

from ggq import tune_cache


def test_each_codegen_setting_gets_its_own_numba_cache(monkeypatch):
    for name in tune_cache.CODEGEN_ENV:
        monkeypatch.delenv(name, raising=False)
    base = tune_cache.default_numba_cache()
    seen = {base}
    for name in tune_cache.CODEGEN_ENV:
        monkeypatch.setenv(name, "1")
        seen.add(tune_cache.default_numba_cache())
        monkeypatch.delenv(name)
    assert len(seen) == 1 + len(tune_cache.CODEGEN_ENV)
    monkeypatch.setenv("GGQ_SOMETHING_ELSE", "1")  # not a codegen setting: the kernels stay shared
    assert tune_cache.default_numba_cache() == base


def test_the_tune_file_lives_beside_the_numba_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert tune_cache.cache_path() == tmp_path / "ggq-tune.json"
