"""KDD18 Figures 4 and 5: Shared-Bottom (113 units), OMoE and MMoE at correlations 0.5,
0.9 and 1: loss curves, and histograms of the final losses.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, section 5.2 and Figures 4-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import ModelConfig, get
from ..protocol import PAPER_CORRS, Claim, Experiment, Verdict, grid
from ..runner import Results
from . import register
from ._common import BAND, all_finite, curve_rows, fmt_ci, task1, write_curves

MODELS = ("shared_bottom", "omoe", "mmoe")
MOE = ("omoe", "mmoe")
EQUIVALENCE = 0.10  # "almost equal": the difference's CI within ±10% of MMoE's IQM
ROBUST_RATIO = 1.25  # "as robust": the IQR ratio's CI within [1/1.25, 1.25]
COMPARABLE = 1.5  # "comparable": the largest 5% quantile within 1.5x the smallest
BEST_Q = 0.05  # "best losses": the 5% quantile of a cell's final losses


def cells(profile):
    return grid(profile, tuple(ModelConfig.of(m) for m in MODELS), PAPER_CORRS, profile.paper_runs)


def _label(model: str) -> str:
    return get(model).label


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    by = res.by_model()
    models = [m for m in ("mmoe", "omoe", "shared_bottom") if m in by]
    fig, axes = plots.figure(1, len(models), figsize=(5 * len(models), 4.2), sharey=True)
    rows = []
    for ax, model in zip(axes[0], models, strict=True):
        ps = sorted(by[model], reverse=True)
        series, r = curve_rows(
            res, [(f"correlation {p:g}", plots.corr_color(p), by[model][p]) for p in ps]
        )
        rows += r
        plots.plot_curves(
            ax,
            res.eval_steps,
            series,
            "test MSE, task 1",
            title=f"{_label(model)} (mean of {res.n_runs} runs)",
            band=BAND,
            log=True,
        )
    write_curves(out / "fig4_models.csv", rows)
    paths = [plots.save(fig, out / "fig4_models.png", caption)]

    corrs = sorted({p for m in models for p in by[m]})
    finals = {(m, p): by[m][p].final[:, 0] for m in models for p in corrs}
    pooled = all_finite(*finals.values())
    edges = np.linspace(pooled.min(), pooled.max(), 31) if pooled.size else np.linspace(0, 1, 31)
    hist = [
        [
            (f"{_label(m)}, corr {p:g}", f[np.isfinite(f)], int((~np.isfinite(f)).sum()))
            for p in corrs
            for f in [finals[(m, p)]]
        ]
        for m in models
    ]
    fig, axes = plots.figure(
        len(models), len(corrs), figsize=(3.6 * len(corrs), 2.6 * len(models)), sharey=True
    )
    plots.plot_histograms(
        axes, hist, edges, colors=[plots.color(m) for m in models], xlabel="final test MSE, task 1"
    )
    paths.append(plots.save(fig, out / "fig5_histograms.png", caption))
    plots.write_csv(
        out / "fig5_histograms.csv",
        ["model", "correlation", "run", "final_task1"],
        [[m, p, i, float(v)] for (m, p), f in finals.items() for i, v in enumerate(f)],
    )
    return paths


PAIRS = (("mmoe", "shared_bottom"), ("omoe", "shared_bottom"), ("mmoe", "omoe"))


def draw_improvement(res: Results, out: Path, caption: str) -> list[Path]:
    """P(a run of A ends lower than a run of B), with a 95% bootstrap CI (rliable's
    probability of improvement), for each pair of the three models at each correlation."""
    rows, csv_rows = [], []
    for p in _ps(res):
        for a, b in PAIRS:
            x, y = task1(res, a, p), task1(res, b, p)
            point, (lo, hi) = stats.prob_better(x, y), stats.prob_better_ci(x, y)
            rows.append(
                (f"P({_label(a)} < {_label(b)}), p={p:g}", plots.corr_color(p), point, lo, hi)
            )
            csv_rows.append([a, b, p, point, lo, hi])
    fig, axes = plots.figure(figsize=(7, 0.35 * len(rows) + 1.5))
    plots.plot_intervals(
        axes[0][0], rows, "probability of improvement (task-1 final MSE)", reference=0.5
    )
    axes[0][0].set_title("P(a run of A ends lower than a run of B), 95% bootstrap CI", fontsize=10)
    plots.write_csv(
        out / "prob_improvement.csv",
        ["a", "b", "correlation", "p_a_better", "ci_lo", "ci_hi"],
        csv_rows,
    )
    return [plots.save(fig, out / "prob_improvement.png", caption)]


def _ps(res: Results) -> list[float]:
    return sorted(res.by_model()["mmoe"])


def monotone(res: Results) -> Verdict:
    ps, parts, holds = _ps(res), [], True
    for m in MODELS:
        cis = [
            stats.paired_diff(task1(res, m, a), task1(res, m, b), stats.iqm_axis)
            for a, b in zip(ps, ps[1:], strict=False)
        ]
        ok = all(ci[1] > 0 for ci in cis)
        holds &= ok
        parts.append(f"{m}: " + ", ".join(fmt_ci(*ci) for ci in cis) + (" ✓" if ok else " ✗"))
    pairs = ", ".join(f"IQM(p={a:g}) − IQM(p={b:g})" for a, b in zip(ps, ps[1:], strict=False))
    return Verdict(holds, "; ".join(parts) + f" ({pairs}, paired)")


def _spread(x05, x1, axis):
    return stats.iqm_axis(x05, axis) - stats.iqm_axis(x1, axis)


def mmoe_spread(res: Results) -> Verdict:
    ps = _ps(res)
    lo, hi = ps[0], ps[-1]
    own = {m: _spread(task1(res, m, lo), task1(res, m, hi), 0) for m in MODELS}
    parts, holds = (
        [
            f"spread IQM(p={lo:g}) − IQM(p={hi:g}): "
            + ", ".join(f"{m} {own[m]:.3f}" for m in MODELS)
        ],
        True,
    )
    for other in ("omoe", "shared_bottom"):
        arrays = [task1(res, m, p) for m in ("mmoe", other) for p in (lo, hi)]
        ci = stats.paired_bootstrap(
            lambda a, b, c, d, axis: _spread(a, b, axis) - _spread(c, d, axis), arrays
        )
        holds &= ci[2] < 0
        parts.append(f"MMoE − {other}: {fmt_ci(*ci)}")
    return Verdict(holds, "; ".join(parts))


def equal_at_one(res: Results) -> Verdict:
    p = _ps(res)[-1]
    m, o = task1(res, "mmoe", p), task1(res, "omoe", p)
    ci = stats.paired_diff(m, o, stats.iqm_axis)
    bound = EQUIVALENCE * stats.iqm(m)
    holds = -bound < ci[1] and ci[2] < bound
    return Verdict(
        holds,
        f"IQM at p={p:g}: MMoE {stats.iqm(m):.4f}, OMoE {stats.iqm(o):.4f}; "
        f"difference {fmt_ci(*ci, digits=4)} against ±{bound:.4f}",
    )


def moe_beats_sb(res: Results) -> Verdict:
    parts, holds = [], True
    for p in _ps(res):
        sb = task1(res, "shared_bottom", p)
        cis = {m: stats.paired_diff(sb, task1(res, m, p)) for m in MOE}
        pb = {m: stats.prob_better(task1(res, m, p), sb) for m in MOE}
        holds &= all(ci[1] > 0 for ci in cis.values())
        parts.append(
            f"p={p:g}: "
            + ", ".join(f"SB − {m} {fmt_ci(*cis[m])} (P(better) {pb[m]:.2f})" for m in MOE)
        )
    return Verdict(holds, "; ".join(parts) + " (mean task-1 MSE, paired)")


def sb_spreads_more(res: Results) -> Verdict:
    parts, holds = [], True
    for p in _ps(res):
        sb = task1(res, "shared_bottom", p)
        cis = {m: stats.paired_diff(sb, task1(res, m, p), stats.iqr_axis) for m in MOE}
        holds &= all(ci[1] > 0 for ci in cis.values())
        parts.append(
            f"p={p:g}: IQR(SB) {stats.iqr_axis(sb[np.isfinite(sb)]):.3f}; "
            + ", ".join(f"IQR(SB) − IQR({m}) {fmt_ci(*cis[m])}" for m in MOE)
        )
    return Verdict(holds, "; ".join(parts))


def omoe_robust(res: Results) -> Verdict:
    ps = _ps(res)
    lo, hi = ps[0], ps[-1]
    diff = stats.paired_diff(task1(res, "omoe", lo), task1(res, "mmoe", lo), stats.iqr_axis)
    ratio = stats.paired_bootstrap(
        lambda a, b, axis: stats.iqr_axis(a, axis) / stats.iqr_axis(b, axis),
        [task1(res, "omoe", hi), task1(res, "mmoe", hi)],
    )
    holds = diff[1] > 0 and 1 / ROBUST_RATIO < ratio[1] and ratio[2] < ROBUST_RATIO
    return Verdict(
        holds,
        f"p={lo:g}: IQR(OMoE) − IQR(MMoE) {fmt_ci(*diff)}; p={hi:g}: "
        f"IQR(OMoE) / IQR(MMoE) {fmt_ci(*ratio, digits=2)} against "
        f"[{1 / ROBUST_RATIO:.2f}, {ROBUST_RATIO:.2f}]",
    )


def best_comparable(res: Results) -> Verdict:
    q = stats.quantile_axis(BEST_Q)

    def ratio(*arrays, axis):
        qs = np.stack([q(a, axis) for a in arrays])
        return qs.max(0) / qs.min(0)

    parts, holds = [], True
    for p in _ps(res):
        arrays = [task1(res, m, p) for m in MODELS]
        ci = stats.paired_bootstrap(ratio, arrays)
        holds &= ci[2] <= COMPARABLE
        best = ", ".join(
            f"{m} {q(a[np.isfinite(a)], 0):.3f}" for m, a in zip(MODELS, arrays, strict=True)
        )
        parts.append(f"p={p:g}: {best}; largest/smallest {fmt_ci(*ci, digits=2)}")
    return Verdict(holds, "; ".join(parts) + f" (5% quantile of task-1 MSE; bound {COMPARABLE})")


CLAIMS = (
    Claim(
        "fig4.monotone",
        "KDD18 Fig. 4",
        "every model does better at higher correlation",
        "for every model and each adjacent pair of correlations, the paired 95% CI of "
        "IQM(lower p) − IQM(higher p) of task-1 final MSE is above 0",
        monotone,
    ),
    Claim(
        "fig4.mmoe_spread",
        "KDD18 Fig. 4",
        "MMoE's spread across correlations is much smaller than OMoE's and SB's",
        "spread = IQM(p=0.5) − IQM(p=1); the paired 95% CI of MMoE's spread minus each "
        "other model's is below 0",
        mmoe_spread,
    ),
    Claim(
        "fig4.equal_at_1",
        "KDD18 Fig. 4",
        "at correlation 1, MMoE and OMoE are almost equal",
        f"the paired 95% CI of IQM(MMoE) − IQM(OMoE) at p=1 lies within ±{EQUIVALENCE:.0%} "
        "of MMoE's IQM",
        equal_at_one,
    ),
    Claim(
        "fig4.moe_beats_sb",
        "KDD18 Fig. 4",
        "both MoE models beat Shared-Bottom at every correlation, on average",
        "at every p, the paired 95% CI of mean(SB − MoE) task-1 final MSE is above 0, for "
        "OMoE and MMoE",
        moe_beats_sb,
    ),
    Claim(
        "fig5.sb_spread",
        "KDD18 Fig. 5",
        "Shared-Bottom's final losses vary much more than the MoE models', at every correlation",
        "at every p, the paired 95% CI of IQR(SB) − IQR(MoE) is above 0, for OMoE and MMoE",
        sb_spreads_more,
    ),
    Claim(
        "fig5.omoe_robust",
        "KDD18 Fig. 5",
        "OMoE is as robust as MMoE at correlation 1, and clearly less robust at 0.5",
        "the paired 95% CI of IQR(OMoE) − IQR(MMoE) at p=0.5 is above 0, and the CI of "
        f"IQR(OMoE)/IQR(MMoE) at p=1 lies within [{1 / ROBUST_RATIO:.2f}, {ROBUST_RATIO}]",
        omoe_robust,
    ),
    Claim(
        "fig5.best_comparable",
        "KDD18 Fig. 5",
        "the best (lowest) losses of the three models are comparable",
        f"at every p, the paired 95% CI of the largest over the smallest {BEST_Q:.0%} "
        f"quantile of the three models' task-1 final MSE is at most {COMPARABLE}",
        best_comparable,
    ),
)

register(
    Experiment(
        name="fig4",
        description="KDD18 Fig. 4/5: Shared-Bottom (113), OMoE, MMoE at correlations 0.5, 0.9, 1",
        cells=cells,
        figures=(draw, draw_improvement),
        claims=CLAIMS,
    )
)
