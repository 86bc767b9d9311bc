"""Packaging: the wheel installs ggq, ggq.convert and ggq.runtime, and nothing else at the top level.

Oracle: the wheel's own file list (a zip) as pip builds it from pyproject.toml.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_ggq_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("ggq-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"ggq"}
    sources = {"ggq": ROOT / "ggq", "ggq/convert": ROOT / "convert", "ggq/runtime": ROOT / "runtime"}
    for prefix, folder in sources.items():
        for py in folder.rglob("*.py"):
            rel = py.relative_to(folder)
            if prefix == "ggq" and rel.parts[0] in ("convert", "runtime"):
                continue
            assert f"{prefix}/{rel.as_posix()}" in names, f"{py} is not in the wheel (package list in pyproject?)"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ggq = ggq.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_python_dash_m_ggq_runs():
    out = subprocess.run([sys.executable, "-P", "-m", "ggq", "--help"], capture_output=True, text=True, check=True)
    assert "inspect" in out.stdout
