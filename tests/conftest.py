"""Shared fixtures: where the test data lives (built by ../shared/testdata/make)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data_root() -> Path:
    """$GGQ_TEST_DATA; else $GGQ_TEST_MODELS where it exists; else the make script's default."""
    if os.environ.get("GGQ_TEST_DATA"):
        return Path(os.environ["GGQ_TEST_DATA"]).expanduser()
    models = os.environ.get("GGQ_TEST_MODELS")
    if models and Path(models).is_dir():
        return Path(models).expanduser()
    return Path.home() / ".cache" / "ggq-testdata"


DATA = _data_root()
SHARED_MODEL = DATA / "smollm2-135m-instruct"
Q4_1_GGUF = DATA / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def shared_model() -> Path:
    if not (SHARED_MODEL / "config.json").is_file():
        pytest.fail(f"test data missing: run ../shared/testdata/make (looked in {DATA})")
    return SHARED_MODEL


@pytest.fixture(scope="session")
def q4_1_gguf() -> Path:
    if not Q4_1_GGUF.is_file():
        pytest.fail(f"test data missing: run ../shared/testdata/make (looked in {DATA})")
    return Q4_1_GGUF
