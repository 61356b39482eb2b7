"""Three tasks from a cosine matrix: tasks 1 and 2 at cosine p, task 3 unrelated to both.

The generator's K-task construction (KDD18 section 3.2 with a Cholesky factor of R); a
smoke-sized study of whether an unrelated third task changes what relatedness does to the
other two. Not part of ``run all``: ``python -m benchmark run three_tasks``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig
from ..protocol import Cell, Experiment
from ..runner import Results
from . import register

MODELS = ("shared_bottom", "mmoe")
LEVELS = (0.0, 0.5, 0.9, 1.0)


def cosines(p: float) -> tuple:
    """``R``: tasks 1 and 2 at cosine ``p``; task 3 orthogonal to both."""
    return ((1.0, p, 0.0), (p, 1.0, 0.0), (0.0, 0.0, 1.0))


def cells(profile):
    return tuple(
        Cell(profile.spec(ModelConfig.of(m), cosines(p), n_tasks=3), profile.sweep_runs, x=p)
        for m in MODELS
        for p in LEVELS
    )


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = res.by_series()
    n_tasks = res.cells[0].final.shape[1]
    fig, axes = plots.figure(1, n_tasks, figsize=(5 * n_tasks, 4), sharey=True)
    rows = []
    for k in range(n_tasks):
        series = []
        for name, by_x in by.items():
            xs = sorted(by_x)
            vals = np.array(
                [[stats.iqm(by_x[x].final[:, k]), *stats.iqm_ci(by_x[x].final[:, k])] for x in xs]
            )
            series.append((name, plots.color(by_x[xs[0]].meta["model"]), xs, *vals.T))
            rows += [[name, x, k + 1, *v] for x, v in zip(xs, vals, strict=True)]
        plots.plot_lines(
            axes[0][k],
            series,
            "cosine of tasks 1 and 2 (task 3 orthogonal)",
            "final test MSE (IQM, 95% CI)",
            title=f"task {k + 1}",
        )
    plots.write_csv(
        out / "three_tasks.csv", ["series", "p12", "task", "iqm", "ci_lo", "ci_hi"], rows
    )
    return [plots.save(fig, out / "three_tasks.png", caption)]


register(
    Experiment(
        name="three_tasks",
        description="K = 3: tasks 1-2 at cosine p, task 3 orthogonal; SB and MMoE",
        cells=cells,
        figures=(draw,),
        in_all=False,
    )
)
