"""The headline: every registered architecture's final loss across the correlation grid.

The sweep of Ma et al., KDD 2018 (section 3) extended to every architecture in the
registry, with the PLE paper's correlation levels (Tang et al., RecSys 2020) included.
"""

from __future__ import annotations

from pathlib import Path

from .. import plots, stats
from ..models import ModelConfig, names
from ..runner import Results
from . import Experiment, grid, register


def cells(profile):
    models = tuple(ModelConfig.of(n) for n in names())
    return grid(profile, models, profile.correlations, profile.sweep_runs)


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    series, rows = [], []
    for name, by_x in res.by_series().items():
        xs = sorted(by_x)
        mid, lo, hi = [], [], []
        for x in xs:
            per_run = by_x[x].final.mean(-1)  # mean of the tasks, per run
            m, (a, b) = stats.iqm(per_run), stats.iqm_ci(per_run)
            mid.append(m), lo.append(a), hi.append(b)
            rows.append(
                [
                    name,
                    x,
                    int(
                        stats.summarize(per_run)["n_runs"] - stats.summarize(per_run)["n_diverged"]
                    ),
                    m,
                    a,
                    b,
                ]
            )
        model = by_x[xs[0]].meta["model"]
        series.append((name, plots.color(model), xs, mid, lo, hi))
    fig, axes = plots.figure(figsize=(7, 5))
    plots.plot_lines(
        axes[0][0],
        series,
        "task correlation (cosine of task weights)",
        "final test MSE (IQM over runs of the mean over tasks)",
        title=f"Final loss against task relatedness ({res.n_runs} runs per point, "
        "95% bootstrap CI)",
    )
    plots.write_csv(
        out / "relatedness.csv",
        ["series", "correlation", "n_finite", "iqm", "ci_lo", "ci_hi"],
        rows,
    )
    return [plots.save(fig, out / "relatedness.png", caption)]


register(
    Experiment(
        name="relatedness",
        description="every registered architecture across the correlation grid (headline figure)",
        cells=cells,
        figures=(draw,),
    )
)
