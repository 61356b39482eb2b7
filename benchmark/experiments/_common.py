"""Pieces the experiment files share (not an experiment: no registration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig
from ..runner import Results

BAND = "band: 95% normal CI of the mean over runs"


def curve_rows(res: Results, cells, task: int = 0):
    """``[(label, color, mean, lo, hi)]`` and CSV rows of the mean test-loss curve of
    ``task`` for each ``(label, color, cell)`` of ``cells``."""
    steps = res.eval_steps
    series, rows = [], []
    for label, c, cell in cells:
        mean, lo, hi = stats.mean_normal_ci(cell.arrays["curves"][:, :, task])
        series.append((label, c, mean, lo, hi))
        rows += [
            [cell.series, label, int(s), m, a, b]
            for s, m, a, b in zip(steps, mean, lo, hi, strict=True)
        ]
    return series, rows


def write_curves(path: Path, rows) -> None:
    plots.write_csv(path, ["series", "label", "step", "mean", "ci_lo", "ci_hi"], rows)


def all_finite(*arrays) -> np.ndarray:
    return np.concatenate([a[np.isfinite(a)] for a in arrays])


def fmt_signed(x: float, digits: int = 3) -> str:
    """``+0.012``, ``−0.004``: a difference as the docs' tables write it."""
    return f"{x:+.{digits}f}".replace("-", "−")


def fmt_ci(point: float, lo: float, hi: float, digits: int = 3, signed: bool = False) -> str:
    """``0.123 [0.100, 0.150]``; ``signed``: a difference as the docs' tables write it,
    ``+0.012 [−0.004, 0.020]`` (:func:`fmt_signed`); "n/a" where ``point`` is not finite
    (every run diverged)."""
    if not np.isfinite(point):
        return "n/a"
    if signed:
        return f"{fmt_signed(point, digits)} [{lo:.{digits}f}, {hi:.{digits}f}]".replace("-", "−")
    return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def task1(res: Results, model: str, x: float) -> np.ndarray:
    """Task 1's final test MSE of ``model`` at ``x``, (runs,); NaN for diverged runs."""
    return res.by_model()[model][round(x, 6)].final[:, 0]


def model_grid(grid, models):
    """``(cells, extra)`` of an experiment whose ``grid(profile, configs)`` gives every
    cell of the architecture configs: ``cells`` is the grid of ``models`` (registry
    names), ``extra(profile, config)`` another architecture's grid, trained on request
    (``run NAME --models ARCH``)."""

    def cells(profile):
        return grid(profile, [ModelConfig.of(m) for m in models])

    def extra(profile, model):
        return grid(profile, [model])

    return cells, extra
