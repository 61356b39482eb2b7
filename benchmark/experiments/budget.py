"""The training budget: the distribution of final losses as the number of steps doubles.

It makes the plateau escape visible (KDD18's Figure 5 clusters form as the runs escape),
and it decides the default protocol by the rule of docs/protocol.md: the cheapest budget
S at which (1) at most 2% of the runs of every Figure 4 MoE cell end above a loss of 0.4,
and (2) doubling S moves every Figure 4 cell's mean final loss by less than 25% and flips
no Figure 4/5 claim's verdict. Shared-Bottom, OMoE and MMoE at the Figure 4 correlations,
at 1/8 to twice the profile's steps (late: 20k to 320k), with the profile's learning
rate and schedule shape. The cells train in the order the decision needs them: the
profile's own budget and its double first, then the smaller budgets.
Not part of ``run all``: ``python -m benchmark run budget --profile late``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import plots
from ..models import ModelConfig
from ..protocol import PAPER_CORRS, Cell, Experiment
from ..runner import Results
from . import register
from .fig4 import CLAIMS as FIG4_CLAIMS

MODELS = ("shared_bottom", "omoe", "mmoe")
SCALES = (0.125, 0.25, 0.5, 1, 2)  # multiples of the profile's steps (late: 20k to 320k)
TRAIN_ORDER = (1, 2, 0.5, 0.25, 0.125)  # the candidate and its double first
RUNS = 32
PLATEAU = 0.4  # a final loss above this is a run still on the plateau
MAX_ON_PLATEAU = 0.02
MAX_MOVE = 0.25


def budgets(profile) -> tuple[int, ...]:
    """The step counts trained: ``SCALES`` times the profile's steps."""
    return tuple(int(profile.train.steps * f) for f in SCALES)


def cells(profile):
    """The cells, in ``TRAIN_ORDER``: a cut run has decided the candidate first."""
    out, steps_of = [], dict(zip(SCALES, budgets(profile), strict=True))
    for steps in (steps_of[f] for f in TRAIN_ORDER):
        for m in MODELS:
            for p in PAPER_CORRS:
                spec = profile.spec(ModelConfig.of(m), p, steps=steps)
                out.append(Cell(spec, RUNS, series=f"{spec.model.display()} @ {steps // 1000}k"))
    return tuple(out)


def at_budget(res: Results, steps: int) -> Results:
    """The cells trained for ``steps``, as a Figure 4 result (one cell per model and p)."""
    chosen = [
        dataclasses.replace(c, meta=c.meta | {"series": c.meta["model"]})
        for c in res.cells
        if c.meta["steps"] == steps
    ]
    return Results("fig4", {"eval_steps": [0, steps]}, chosen)


def decide(res: Results) -> list[dict]:
    """One row per budget S that has 2S stored: each condition's numbers and verdict."""
    stored = sorted({c.meta["steps"] for c in res.cells})
    rows = []
    for s in stored:
        now = at_budget(res, s).by_model()
        on_plateau = {
            (m, p): float(np.mean(now[m][p].final[:, 0] > PLATEAU))
            for m in ("omoe", "mmoe")
            for p in now[m]
        }
        row = {"steps": s, "worst_on_plateau": max(on_plateau.values())}
        row["past_plateau"] = row["worst_on_plateau"] <= MAX_ON_PLATEAU
        if 2 * s in stored:
            later = at_budget(res, 2 * s).by_model()
            moves = {
                (m, p): abs(
                    np.nanmean(later[m][p].final[:, 0]) / np.nanmean(now[m][p].final[:, 0]) - 1
                )
                for m in MODELS
                for p in now[m]
            }
            verdicts = [
                (c.name, c.test(at_budget(res, s)).holds, c.test(at_budget(res, 2 * s)).holds)
                for c in FIG4_CLAIMS
            ]
            flips = [n for n, a, b in verdicts if a != b]
            row |= {
                "worst_move": max(moves.values()),
                "flips": flips,
                "insensitive": max(moves.values()) < MAX_MOVE and not flips,
            }
            row["chosen_ok"] = row["past_plateau"] and row["insensitive"]
        rows.append(row)
    return rows


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = {}
    for c in res.cells:
        by.setdefault((c.meta["model"], c.x), {})[c.meta["steps"]] = c.final[:, 0]
    fig, axes = plots.figure(len(MODELS), len(PAPER_CORRS), figsize=(12, 9), sharey=True)
    rows = []
    for i, m in enumerate(MODELS):
        for j, p in enumerate(PAPER_CORRS):
            ax = axes[i][j]
            per = by.get((m, p), {})
            steps = sorted(per)
            data = [v[np.isfinite(v)] for v in (per[s] for s in steps)]
            if data:
                ax.boxplot(data, positions=range(len(steps)), widths=0.5, showfliers=False)
                rng = np.random.default_rng(0)
                for k, v in enumerate(data):
                    ax.plot(
                        k + rng.uniform(-0.18, 0.18, v.size),
                        v,
                        ".",
                        ms=3,
                        alpha=0.6,
                        color=plots.color(m),
                    )
                    frac = float(np.mean(v > PLATEAU)) if v.size else float("nan")
                    ax.text(
                        k,
                        0.02,
                        f"{frac:.0%}",
                        ha="center",
                        fontsize=7,
                        color="0.3",
                        transform=ax.get_xaxis_transform(),
                    )
                    rows.append([m, p, steps[k], v.size, float(np.mean(v)), frac])
                ax.set_xticks(range(len(steps)), [f"{s // 1000}k" for s in steps])
            ax.axhline(PLATEAU, color="0.5", ls="--", lw=0.8)
            ax.set_title(f"{m}, p={p:g}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
            if i == len(MODELS) - 1:
                ax.set_xlabel("training steps (% of runs above 0.4 at the foot)")
            if j == 0:
                ax.set_ylabel("final test MSE, task 1")
    plots.write_csv(
        out / "budget.csv",
        ["model", "correlation", "steps", "runs", "mean", "frac_above_0.4"],
        rows,
    )
    lines = [
        "| steps | worst MoE share above 0.4 | past the plateau | worst mean move at 2x "
        "| claims that flip at 2x | insensitive | both |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in decide(res):
        lines.append(
            f"| {r['steps']:,} | {r['worst_on_plateau']:.1%} | {r['past_plateau']} | "
            + (
                f"{r['worst_move']:.1%} | {', '.join(r['flips']) or 'none'} | "
                f"{r['insensitive']} | {r['chosen_ok']} |"
                if "worst_move" in r
                else "– | – | – | – |"
            )
        )
    (out / "budget.md").write_text("\n".join(lines) + "\n")
    return [plots.save(fig, out / "budget.png", caption)]


register(
    Experiment(
        name="budget",
        description="final-loss distributions from 1/8 to 2x the steps; the protocol's budget rule",
        cells=cells,
        figures=(draw,),
        in_all=False,
    )
)
