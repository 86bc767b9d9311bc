"""ggq/tune_cache.py: where compiled kernels and measured tunings live.

ORACLE: Numba's own cache rule (it keys on the defining file's timestamp and the CPU, not on the
environment), so every setting that changes what the kernels compile to must change the directory.
"""
from __future__ import annotations

from pathlib import Path

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


def test_the_digest_covers_every_installed_source_folder():
    """Where Python imports ggq.runtime and ggq.convert from (inside ggq/ when installed, beside it in an
    editable install), those files are hashed: an edit to a kernel must change the cache folder."""
    import importlib
    roots = [root for _, root in tune_cache.source_roots()]
    for name in tune_cache.SOURCE_PACKAGES:
        for folder in importlib.import_module(name).__path__:
            folder = Path(folder).resolve()
            assert any(folder == r or r in folder.parents for r in roots), (name, folder, roots)


def test_an_edited_source_file_changes_the_cache_folder(monkeypatch, tmp_path):
    (tmp_path / "ggq").mkdir()
    (tmp_path / "runtime").mkdir()
    (tmp_path / "ggq" / "a.py").write_text("x = 1\n")
    kernel = tmp_path / "runtime" / "k.py"
    kernel.write_text("y = 1\n")
    monkeypatch.setattr(tune_cache, "source_roots",
                        lambda: [("ggq", tmp_path / "ggq"), ("ggq.runtime", tmp_path / "runtime")])
    before = tune_cache.default_numba_cache()
    kernel.write_text("y = 2\n")
    assert tune_cache.default_numba_cache() != before
