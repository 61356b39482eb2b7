"""KDD18 Figure 3: Shared-Bottom (a bottom of 16 units) at correlations 0.5, 0.9 and 1.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, section 3.3 and Figure 3.
"""

from __future__ import annotations

from pathlib import Path

from .. import plots, stats
from ..models import ModelConfig
from ..protocol import PAPER_CORRS, Claim, Experiment, Verdict, grid
from ..runner import Results
from . import register
from ._common import BAND, curve_rows, fmt_ci, write_curves

SB16 = ModelConfig.of("shared_bottom", bottom_units=16)


def cells(profile):
    return grid(profile, (SB16,), PAPER_CORRS, profile.paper_runs)


def draw(res: Results, out: Path, caption: str) -> list[Path]:
    cells_ = sorted(res.cells, key=lambda c: -c.x)
    series, rows = curve_rows(
        res, [(f"correlation {c.x:g}", plots.corr_color(c.x), c) for c in cells_]
    )
    fig, axes = plots.figure(figsize=(6, 4.5))
    plots.plot_curves(
        axes[0][0],
        res.eval_steps,
        series,
        "test MSE, task 1",
        title=f"Shared-Bottom (bottom 16), mean of {res.n_runs} runs",
        band=BAND,
        log=True,
    )
    write_curves(out / "fig3_shared_bottom.csv", rows)
    return [plots.save(fig, out / "fig3_shared_bottom.png", caption)]


def ordering_at_every_step(res: Results) -> Verdict:
    cells_ = sorted(res.cells, key=lambda c: c.x)
    n_steps = res.eval_steps.size - 1
    parts, holds = [], True
    for lo_cell, hi_cell in zip(cells_, cells_[1:], strict=False):
        a, b = lo_cell.arrays["curves"][:, :, 0], hi_cell.arrays["curves"][:, :, 0]
        above = [stats.paired_diff(a[:, s], b[:, s], seed=s)[1] > 0 for s in range(1, n_steps + 1)]
        final = stats.paired_diff(a[:, -1], b[:, -1])
        holds &= all(above)
        parts.append(
            f"p={lo_cell.x:g} − p={hi_cell.x:g}: final {fmt_ci(*final)}, CI above 0 "
            f"at {sum(above)}/{n_steps} steps"
        )
    return Verdict(holds, "; ".join(parts) + " (paired mean difference of task-1 MSE)")


register(
    Experiment(
        name="fig3",
        description="KDD18 Fig. 3: Shared-Bottom (bottom 16) at correlations 0.5, 0.9, 1",
        cells=cells,
        figures=(draw,),
        claims=(
            Claim(
                name="fig3.ordering",
                source="KDD18 Fig. 3",
                words="Shared-Bottom does worse as task correlation drops, at every step",
                rule="for each adjacent pair of correlations, the 95% paired-bootstrap CI of "
                "the mean task-1 loss difference (lower p minus higher p) is above 0 at "
                "every evaluated step after step 0",
                test=ordering_at_every_step,
            ),
        ),
    )
)
