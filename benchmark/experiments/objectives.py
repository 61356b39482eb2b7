"""Loss balancing and gradient surgery against task relatedness: every registered training
objective on Shared-Bottom and MMoE across the correlation grid.

Does any objective close Shared-Bottom's gap to MMoE at low relatedness? The objectives
are those of :mod:`benchmark.objectives` (uncertainty weighting, Kendall et al. 2018;
GradNorm, Chen et al. 2018; PCGrad, Yu et al. 2020; MGDA and MGDA-UB, Sener & Koltun
2018; CAGrad, Liu et al. 2021; FAMO, Liu et al. 2023; random loss weighting, Lin et al.
2022; Nash-MTL, Navon et al. 2022). The equal-weight cells are the `relatedness` cells.
Not part of `run all` (`make extend`): every objective x 2 models x 12 correlations x
the sweep's runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import objectives as objective_registry
from .. import plots, stats
from ..models import ModelConfig, get
from ..protocol import Cell, Claim, Experiment, Verdict
from ..runner import Results
from . import register
from ._common import fmt_ci
from .gradient_conflict import COLUMNS, YLABEL, conflict_table

MODELS = ("shared_bottom", "mmoe")
LOW = 0.3  # "low relatedness": correlations up to 0.3
HALF = 0.5  # "closes the gap": at least half of it


def cells(profile):
    """Every objective x model x correlation. The order is the training order: first the
    cells the claim reads (Shared-Bottom at p <= LOW, every objective), so that a run cut
    short has decided the claim first, then the rest objective by objective."""
    out = []
    for o in objective_registry.names():
        for m in MODELS:
            for p in profile.correlations:
                spec = dataclasses.replace(profile.spec(ModelConfig.of(m), float(p)), objective=o)
                out.append(Cell(spec, profile.sweep_runs, series=f"{get(m).label} · {o}"))
    return tuple(sorted(out, key=lambda c: not _for_claim(c)))  # stable: keeps the rest


def _for_claim(cell: Cell) -> bool:
    return cell.model.name == MODELS[0] and cell.x <= LOW


def _by(res: Results) -> dict:
    """``{(model, objective): {x: (runs,) mean-over-tasks final loss}}``."""
    out: dict = {}
    for c in res.cells:
        out.setdefault((c.meta["model"], c.objective), {})[round(c.x, 6)] = c.final.mean(-1)
    return out


def _over(by: dict, m: str, o: str, xs) -> np.ndarray:
    """``(runs,)``: each run's loss under ``(m, o)`` averaged over the correlations ``xs``
    (paired across cells: run i of every cell shares its key)."""
    return np.mean([by[(m, o)][x] for x in xs], axis=0)


def _labels(groups) -> list[str]:
    """The objective labels of ``{(model, label): ...}``, in registry order (equal first),
    a tuned objective (``gradnorm(alpha=0.5)``) after its paper-default one."""
    order = {n: i for i, n in enumerate(objective_registry.names())}
    return sorted({o for _, o in groups}, key=lambda o: (order.get(o.split("(")[0], len(order)), o))


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = _by(res)
    fig, axes = plots.figure(1, len(MODELS), figsize=(7 * len(MODELS) + 2, 5), sharey=True)
    rows = []
    for ax, m in zip(axes[0], MODELS, strict=True):
        series = []
        for i, o in enumerate(_labels(by)):
            if (m, o) not in by:
                continue
            xs = sorted(by[(m, o)])
            vals = np.array([[stats.iqm(by[(m, o)][x]), *stats.iqm_ci(by[(m, o)][x])] for x in xs])
            series.append((o, "k" if o == "equal" else f"C{i % 10}", xs, *vals.T))
            rows += [[m, o, x, *v] for x, v in zip(xs, vals, strict=True)]
        plots.plot_lines(
            ax,
            series,
            "task correlation",
            "final test MSE (IQM, 95% CI)",
            title=f"{get(m).label}: every objective",
            legend=None,
        )
    # One legend beside the last panel, of every panel's series (a panel's own legend hid
    # points); the colours follow the registry order, so they agree across panels.
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    order = _labels({(None, o): None for o in handles})
    axes[0][-1].legend(
        [handles[o] for o in order],
        order,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
    )
    plots.write_csv(
        out / "objectives.csv", ["model", "objective", "correlation", "iqm", "ci_lo", "ci_hi"], rows
    )
    plots.write_csv(out / "objectives_vs_equal.csv", VS_EQUAL, vs_equal(by))
    return [plots.save(fig, out / "objectives.png", caption)]


VS_EQUAL = ["model", "objective", "correlations", "iqm_difference", "ci_lo", "ci_hi"]


def vs_equal(by: dict) -> list[list]:
    """Each objective against equal weights across the whole grid: rows ``[model,
    objective, n_correlations, point, lo, hi]`` of the paired IQM difference (objective
    minus equal; negative: the objective lowers the loss), each run's loss averaged over
    the correlations, with its paired 95% bootstrap CI. Only the objectives whose cells are
    stored at every correlation equal weights has; ``by`` is :func:`_by`'s."""
    rows = []
    for m in MODELS:
        xs = sorted(by.get((m, "equal"), {}))
        if not xs:
            continue
        equal = _over(by, m, "equal", xs)
        for o in _labels(by):
            if o == "equal" or not all(x in by.get((m, o), {}) for x in xs):
                continue
            rows.append(
                [m, o, len(xs), *stats.paired_diff(_over(by, m, o, xs), equal, stats.iqm_axis)]
            )
    return rows


def draw_conflict(res: Results, out: Path, caption: str) -> list[Path]:
    """The tasks' gradient cosine on the shared parameters under every objective: which
    objectives remove the conflict (``objectives_conflict.png``)."""
    table, rows = conflict_table(res)
    fig, axes = plots.figure(1, len(MODELS), figsize=(7 * len(MODELS), 5), sharey=True)
    for ax, m in zip(axes[0], MODELS, strict=True):
        series = [
            (o, "k" if o == "equal" else f"C{i % 10}", *_xs_vals(table[(m, o)]))
            for i, o in enumerate(_labels(table))
            if (m, o) in table
        ]
        ylabel = YLABEL if m == MODELS[0] else ""
        plots.plot_lines(ax, series, "task correlation", ylabel, title=f"{get(m).label}")
        ax.axhline(0, color="k", lw=0.8)
    plots.write_csv(out / "objectives_conflict.csv", COLUMNS, rows)
    return [plots.save(fig, out / "objectives_conflict.png", caption)]


def _xs_vals(entry):
    xs, vals = entry
    return (xs, *vals.T)


def closes_gap(res: Results) -> Verdict:
    by = _by(res)
    xs = [x for x in sorted(by[("shared_bottom", "equal")]) if x <= LOW]
    others = [o for o in _labels(by) if o != "equal" and ("shared_bottom", o) in by]
    if res.manifest.get("partial"):  # still training (`report --partial`): decide only
        # once every objective's cells that the claim reads are stored
        have = {o.split("(")[0] for o in others if all(x in by[("shared_bottom", o)] for x in xs)}
        wait = [o for o in objective_registry.names() if o != "equal" and o not in have]
        if wait:
            return Verdict(None, f"waits for Shared-Bottom at p ≤ {LOW} under {', '.join(wait)}")
    if not others:
        return Verdict(None, "no objective but equal has Shared-Bottom cells")

    sb, mmoe = _over(by, "shared_bottom", "equal", xs), _over(by, "mmoe", "equal", xs)

    def share(a, b, c, axis):
        return np.mean(a - b, axis=axis) / np.mean(a - c, axis=axis)

    parts, best = [], None
    for o in others:
        ci = stats.paired_bootstrap(share, [sb, _over(by, "shared_bottom", o, xs), mmoe])
        parts.append(f"{o} {fmt_ci(*ci, digits=2)}")
        if best is None or ci[1] > best[1][1]:
            best = (o, ci)
    holds = best is not None and best[1][1] > HALF
    return Verdict(holds, f"share of SB's gap to MMoE at p ≤ {LOW} closed: " + ", ".join(parts))


register(
    Experiment(
        name="objectives",
        description="every training objective x {Shared-Bottom, MMoE} across the correlations",
        cells=cells,
        figures=(draw, draw_conflict),
        claims=(
            Claim(
                "objectives.close_gap",
                "this benchmark's question",
                "some loss-balancing or gradient-surgery objective closes Shared-Bottom's "
                "gap to MMoE at low relatedness",
                f"for some objective, the paired 95% CI of (SB_equal − SB_objective) / "
                f"(SB_equal − MMoE_equal), each run's loss averaged over tasks and the "
                f"correlations ≤ {LOW}, is above {HALF}",
                closes_gap,
            ),
        ),
        in_all=False,
    )
)
