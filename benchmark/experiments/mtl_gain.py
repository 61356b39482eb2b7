"""PLE20's MTL gain: single-task MSE minus multi-task MSE, per task, run by run.

Tang et al., "Progressive Layered Extraction (PLE)", RecSys 2020, section 5.1 (the
synthetic-data study), at its correlation levels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig
from ..protocol import PLE_CORRS, Claim, Experiment, Verdict, grid
from ..runner import Results
from . import register
from ._common import fmt_ci

BASELINE = "single_task"
MODELS = (BASELINE, "shared_bottom", "mmoe", "cgc", "ple")


def cells(profile):
    return grid(profile, tuple(ModelConfig.of(m) for m in MODELS), PLE_CORRS, profile.sweep_runs)


def gains(res: Results) -> dict:
    """``{model: {x: (runs, K) paired per-run gains}}``: single-task minus model MSE."""
    by = res.by_model()
    base = by[BASELINE]
    return {
        m: {x: base[x].final - cell.final for x, cell in by[m].items()} for m in by if m != BASELINE
    }


def gain_cis(res: Results) -> dict:
    """``{model: {x: [(mean, lo, hi) per task]}}``: mean gain with a 95% bootstrap CI."""
    return {
        m: {
            x: [(float(np.nanmean(g[:, k])), *stats.mean_ci(g[:, k])) for k in range(g.shape[1])]
            for x, g in per_x.items()
        }
        for m, per_x in gains(res).items()
    }


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    cis = gain_cis(res)
    xs = sorted(next(iter(cis.values())))
    n_tasks = len(next(iter(cis.values()))[xs[0]])
    labels = {c.meta["model"]: c.series for c in res.cells}
    fig, axes = plots.figure(1, n_tasks, figsize=(6 * n_tasks, 4.5), sharey=True)
    for k in range(n_tasks):
        series = [
            (labels[m], plots.color(m), *np.array([v[x][k] for x in xs]).T) for m, v in cis.items()
        ]
        plots.plot_bars(
            axes[0][k],
            [f"{x:g}" for x in xs],
            series,
            "MTL gain (single-task MSE − multi-task MSE)",
            title=f"task {k + 1} (95% CI of the mean)",
        )
        axes[0][k].set_xlabel("task correlation")
    rows = [[m, x, k + 1, *v[x][k]] for m, v in cis.items() for x in xs for k in range(n_tasks)]
    plots.write_csv(
        out / "mtl_gain.csv", ["model", "correlation", "task", "gain", "ci_lo", "ci_hi"], rows
    )
    return [plots.save(fig, out / "mtl_gain.png", caption)]


def ple_best(res: Results) -> Verdict:
    by = res.by_model()
    parts, holds = [], True
    for x in sorted(by["ple"]):
        ple = by["ple"][x].final
        worst = None
        for m in by:
            if m in (BASELINE, "ple"):
                continue
            for k in range(ple.shape[1]):
                # gain(PLE) − gain(m) = MSE(m) − MSE(PLE), paired run by run.
                ci = stats.paired_diff(by[m][x].final[:, k], ple[:, k])
                holds &= ci[1] > 0
                if worst is None or ci[1] < worst[1][1]:
                    worst = (f"{m} task {k + 1}", ci)
        parts.append(f"p={x:g}: closest {worst[0]} {fmt_ci(*worst[1])}")
    return Verdict(holds, "; ".join(parts) + " (gain of PLE minus gain of the other model)")


def seesaw(res: Results) -> Verdict:
    found, checked = [], []
    for m, per_x in gain_cis(res).items():
        if m not in ("shared_bottom", "mmoe"):
            continue
        for x, tasks in sorted(per_x.items()):
            up = [k + 1 for k, (_, lo, _) in enumerate(tasks) if lo > 0]
            down = [k + 1 for k, (_, _, hi) in enumerate(tasks) if hi < 0]
            if up and down:
                found.append(
                    f"{m}@{x:g} (tasks {up} gain, {down} lose: "
                    + ", ".join(fmt_ci(*t) for t in tasks)
                    + ")"
                )
            checked.append(f"{m}@{x:g}")
    text = "; ".join(found) if found else f"none of {len(checked)} cells"
    return Verdict(bool(found), text)


register(
    Experiment(
        name="mtl_gain",
        description="PLE20: single-task MSE minus multi-task MSE per task, SB/MMoE/CGC/PLE",
        cells=cells,
        figures=(draw,),
        claims=(
            Claim(
                "mtl_gain.ple_best",
                "PLE20 Fig. 5",
                "PLE has the best MTL gain for both tasks at every correlation",
                "at every p, for every task and every other model, the paired 95% CI of "
                "PLE's gain minus the model's gain is above 0",
                ple_best,
            ),
            Claim(
                "mtl_gain.seesaw",
                "PLE20 Fig. 5",
                "Shared-Bottom and MMoE sometimes show a seesaw: one task gains, the other loses",
                "some SB or MMoE cell has one task whose 95% CI of the mean gain is "
                "above 0 and another whose CI is below 0",
                seesaw,
            ),
        ),
    )
)
