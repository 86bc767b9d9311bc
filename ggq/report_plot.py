"""`ggq report --png`: relative error by layer, one line per role (matplotlib, the `plot` extra).

Tensors outside the blocks (token_embd, output) are drawn as dashed horizontal lines; tensors with no
error (F32 norms kept as they are) are left out, since a log axis has no place for zero.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ggq.errors import GGQError
from ggq.report import ReportRow


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise GGQError('--png needs matplotlib: pip install "ggq[plot]" (or pip install matplotlib)') from None
    return plt


def check(out: str | os.PathLike):
    """Fail before any measuring when `out` cannot be written or matplotlib is missing; pyplot."""
    out = Path(out)
    if out.is_dir():
        raise GGQError("output path is a folder", out)
    if not out.parent.is_dir():
        raise GGQError("output folder does not exist", out.parent)
    return _pyplot()


def plot(rows: list[ReportRow], out: str | os.PathLike, title: str = "") -> Path:
    """Write the error-by-layer-and-role figure to `out` (PNG) and return its path."""
    plt = check(out)
    out = Path(out)
    shown = [r for r in rows if math.isfinite(r.rel_error) and r.rel_error > 0]
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    try:
        roles: dict[str, list[ReportRow]] = {}
        for r in shown:
            roles.setdefault(r.role, []).append(r)
        series = 0
        for role, rs in roles.items():
            in_layers = sorted((r for r in rs if r.layer is not None), key=lambda r: r.layer)
            if in_layers:
                ax.plot([r.layer for r in in_layers], [r.rel_error for r in in_layers], marker="o", markersize=3,
                        color=f"C{series % 10}", linestyle="-" if series < 10 else ":",
                        label=f"{role} ({'/'.join(sorted({r.type for r in in_layers}))})")
                series += 1
            for r in (r for r in rs if r.layer is None):
                ax.axhline(r.rel_error, linestyle="--", linewidth=1, color=f"C{series % 10}",
                           label=f"{r.role} ({r.type})")
                series += 1
        if shown:
            ax.set_yscale("log")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel("relative error ||W_q - W|| / ||W||")
        ax.set_title(title or "relative error by layer and role")
        ax.grid(True, which="both", alpha=0.3)
        if shown:
            ax.legend(fontsize=7, ncol=2, loc="best")
        fig.tight_layout()
        try:
            fig.savefig(out, format="png")
        except OSError as e:
            raise GGQError(f"cannot write: {e.strerror or e}", out) from None
    finally:
        plt.close(fig)
    return out
