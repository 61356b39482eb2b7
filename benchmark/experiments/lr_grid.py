"""The fair learning rate: one peak learning rate for every architecture, chosen from a
small grid by validation loss pooled over the architectures and correlations.

KDD18 (section 5.1) grid-searches the learning rate over {1e-4, 1e-3, 1e-2} per model;
this benchmark's rule (docs/protocol.md) picks ONE rate for all the architectures it
compares, so that no architecture is favoured by its own tuning. The runs train on a key
stream (seed 10 007) disjoint from every reported run, so their test sets are validation
sets. Not part of ``run all``: ``python -m benchmark run lr_grid --profile late``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig, get
from ..protocol import PAPER_CORRS, Cell, Experiment
from ..runner import Results
from . import register

MODELS = ("shared_bottom", "omoe", "mmoe")
GRID = (1e-3, 3e-3, 1e-2)
VALIDATION_SEED = 10_007
RUNS = 8


def cells(profile):
    out = []
    for lr in GRID:
        for m in MODELS:
            for p in PAPER_CORRS:
                spec = dataclasses.replace(
                    profile.spec(ModelConfig.of(m), p), lr=lr, seed=VALIDATION_SEED
                )
                out.append(Cell(spec, RUNS, series=f"{spec.model.display()} @ lr {lr:g}"))
    return tuple(out)


def pooled(res: Results) -> dict[float, np.ndarray]:
    """``{lr: (cells * runs * K,) validation MSEs}`` pooled over architectures, correlations
    and tasks; NaN for diverged runs (excluded from the statistics, and counted)."""
    out: dict[float, list] = {}
    for c in res.cells:
        out.setdefault(float(c.meta["lr"]), []).append(c.final.ravel())
    return {lr: np.concatenate(v) for lr, v in sorted(out.items())}


def choose(res: Results) -> tuple[float, dict]:
    """The rule: the fewest diverged runs, then the lowest pooled mean validation MSE.

    Returns ``(lr, {lr: (mean, lo, hi, n_diverged)})`` with a 95% bootstrap CI of the mean.
    """
    table = {}
    for lr, v in pooled(res).items():
        finite = v[np.isfinite(v)]
        lo, hi = stats.mean_ci(finite)
        table[lr] = (float(finite.mean()), lo, hi, int(v.size - finite.size))
    best = min(table, key=lambda lr: (table[lr][3], table[lr][0]))
    return best, table


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    best, table = choose(res)
    fig, axes = plots.figure(1, 2, figsize=(12, 4.5))
    lrs = list(table)
    series = [("pooled over SB, OMoE, MMoE and p", "k", lrs, *np.array(
        [table[lr][:3] for lr in lrs]).T)]  # fmt: skip
    for m in MODELS:
        vals = []
        for lr in lrs:
            v = np.concatenate(
                [
                    c.final.ravel()
                    for c in res.cells
                    if c.meta["model"] == m and float(c.meta["lr"]) == lr
                ]
            )
            vals.append((float(np.nanmean(v)), *stats.mean_ci(v)))
        series.append((get(m).label, plots.color(m), lrs, *np.array(vals).T))
    plots.plot_lines(
        axes[0][0],
        series,
        "peak learning rate",
        "validation MSE (mean, 95% CI)",
        title=f"Validation loss by learning rate; chosen: {best:g}",
    )
    axes[0][0].set_xscale("log")
    rows = [[lr, *table[lr]] for lr in lrs]
    axes[0][1].axis("off")
    text = "\n".join(
        f"lr {lr:g}: mean {m:.4f} [{lo:.4f}, {hi:.4f}], {d} diverged" for lr, m, lo, hi, d in rows
    )
    axes[0][1].text(
        0,
        0.5,
        f"rule: fewest diverged runs, then lowest pooled mean\n\n{text}",
        va="center",
        family="monospace",
        fontsize=9,
    )
    plots.write_csv(out / "lr_grid.csv", ["lr", "mean", "ci_lo", "ci_hi", "n_diverged"], rows)
    return [plots.save(fig, out / "lr_grid.png", caption)]


register(
    Experiment(
        name="lr_grid",
        description="one learning rate for all architectures, by pooled validation loss",
        cells=cells,
        figures=(draw,),
        in_all=False,
    )
)
