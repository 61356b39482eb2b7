"""Gradient conflict against task relatedness: the cosine between the tasks' gradients on
the shared parameters, during training, for every architecture (equal weights) and for
every objective on Shared-Bottom and MMoE.

Gradient-surgery methods (PCGrad, Yu et al., NeurIPS 2020; CAGrad, Liu et al., NeurIPS
2021; MGDA, Sener & Koltun, NeurIPS 2018) exist because tasks' gradients conflict
(negative cosine). Does conflict fall as relatedness rises, which methods remove it, and
does removing it lower the loss? The engine records the cosine at every evaluation, on
the first 256 test points; its cells are the `relatedness` and `objectives` cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import get
from ..report import fmt_ci
from ..runner import Results
from . import Claim, Experiment, Verdict, register, relatedness
from . import objectives as objectives_exp


def cells(profile):
    seen, out = set(), []
    for c in relatedness.cells(profile) + objectives_exp.cells(profile):
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return tuple(out)


def _conflict(cell) -> np.ndarray:
    """(runs,) each run's mean gradient cosine over the evaluations after step 0."""
    return np.nanmean(cell.arrays["grad_cosine"][:, 1:], axis=1)


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    fig, axes = plots.figure(1, 2, figsize=(14, 5), sharey=True)
    rows, arch_series, obj_series = [], [], []
    groups: dict = {}
    for c in res.cells:
        groups.setdefault((c.meta["model"], c.objective), {})[c.x] = c
    for (m, o), by_x in groups.items():
        xs = sorted(by_x)
        vals = np.array([stats.mean_normal_ci(_conflict(by_x[x])) for x in xs])
        rows += [[m, o, x, *v] for x, v in zip(xs, vals, strict=True)]
        if o == "equal":
            arch_series.append((get(m).label, plots.color(m), xs, *vals.T))
        if m == "mmoe":
            obj_series.append((o, "k" if o == "equal" else None, xs, *vals.T))
    plots.plot_lines(
        axes[0][0],
        arch_series,
        "task correlation",
        "cosine of the tasks' gradients on shared parameters (mean, 95% CI)",
        title="Every architecture, equal weights",
    )
    plots.plot_lines(axes[0][1], obj_series, "task correlation", "", title="MMoE, every objective")
    for ax in axes[0]:
        ax.axhline(0, color="k", lw=0.8)
    plots.write_csv(
        out / "gradient_conflict.csv",
        ["model", "objective", "correlation", "cosine", "ci_lo", "ci_hi"],
        rows,
    )
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
        ci = stats.paired_bootstrap(
            lambda a, b, axis: np.mean(a - b, axis=axis), [_conflict(c1), _conflict(c0)]
        )
        holds &= ci[1] > 0
        parts.append(f"{m} {fmt_ci(*ci)}")
    return Verdict(
        holds if parts else None, "cosine at p=1 minus at p=0, paired: " + ", ".join(parts)
    )


register(
    Experiment(
        name="gradient_conflict",
        description="task-gradient cosine on shared parameters against p, per model and objective",
        cells=cells,
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
        in_all=False,
    )
)
