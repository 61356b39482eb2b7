"""Expert collapse: do the experts end up computing the same function?

Users of MTL libraries report experts that end up identical (PaddleRec #721); HoME
(arXiv 2408.05430) targets this collapse with expert normalisation. Measured as the mean
pairwise cosine similarity of the experts' outputs on a run's test set at the end of
training (1 = every expert computes the same thing), with the gate statistics beside it,
for MMoE, OMoE, DSelect-k and the HoME-style MMoE across the correlations. Its cells are
`relatedness` cells: it trains nothing of its own, and is part of `run all`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig, get
from ..runner import Results
from . import Experiment, grid, register

MODELS = ("omoe", "mmoe", "dselect_k", "mmoe_norm")


def cells(profile):
    return grid(
        profile, tuple(ModelConfig.of(m) for m in MODELS), profile.correlations, profile.sweep_runs
    )


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = res.by_model()
    panels = {
        "expert_cosine": "mean pairwise cosine of expert outputs",
        "expert_utilization": "effective experts used / E (mean over tasks)",
    }
    fig, axes = plots.figure(1, len(panels), figsize=(7 * len(panels), 5))
    rows = []
    for ax, (key, label) in zip(axes[0], panels.items(), strict=True):
        series = []
        for m in (m for m in MODELS if m in by):
            xs = sorted(by[m])
            vals = np.array(
                [
                    stats.mean_normal_ci(
                        np.reshape(by[m][x].arrays[key], (by[m][x].arrays[key].shape[0], -1)).mean(
                            -1
                        )
                    )
                    for x in xs
                ]
            )
            series.append((get(m).label, plots.color(m), xs, *vals.T))
            rows += [[m, key, x, *v] for x, v in zip(xs, vals, strict=True)]
        plots.plot_lines(
            ax, series, "task correlation", f"{label} (95% CI of the mean)", title=label
        )
    plots.write_csv(
        out / "expert_collapse.csv",
        ["model", "metric", "correlation", "mean", "ci_lo", "ci_hi"],
        rows,
    )
    return [plots.save(fig, out / "expert_collapse.png", caption)]


register(
    Experiment(
        name="expert_collapse",
        description="how alike the experts become (MMoE, OMoE, DSelect-k, HoME-style) across p",
        cells=cells,
        figures=(draw,),
    )
)
