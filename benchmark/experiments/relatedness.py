"""The headline: every registered architecture's final loss across the correlation grid.

The sweep of Ma et al., KDD 2018 (section 3) extended to every architecture in the
registry, with the PLE paper's correlation levels (Tang et al., RecSys 2020) included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig, names
from ..protocol import Experiment, grid
from ..runner import Results
from . import register


def cells(profile):
    models = tuple(ModelConfig.of(n) for n in names())
    return grid(profile, models, profile.correlations, profile.sweep_runs)


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    """Left: the IQM of each run's mean-over-tasks loss, with a 95% bootstrap CI. Right:
    each run's loss minus the same run's loss at the largest correlation (run i shares its
    key across correlations), the mean with a paired-bootstrap 95% CI."""
    series, paired, rows = [], [], []
    for name, by_x in res.by_series().items():
        xs = sorted(by_x)
        per_run = {x: by_x[x].final.mean(-1) for x in xs}  # (runs,) mean of the tasks
        ref = per_run[xs[-1]]
        mid, lo, hi, d = [], [], [], []
        for x in xs:
            m, (a, b) = stats.iqm(per_run[x]), stats.iqm_ci(per_run[x])
            diff = stats.paired_diff(per_run[x], ref)
            mid.append(m), lo.append(a), hi.append(b), d.append(diff)
            n_ok = int(np.isfinite(per_run[x]).sum())
            rows.append([name, x, n_ok, m, a, b, *diff])
        c = plots.color(by_x[xs[0]].meta["model"])
        series.append((name, c, xs, mid, lo, hi))
        paired.append((name, c, xs, *np.array(d).T))
    fig, axes = plots.figure(1, 2, figsize=(15, 5.5))
    plots.plot_lines(
        axes[0][0],
        series,
        "task correlation (cosine of task weights)",
        "final test MSE (IQM over runs of the mean over tasks; log scale)",
        title=f"Final loss against task relatedness ({res.n_runs} runs per point, "
        "95% bootstrap CI)",
        legend=None,
    )
    axes[0][0].set_yscale("log")
    plots.plot_lines(
        axes[0][1],
        paired,
        "task correlation (cosine of task weights)",
        "loss − the same run's loss at correlation 1 (mean over runs)",
        title="Each model against itself at correlation 1 (paired 95% CI)",
        legend="outside",
    )
    axes[0][1].axhline(0, color="k", lw=0.8)
    plots.write_csv(
        out / "relatedness.csv",
        [
            "series",
            "correlation",
            "n_finite",
            "iqm",
            "ci_lo",
            "ci_hi",
            "diff_vs_p1",
            "diff_lo",
            "diff_hi",
        ],
        rows,
    )
    return [plots.save(fig, out / "relatedness.png", caption)]


def _shown(xs: list[float]) -> list[float]:
    """The correlations the figure shows: the lowest, 0.5 (or the middle one), the highest."""
    mid = 0.5 if 0.5 in xs else xs[len(xs) // 2]
    return sorted({xs[0], mid, xs[-1]})


def draw_improvement(res: Results, out: Path, caption: str) -> list[Path]:
    """P(a run of A ends lower than a run of B), rliable's probability of improvement, on
    each run's mean-over-tasks final loss, for every pair of architectures at every
    correlation, with a 95% bootstrap CI (``relatedness_improvement.csv``). The figure shows
    the matrices at the lowest correlation, 0.5 and the highest; a ``*`` marks a pair whose
    CI excludes 0.5. ``P(B < A) = 1 − P(A < B)``, so each pair is computed once."""
    by = res.by_series()
    labels = list(by)
    xs = sorted(set.intersection(*(set(v) for v in by.values())))
    if len(labels) < 2 or not xs:
        return []
    n = len(labels)
    rows, mats = [], {}
    for x in xs:
        runs = [by[s][x].final.mean(-1) for s in labels]  # (runs,) each
        point, mark = np.full((n, n), np.nan), np.zeros((n, n), bool)
        for i in range(n):
            for j in range(i + 1, n):
                pij = stats.prob_better(runs[i], runs[j])
                lo, hi = stats.prob_better_ci(runs[i], runs[j])
                rows.append([labels[i], labels[j], x, pij, lo, hi])
                point[i, j], point[j, i] = pij, 1.0 - pij
                mark[i, j] = mark[j, i] = lo > 0.5 or hi < 0.5
        mats[x] = (point, mark)
    shown = _shown(xs)
    k = len(shown)
    fig, axes = plots.figure(
        1,
        k + 1,
        figsize=(max(0.55 * n * k + 2.5, 10.0), 0.5 * n + 2.5),
        gridspec_kw={"width_ratios": [1.0] * k + [0.05]},
    )
    for ax, x in zip(axes[0][:k], shown, strict=True):
        image = plots.plot_matrix(ax, labels, *mats[x], title=f"correlation {x:g}")
    fig.colorbar(image, cax=axes[0][k], label="P(row ends lower than column)")
    fig.suptitle(
        "P(a run of the row's model ends lower than a run of the column's), final test MSE "
        "(mean over tasks)\n* : the 95% bootstrap CI excludes 0.5",
        fontsize=10,
    )
    plots.write_csv(
        out / "relatedness_improvement.csv",
        ["a", "b", "correlation", "p_a_better", "ci_lo", "ci_hi"],
        rows,
    )
    return [plots.save(fig, out / "relatedness_improvement.png", caption)]


register(
    Experiment(
        name="relatedness",
        description="every registered architecture across the correlation grid (headline figure)",
        cells=cells,
        figures=(draw, draw_improvement),
    )
)
