"""Gradient conflict against task relatedness: the cosine between the tasks' gradients on
the shared parameters, during training, for every architecture (equal weights).

Gradient-surgery methods (PCGrad, Yu et al., NeurIPS 2020; CAGrad, Liu et al., NeurIPS
2021; MGDA, Sener & Koltun, NeurIPS 2018) exist because tasks' gradients conflict
(negative cosine). Does conflict fall as relatedness rises? The engine records the cosine
at every evaluation, on the first 256 test points, in every run, so this experiment's
cells are the `relatedness` cells and it trains nothing of its own. Which objectives
remove the conflict, and whether that lowers the loss, is the `objectives` experiment's
second figure (``objectives.draw_conflict``, on its own cells).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import get
from ..protocol import Claim, Experiment, Verdict
from ..runner import Results
from . import register, relatedness
from ._common import fmt_ci


def _conflict(cell) -> np.ndarray:
    """(runs,) each run's mean gradient cosine over the evaluations after step 0; NaN for a
    model without shared parameters."""
    return stats.finite_mean(cell.arrays["grad_cosine"][:, 1:], axis=1)


def conflict_table(res: Results) -> tuple[dict, list]:
    """``{(model, objective): (xs, (len(xs), 3) mean, CI low, CI high)}`` of the runs'
    mean gradient cosine, and the CSV rows of the same numbers."""
    groups: dict = {}
    for c in res.cells:
        groups.setdefault((c.meta["model"], c.objective), {})[c.x] = c
    table, rows = {}, []
    for (m, o), by_x in groups.items():
        xs = sorted(by_x)
        vals = np.array([stats.mean_normal_ci(_conflict(by_x[x])) for x in xs])
        table[(m, o)] = (xs, vals)
        rows += [[m, o, x, *v] for x, v in zip(xs, vals, strict=True)]
    return table, rows


YLABEL = "tasks' gradient cosine, shared parameters\n(mean over training, 95% CI)"
COLUMNS = ["model", "objective", "correlation", "cosine", "ci_lo", "ci_hi"]


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    table, rows = conflict_table(res)
    fig, axes = plots.figure(1, 1, figsize=(10, 5))
    series = [
        (get(m).label, plots.color(m), xs, *vals.T)
        for (m, o), (xs, vals) in table.items()
        if o == "equal" and np.isfinite(vals).any()
    ]
    ax = axes[0][0]
    plots.plot_lines(
        ax, series, "task correlation", YLABEL, title="Every architecture", legend="outside"
    )
    ax.axhline(0, color="k", lw=0.8)
    plots.write_csv(out / "gradient_conflict.csv", COLUMNS, rows)
    return [plots.save(fig, out / "gradient_conflict.png", caption)]


def falls_with_relatedness(res: Results) -> Verdict:
    parts, holds = [], True
    for c0 in res.cells:
        if c0.objective != "equal" or c0.x != 0.0:
            continue
        m = c0.meta["model"]
        c1 = next(
            (
                c
                for c in res.cells
                if c.meta["model"] == m and c.objective == "equal" and c.x == 1.0
            ),
            None,
        )
        if c1 is None or not np.isfinite(_conflict(c0)).any():
            continue  # ungated single-task models share nothing
        ci = stats.paired_diff(_conflict(c1), _conflict(c0))
        holds &= ci[1] > 0
        parts.append(f"{m} {fmt_ci(*ci)}")
    return Verdict(
        holds if parts else None, "cosine at p=1 minus at p=0, paired: " + ", ".join(parts)
    )


register(
    Experiment(
        name="gradient_conflict",
        description="task-gradient cosine on shared parameters against p, every architecture",
        cells=relatedness.cells,
        figures=(draw,),
        claims=(
            Claim(
                "gradient_conflict.falls",
                "Yu et al., NeurIPS 2020 (the premise of PCGrad)",
                "tasks' gradients conflict less as the tasks are more related",
                "for every architecture with shared parameters, the paired 95% CI of its "
                "mean gradient cosine at p=1 minus at p=0 (equal weights) is above 0",
                falls_with_relatedness,
            ),
        ),
    )
)
