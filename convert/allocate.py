"""Per-tensor types under a byte budget (`ggq convert --target-size / --target-bpw`).

1. Candidates: every type of `CANDIDATES` that the tensor's rows can take (a k-quant needs a multiple
   of 256 columns, a legacy type of 32), so the fixed fallbacks of llama.cpp's mixes become choices.
2. Measure: each candidate's error on the calibration run, tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) with H = XᵀX of
   the tensor's inputs (the share of the output's energy the rounding destroys), the rounding being
   the format's importance-weighted one (a method that collects no XᵀX, --method imatrix, uses the
   diagonal: the importance). Rows are independent under every format, so a large tensor
   is measured on evenly spaced rows. A tensor without calibration inputs (the token embedding, a tied
   output) gets H = I: its plain relative squared error.
3. Frontier: per tensor the lower convex hull of (bytes, error): a type that costs more and is not
   better, or lies above the line between two others, can never be the best buy.
4. Allocate: start every tensor at its cheapest hull point and repeatedly buy the hull step with the
   largest error reduction per byte that still fits (the greedy form of a Lagrangian sweep: each
   tensor's steps come in falling slope order); then spend what is left on any single change that
   fits and lowers the error most.
The result is a type per tensor; the writer quantizes as usual, so files are ordinary GGUF.
"""
from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

import numpy as np

from ggq.errors import GGQError
from ggq.qtypes import qtype

# Types a quantizable tensor may get, by role (first matching pattern). Ordinary llama.cpp types only.
_ALL = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16")
CANDIDATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the embedding / tied output: Q2_K/Q3_K there cost a lot of quality for little (llama.cpp never
    # goes below Q4 for it either)
    (r"^(token_embd|output)\.weight$", ("Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16")),
    (r".", _ALL),
)
SAMPLE_ROWS = {r"^(token_embd|output)\.weight$": 2048, r".": 256}  # rows measured per tensor


@dataclass(frozen=True)
class Budget:
    """The target: a whole-file size in bytes, or bits per weight of the tensor data."""
    size: int | None = None
    bpw: float | None = None

    def data_bytes(self, n_weights: int, head: int, fixed_padded: int, fixed_data: int) -> int:
        """Bytes the chosen tensors may take: the target less what does not depend on the choice
        (the file's head and the tensors kept as they are, padded in the file, unpadded in bpw)."""
        if self.size is not None:
            return self.size - head - fixed_padded
        return int(self.bpw * n_weights / 8) - fixed_data

    def __str__(self) -> str:
        return f"{self.size:,} bytes" if self.size is not None else f"{self.bpw} bits per weight"


_UNITS = {"": 0, "k": 1, "m": 2, "g": 3}


def parse_size(text: str) -> int:
    """'105454112', '105.4MB' (10^6), '100MiB' (2^20), k/G likewise -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmg]?)(i?)b?\s*", text.lower())
    if not m or (m.group(3) and not m.group(2)):
        raise GGQError(f"--target-size {text!r}: expected BYTES or a size such as 105MB or 100MiB")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** _UNITS[m.group(2)])


def candidates(name: str, shape: tuple[int, ...]) -> list[str]:
    types = next(t for pattern, t in CANDIDATES if re.search(pattern, name))
    return [t for t in types if shape[-1] % qtype(t).block_size == 0]


def _sample_rows(name: str, w: np.ndarray) -> np.ndarray:
    """Evenly spaced rows of w (the error is relative, so a sample needs no scaling)."""
    limit = next(n for pattern, n in SAMPLE_ROWS.items() if re.search(pattern, name))
    if w.shape[0] <= limit:
        return w
    return np.ascontiguousarray(w[np.linspace(0, w.shape[0] - 1, limit).astype(np.int64)])


def _energy(d: np.ndarray, h: np.ndarray | None) -> float:
    """tr(D H Dᵀ); H given as a matrix, as its diagonal (an imatrix: no XᵀX collected), or None (I)."""
    d = d.astype(np.float64)
    if h is None:
        return float(np.einsum("ij,ij->", d, d))
    if h.ndim == 1:
        return float(np.einsum("ij,ij,j->", d, d, h))
    return float(np.einsum("ij,ij->", d @ h, d))


def measure(name: str, w: np.ndarray, h: np.ndarray | None, importance: np.ndarray | None,
            types: list[str]) -> dict[str, float]:
    """Relative output error of each candidate type on (a row sample of) w."""
    from ggq.quants import dequantize, quantize
    sample = _sample_rows(name, w)
    total = _energy(sample, h) or 1.0
    errors = {}
    for t in types:
        if t == "F16":
            q = sample.astype(np.float16).astype(np.float32)
        else:
            q = dequantize(quantize(sample, t, importance if t != "Q8_0" else None), t)
        errors[t] = _energy(sample - q, h) / total
    return errors


def frontier(points: dict[str, tuple[int, float]]) -> list[tuple[str, int, float]]:
    """Lower convex hull of (bytes, error), cheapest first; each step buys less error per byte than the last."""
    ordered = sorted(((b, e, t) for t, (b, e) in points.items()), key=lambda p: (p[0], p[1]))
    hull: list[tuple[int, float, str]] = []
    for b, e, t in ordered:
        if hull and e >= hull[-1][1]:
            continue  # costs at least as much, no better
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) <= _slope(hull[-1], (b, e, t)):
            hull.pop()  # hull[-1] lies on or above the line from hull[-2] to this point
        hull.append((b, e, t))
    return [(t, b, e) for b, e, t in hull]


def _slope(a, b) -> float:
    """Error removed per byte going from a to b."""
    return (a[1] - b[1]) / (b[0] - a[0])


def allocate(frontiers: dict[str, list[tuple[str, int, float]]], budget: int) -> dict[str, str]:
    """Type per tensor, total bytes <= budget, summed error as low as the greedy finds."""
    chosen = {name: 0 for name in frontiers}
    spent = sum(f[0][1] for f in frontiers.values())
    if spent > budget:
        raise GGQError(f"the target leaves {budget:,} bytes for the tensors; the smallest types take {spent:,}")
    heap = [_step(name, f, 0) for name, f in frontiers.items() if len(f) > 1]
    heapq.heapify(heap)
    while heap:
        _, name, i, cost = heapq.heappop(heap)
        if spent + cost > budget:
            continue  # this tensor's later steps need this one: it stays where it is
        spent += cost
        chosen[name] = i + 1
        if i + 2 < len(frontiers[name]):
            heapq.heappush(heap, _step(name, frontiers[name], i + 1))
    types = {name: frontiers[name][i][0] for name, i in chosen.items()}
    return _fill(types, frontiers, budget - spent)


def _step(name: str, f: list[tuple[str, int, float]], i: int):
    """Heap entry for moving `name` from hull point i to i + 1: (-gain per byte, name, i, extra bytes)."""
    cost = f[i + 1][1] - f[i][1]
    return (-(f[i][2] - f[i + 1][2]) / cost, name, i, cost)


def _fill(types: dict[str, str], frontiers, left: int) -> dict[str, str]:
    """Spend the bytes the hull steps could not use on single changes (any hull point) that fit."""
    while True:
        best = None
        for name, f in frontiers.items():
            here = next(p for p in f if p[0] == types[name])
            for t, b, e in f:
                gain, cost = here[2] - e, b - here[1]
                if 0 < cost <= left and gain > 0 and (best is None or gain > best[0]):
                    best = (gain, name, t, cost)
        if best is None:
            return types
        types[best[1]] = best[2]
        left -= best[3]


@dataclass(frozen=True)
class Measured:
    """A tensor's candidates: type -> (bytes, predicted relative error)."""
    name: str
    points: dict[str, tuple[int, float]]


def measure_all(sources, stats, imatrix) -> list[Measured]:
    """Measured candidates of every tensor llama.cpp would quantize (norms and such stay as planned)."""
    from ggq.convert.mixing import is_quantizable
    out = []
    for source in sources:
        if not is_quantizable(source.name, source.shape):
            continue
        types = candidates(source.name, source.shape)
        w = source.load().reshape(-1, source.shape[-1])
        importance = imatrix.importance(source.name) if imatrix else None
        h = stats.gram(source.name) if stats is not None else None
        errors = measure(source.name, w, importance if h is None else h, importance, types)
        rows = int(np.prod(source.shape[:-1]))
        out.append(Measured(source.name, {t: (rows * qtype(t).row_bytes(source.shape[-1]), errors[t])
                                          for t in types}))
    return out


# ---- the convert flow with a budget -----------------------------------------------------------------

ALIGN = 32  # GGUF's default alignment: every tensor's data starts on it


def padded(n: int) -> int:
    return n + (-n % ALIGN)


def head_bytes(metadata: dict, specs) -> int:
    """Bytes before the first tensor's data: header, metadata, tensor infos, padding (they depend on
    names and shapes, not on types)."""
    from ggq.gguf_write import _encode_metadata, _tensor_infos
    _, kv = _encode_metadata(metadata, ALIGN)
    return padded(4 + 4 + 8 + 8 + len(kv) + len(_tensor_infos(specs, ALIGN)))


def check(budget: Budget, quant, options) -> None:
    """Bad combinations fail before anything is read."""
    if budget.size is not None and budget.bpw is not None:
        raise GGQError("give --target-size or --target-bpw, not both")
    if (budget.size is not None and budget.size <= 0) or (budget.bpw is not None and budget.bpw <= 0):
        raise GGQError("the target must be positive")
    if quant is None or not quant.calibration:
        raise GGQError("--target-size/--target-bpw need --calibration TEXT (the errors are measured on it)")
    if quant.chosen == "rtn":
        raise GGQError("--target-size/--target-bpw need a calibrated --method (imatrix, gptq, gptq-imatrix)")
    if options.output_type or options.embedding_type or options.tensor_types:
        raise GGQError("--target-size/--target-bpw choose every type: drop --tensor-type/--output-type/"
                       "--embedding-type")


def plan_budget(ckpt, specs, quant, budget: Budget, metadata: dict, quiet: bool = False):
    """(specs with the chosen types, the plan's text, collected statistics) for the budget."""
    from ggq.convert.calibrated import statistics
    from ggq.gguf_write import TensorSpec
    collected = statistics(quant, ckpt, quiet)
    imatrix, stats, extra = collected
    points = {m.name: {t: (padded(b), e) for t, (b, e) in m.points.items()}
              for m in measure_all(ckpt.sources, stats, imatrix)}
    fixed = [s for s in specs if s.name not in points]
    head = head_bytes({**metadata, **extra}, specs)
    fixed_padded = sum(padded(s.nbytes) for s in fixed)
    data = budget.data_bytes(sum(int(np.prod(s.shape)) for s in specs), head, fixed_padded,
                             sum(s.nbytes for s in fixed))
    try:
        types = allocate({n: frontier(p) for n, p in points.items()}, data)
    except GGQError:
        smallest = head + fixed_padded + sum(min(b for b, _ in p.values()) for p in points.values())
        raise GGQError(f"target {budget} is below the smallest file the candidate types make, "
                       f"{smallest:,} bytes") from None
    chosen = [TensorSpec(s.name, s.shape, types.get(s.name, s.qtype)) for s in specs]
    return chosen, describe(chosen, points, head, budget), collected


def describe(specs, points: dict, head: int, budget: Budget) -> str:
    """The --dry-run table: tensor, type, bytes, predicted relative error; then the totals."""
    width = max(len(s.name) for s in specs)
    lines = [f"{'tensor':<{width}}  {'type':<5}  {'bytes':>11}  predicted error"]
    total_error = 0.0
    for s in specs:
        error = points[s.name][s.qtype][1] if s.name in points else None
        total_error += error or 0.0
        shown = "(kept)" if error is None else f"{error:.3e}"
        lines.append(f"{s.name:<{width}}  {s.qtype:<5}  {s.nbytes:>11,}  {shown}")
    size = head + sum(padded(s.nbytes) for s in specs)
    bpw = 8 * sum(s.nbytes for s in specs) / sum(int(np.prod(s.shape)) for s in specs)
    lines.append(f"{len(specs)} tensors, file {size:,} bytes ({bpw:.3f} bits per weight), target {budget}, "
                 f"summed predicted error {total_error:.4f}")
    return "\n".join(lines)
