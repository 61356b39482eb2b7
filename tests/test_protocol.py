"""The protocol's rules (docs/protocol.md) on synthetic results: the budget rule of the
`budget` experiment and the fair learning-rate rule of `lr_grid`."""

from __future__ import annotations

import numpy as np

from benchmark.experiments import budget, lr_grid
from benchmark.protocol import PAPER_CORRS, get_profile
from benchmark.runner import CellResult, Results

MODELS = ("shared_bottom", "omoe", "mmoe")


def _cell(model, p, steps, final, lr=3e-3):
    final = np.stack([final, final], axis=1)
    meta = {"series": model, "model": model, "x": p, "steps": steps, "lr": lr,
            "n_runs": final.shape[0], "key": f"{model}{p}{steps}{lr}", "objective": "equal",
            "corr": p}  # fmt: skip
    curves = np.repeat(final[:, None], 2, axis=1)
    return CellResult(meta, {"final": final, "curves": curves,
                             "diverged": np.zeros(final.shape[0], bool)})  # fmt: skip


def _budget_results(loss_at, stuck_at):
    """``loss_at[steps]``: the good runs' level; ``stuck_at[steps]``: runs above 0.4."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=32)
    cells = []
    for steps, level in loss_at.items():
        for i, m in enumerate(MODELS):
            for j, p in enumerate(PAPER_CORRS):
                final = level * (1 + 0.3 * i) * (1 + 0.2 * (2 - j)) + 0.01 * shared
                final[: stuck_at[steps]] = 0.45
                cells.append(_cell(m, p, steps, final))
    return Results("budget", {"eval_steps": [0, 1]}, cells)


def test_budget_rule_picks_the_first_budget_past_the_plateau_and_stable():
    loss = {10_000: 0.3, 20_000: 0.12, 40_000: 0.1, 80_000: 0.09}
    stuck = {10_000: 10, 20_000: 0, 40_000: 0, 80_000: 0}
    rows = {r["steps"]: r for r in budget.decide(_budget_results(loss, stuck))}
    assert set(rows) == set(loss)
    assert not rows[10_000]["past_plateau"] and rows[10_000]["worst_on_plateau"] > 0.02
    assert rows[20_000]["past_plateau"] and rows[20_000]["worst_move"] < 0.25
    assert "worst_move" not in rows[80_000]  # no 160k to compare with
    ok = [s for s, r in sorted(rows.items()) if r.get("chosen_ok")]
    assert ok and ok[0] == 20_000


def test_budget_rule_refuses_a_budget_whose_losses_still_travel():
    loss = {10_000: 0.3, 20_000: 0.15, 40_000: 0.075, 80_000: 0.07}
    stuck = dict.fromkeys(loss, 0)
    rows = {r["steps"]: r for r in budget.decide(_budget_results(loss, stuck))}
    assert rows[20_000]["past_plateau"] and not rows[20_000]["insensitive"]  # 50% move
    assert rows[40_000]["chosen_ok"]


def test_budget_cells_scale_with_the_profile():
    late = get_profile("late")
    assert budget.budgets(late) == (20_000, 40_000, 80_000, 160_000, 320_000)
    cells = budget.cells(late)
    assert len(cells) == 5 * 3 * 3 and all(c.n_runs >= 32 for c in cells)
    # The candidate's own budget and its double train first: a cut run has decided it.
    assert [c.spec.train.steps for c in cells[:18]] == [160_000] * 9 + [320_000] * 9
    assert sorted(budget.SCALES) == sorted(budget.TRAIN_ORDER)
    # The late profile's own budget is the same spec as its fig4 cells: reused, not retrained.
    from benchmark.experiments import get

    fig4 = {c.key() for c in get("fig4").cells(late)}
    assert {c.key() for c in cells if c.spec.train.steps == late.train.steps} == fig4


def test_lr_rule_pools_the_architectures_and_avoids_divergence():
    rng = np.random.default_rng(1)
    cells = []
    # 3e-3 is best for MMoE alone, 1e-3 best pooled; 1e-2 has a diverged run.
    level = {1e-3: {"shared_bottom": 0.2, "omoe": 0.2, "mmoe": 0.2},
             3e-3: {"shared_bottom": 0.35, "omoe": 0.3, "mmoe": 0.1},
             1e-2: {"shared_bottom": 0.05, "omoe": 0.05, "mmoe": 0.05}}  # fmt: skip
    for lr, per in level.items():
        for m, v in per.items():
            for p in PAPER_CORRS:
                final = v + 0.01 * rng.normal(size=8)
                if lr == 1e-2 and m == "mmoe" and p == 1.0:
                    final[0] = np.nan  # a diverged run
                cells.append(_cell(m, p, 40_000, final, lr=lr))
    best, table = lr_grid.choose(Results("lr_grid", {"eval_steps": [0, 1]}, cells))
    assert best == 1e-3
    assert table[1e-2][3] == 2 and table[1e-3][3] == 0  # both tasks of the diverged run
    assert table[3e-3][0] > table[1e-3][0]
