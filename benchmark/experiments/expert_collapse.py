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
from ..protocol import Claim, Experiment, Verdict, grid
from ..runner import Results
from . import register
from ._common import fmt_ci

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
    fig, axes = plots.figure(1, len(panels), figsize=(7 * len(panels) + 2, 5))
    rows = []
    for i, (ax, (key, label)) in enumerate(zip(axes[0], panels.items(), strict=True)):
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
        last = i == len(panels) - 1  # one legend, beside the last panel: it hides no line
        plots.plot_lines(
            ax,
            series,
            "task correlation",
            f"{label}\n(95% CI of the mean)",
            title=label,
            legend="outside" if last else None,
        )
    plots.write_csv(
        out / "expert_collapse.csv",
        ["model", "metric", "correlation", "mean", "ci_lo", "ci_hi"],
        rows,
    )
    return [plots.save(fig, out / "expert_collapse.png", caption)]


def _cosine(cell) -> np.ndarray:
    """(runs,) each run's mean pairwise expert cosine (averaged over its expert groups)."""
    a = cell.arrays["expert_cosine"]
    return np.nanmean(np.reshape(a, (a.shape[0], -1)), axis=-1)


def alike_with_relatedness(res: Results) -> Verdict:
    by = res.by_model().get("mmoe", {})
    if 0.0 not in by or 1.0 not in by:
        return Verdict(None, "MMoE at p = 0 and p = 1 not stored")
    ci = stats.paired_diff(_cosine(by[1.0]), _cosine(by[0.0]))
    return Verdict(
        bool(ci[1] > 0), f"MMoE expert cosine at p=1 minus at p=0, paired: {fmt_ci(*ci)}"
    )


def home_less_alike(res: Results) -> Verdict:
    by = res.by_model()
    if "mmoe" not in by or "mmoe_norm" not in by:
        return Verdict(None, "MMoE and the HoME-style MMoE not both stored")
    xs = sorted(set(by["mmoe"]) & set(by["mmoe_norm"]))

    def over_p(m):
        return np.mean([_cosine(by[m][x]) for x in xs], axis=0)  # (runs,) paired

    ci = stats.paired_diff(over_p("mmoe"), over_p("mmoe_norm"))
    return Verdict(
        bool(ci[1] > 0),
        f"MMoE minus HoME-style expert cosine, mean over {len(xs)} correlations, paired: "
        f"{fmt_ci(*ci)}",
    )


register(
    Experiment(
        name="expert_collapse",
        description="how alike the experts become (MMoE, OMoE, DSelect-k, HoME-style) across p",
        cells=cells,
        figures=(draw,),
        claims=(
            Claim(
                "expert_collapse.alike_with_relatedness",
                "Ma et al., KDD 2018 (MMoE's premise: gates let less related tasks use the "
                "experts differently)",
                "MMoE's experts are less alike when the tasks are less related",
                "the paired 95% CI of MMoE's mean expert cosine at p=1 minus at p=0 is above 0",
                alike_with_relatedness,
            ),
            Claim(
                "expert_collapse.home_less_alike",
                "Wang et al., HoME, arXiv 2408.05430 (expert normalisation against collapse)",
                "expert normalisation and Swish keep the experts less alike than MMoE's",
                "the paired 95% CI of MMoE's minus the HoME-style MMoE's expert cosine, each "
                "run's averaged over the correlations, is above 0",
                home_less_alike,
            ),
        ),
    )
)
