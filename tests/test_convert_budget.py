"""`ggq convert --calibration --target-size / --target-bpw`: per-tensor types chosen under a byte budget.

ORACLES: gguf-py's GGUFReader for the written file (its size on disk, each tensor's type and byte
count) and gguf-py's GGML_QUANT_SIZES for which types a row length can take; for the allocator, an
exhaustive search over every combination of types of small made-up tensors (the greedy over convex
hulls must be at least as good as the best combination that leaves room for its largest step).
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from ggq.cli import main
from ggq.convert.allocate import allocate, candidates, frontier, parse_size
import tiny_checkpoints as tiny

N_CTX = 32
TEXT = "a calibration text about foxes, dogs and the weather in spring; " * 30


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    tiny.write_checkpoint(root / "ckpt", "llama", seed=5)
    (root / "text.txt").write_text(TEXT)
    return root


def _convert(root, out, *extra) -> int:
    return main(["convert", str(root / "ckpt"), "-o", str(out), "--quiet", "--calibration",
                 str(root / "text.txt"), "--calibration-ctx", str(N_CTX), *extra])


def _types(path) -> dict[str, tuple[str, int]]:
    return {t.name: (GGMLQuantizationType(t.tensor_type).name, int(t.n_bytes)) for t in GGUFReader(path).tensors}


def _sizes(root, tmp_path):
    """(smallest, largest) file sizes of the candidate range: from q2_k-ish and f16 files' neighbours."""
    lo = tmp_path / "lo.gguf"
    assert _convert(root, lo, "--type", "q2_k") == 0
    hi = tmp_path / "hi.gguf"
    assert main(["convert", str(root / "ckpt"), "-o", str(hi), "--quiet", "--type", "f16"]) == 0
    return os.path.getsize(lo), os.path.getsize(hi)


def test_file_fits_target_and_grows_with_it(ckpt, tmp_path):
    lo, hi = _sizes(ckpt, tmp_path)
    sizes = []
    for i, target in enumerate((lo + (hi - lo) // 4, lo + (hi - lo) // 2)):
        out = tmp_path / f"b{i}.gguf"
        assert _convert(ckpt, out, "--target-size", str(target)) == 0
        size = os.path.getsize(out)
        assert size <= target
        sizes.append(size)
        kinds = {t for t, _ in _types(out).values()}
        assert len(kinds - {"F32"}) >= 2, kinds  # a mix, not one type everywhere
    assert sizes[0] < sizes[1]


def test_dry_run_prints_the_plan_the_file_gets(ckpt, tmp_path, capsys):
    lo, hi = _sizes(ckpt, tmp_path)
    target = str(lo + (hi - lo) // 3)
    capsys.readouterr()
    assert _convert(ckpt, tmp_path / "never.gguf", "--target-size", target, "--dry-run") == 0
    assert not (tmp_path / "never.gguf").exists()
    rows = {}
    for line in capsys.readouterr().out.splitlines()[1:-1]:
        name, qt, nbytes, _error = line.split(maxsplit=3)
        rows[name] = (qt, int(nbytes.replace(",", "")))
    out = tmp_path / "real.gguf"
    assert _convert(ckpt, out, "--target-size", target) == 0
    assert rows == _types(out)


def test_target_bpw(ckpt, tmp_path):
    out = tmp_path / "bpw.gguf"
    assert _convert(ckpt, out, "--target-bpw", "5.0") == 0
    tensors = GGUFReader(out).tensors
    bits = 8 * sum(int(t.n_bytes) for t in tensors)
    assert bits <= 5.0 * sum(int(t.n_elements) for t in tensors)


@pytest.mark.parametrize("extra, needle", [
    (["--target-size", "1000"], "smallest"),
    (["--target-size", "10 parsecs"], "expected BYTES"),
    (["--target-size", "1MB", "--target-bpw", "4"], "not both"),
    (["--target-size", "1MB", "--output-type", "q8_0"], "choose every type"),
    (["--target-bpw", "0"], "positive"),
])
def test_bad_targets_fail_cleanly(ckpt, tmp_path, capsys, extra, needle):
    out = tmp_path / "o.gguf"
    assert _convert(ckpt, out, *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("ggq: ") and err.count("\n") == 1 and needle in err and not out.exists()


def test_target_without_calibration_fails_cleanly(ckpt, tmp_path, capsys):
    out = tmp_path / "o.gguf"
    assert main(["convert", str(ckpt / "ckpt"), "-o", str(out), "--target-size", "1MB"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ggq: ") and err.count("\n") == 1 and "--calibration" in err and not out.exists()


def test_candidates_are_the_types_a_row_can_take():
    for cols in (576, 1536, 256, 48):
        for t in candidates("blk.0.ffn_up.weight", (64, cols)):
            block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[t]]
            assert cols % block == 0, (cols, t)
    assert not any(t.endswith("_K") for t in candidates("blk.0.attn_q.weight", (576, 576)))
    assert "Q6_K" in candidates("blk.0.ffn_down.weight", (576, 1536))


def test_parse_size():
    assert parse_size("105454112") == 105454112
    assert parse_size("105MB") == 105_000_000
    assert parse_size("100MiB") == 100 * 2**20
    assert parse_size("1.5k") == 1500


def _brute_force(points: dict, budget: int) -> float:
    best = float("inf")
    names = list(points)
    for combo in itertools.product(*(points[n].items() for n in names)):
        if sum(b for _, (b, _) in combo) <= budget:
            best = min(best, sum(e for _, (_, e) in combo))
    return best


def test_allocation_against_exhaustive_search():
    rng = np.random.default_rng(3)
    for _ in range(30):
        points = {}
        for i in range(4):
            sizes = np.sort(rng.choice(np.arange(10, 200), 4, replace=False))
            errors = np.sort(rng.random(4))[::-1] * rng.random() * 10
            points[f"t{i}"] = {f"T{j}": (int(b), float(e)) for j, (b, e) in enumerate(zip(sizes, errors))}
        smallest = sum(min(b for b, _ in p.values()) for p in points.values())
        budget = smallest + int(rng.integers(0, 400))
        types = allocate({n: frontier(p) for n, p in points.items()}, budget)
        spent = sum(points[n][t][0] for n, t in types.items())
        error = sum(points[n][t][1] for n, t in types.items())
        assert spent <= budget
        largest_step = max(b for p in points.values() for b, _ in p.values())
        assert error <= _brute_force(points, budget - largest_step) + 1e-12


def test_imatrix_method_fits_target(ckpt, tmp_path):
    lo, hi = _sizes(ckpt, tmp_path)
    out = tmp_path / "imat.gguf"
    target = lo + (hi - lo) // 2
    assert _convert(ckpt, out, "--method", "imatrix", "--target-size", str(target)) == 0
    assert os.path.getsize(out) <= target
