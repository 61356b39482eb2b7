"""How the gates of OMoE and MMoE use the experts as task correlation varies.

Ma et al., KDD 2018, section 4 (one gate per task, against one shared gate); the per-task
gate distribution that users of MTL libraries ask for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig
from ..protocol import Experiment, grid
from ..runner import Results
from . import register

MODELS = ("omoe", "mmoe")


def cells(profile):
    return grid(
        profile, tuple(ModelConfig.of(m) for m in MODELS), profile.correlations, profile.sweep_runs
    )


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = res.by_model()
    sep_series, ent_series, rows = [], [], []
    for model in (m for m in MODELS if m in by):
        xs = sorted(by[model])
        sep = np.array(
            [
                stats.mean_normal_ci(stats.gate_separation(by[model][x].arrays["gate_mean"]))
                for x in xs
            ]
        )
        ent = np.array(
            [stats.mean_normal_ci(by[model][x].arrays["gate_entropy"].mean(-1)) for x in xs]
        )
        label, c = by[model][xs[0]].series, plots.color(model)
        sep_series.append((label, c, xs, *sep.T))
        ent_series.append((label, c, xs, *ent.T))
        rows += [[model, x, *s, *e] for x, s, e in zip(xs, sep, ent, strict=True)]
    fig, axes = plots.figure(1, 3, figsize=(16, 4.5))
    plots.plot_lines(
        axes[0][0],
        sep_series,
        "task correlation",
        "total variation between task gates\n(½ Σ_e |ḡ¹_e − ḡ²_e|, mean over pairs)",
        title="Do the tasks' gates separate? (95% CI of the mean)",
    )
    plots.plot_lines(
        axes[0][1],
        ent_series,
        "task correlation",
        "entropy (nats)",
        title="Gate entropy (mean over samples and tasks)",
    )
    examples = {}
    if "mmoe" in by:
        xs = sorted(by["mmoe"])
        examples = {f"corr {x:g}": by["mmoe"][x].arrays["gate_mean"][0] for x in (xs[0], xs[-1])}
    plots.plot_gate_weights(axes[0][2], examples, "MMoE gate weights, one run (run 0)")
    plots.write_csv(
        out / "gates.csv",
        [
            "model",
            "correlation",
            "tv_mean",
            "tv_lo",
            "tv_hi",
            "entropy_mean",
            "entropy_lo",
            "entropy_hi",
        ],
        rows,
    )
    return [plots.save(fig, out / "gates.png", caption)]


register(
    Experiment(
        name="gates",
        description="how MMoE's and OMoE's gates use the experts as correlation varies",
        cells=cells,
        figures=(draw,),
    )
)
