"""Every registered claim, on one synthetic fixture where it holds and one where it fails.

The test is parameterised over the whole registry: a new claim without fixtures here fails
``test_every_claim_has_fixtures``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import experiments, protocol
from benchmark.models import ModelConfig
from benchmark.runner import CellResult, Results

N = 200
PS = (0.5, 0.9, 1.0)
STEPS = np.arange(0, 2001, 500)


def _cell(model, x, final, curves=None, objective="equal", grad_cosine=None):
    final = np.asarray(final, dtype=np.float64)
    if final.ndim == 1:
        final = np.stack([final, final], axis=1)
    if curves is None:
        curves = np.repeat(final[:, None, :], STEPS.size, axis=1)
    meta = {"series": f"{model} {objective}", "model": model, "x": x, "n_runs": final.shape[0],
            "key": f"{model}-{x}-{objective}", "objective": objective, "corr": x}  # fmt: skip
    arrays = {"final": final, "curves": curves, "diverged": np.zeros(final.shape[0], bool)}
    if grad_cosine is not None:
        arrays["grad_cosine"] = grad_cosine
    return CellResult(meta, arrays)


def _results(name, cells):
    return Results(name, {"eval_steps": STEPS.tolist()}, cells)


def _draws(seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=N)  # what a run's key gives every cell (paired)
    return lambda: shared + 0.3 * rng.normal(size=N)


def fig4(loc=None, scale=None, seed=0):
    """SB, OMoE, MMoE at PS: final = loc + scale * z (z paired across cells by run)."""
    loc = {"shared_bottom": (0.5, 0.4, 0.3), "omoe": (0.35, 0.25, 0.15),
           "mmoe": (0.3, 0.2, 0.15)} | (loc or {})  # fmt: skip
    scale = {"shared_bottom": (0.1,) * 3, "omoe": (0.03,) * 3, "mmoe": (0.03,) * 3} | (scale or {})
    z = _draws(seed)
    cells = [_cell(m, p, loc[m][i] + scale[m][i] * z()) for m in loc for i, p in enumerate(PS)]
    return _results("fig4", cells)


def fig3(offsets=(0.2, 0.1, 0.0), final_offsets=None):
    z = _draws()
    cells = []
    for i, p in enumerate(PS):
        base = 1.0 / (1 + STEPS / 500.0)  # (steps,)
        off = np.full(STEPS.size, offsets[i])
        if final_offsets is not None:
            off[-1] = final_offsets[i]
        curves = (base + off)[None, :] + 0.02 * np.stack([z() for _ in STEPS], axis=1)
        curves = np.repeat(curves[:, :, None], 2, axis=2)
        cells.append(_cell("shared_bottom", p, curves[:, -1], curves))
    return _results("fig3", cells)


def mtl_gain(loss=None, task2=None):
    """single_task, SB, MMoE, CGC, PLE at the PLE levels; ``task2`` overrides task 2."""
    loss = {"single_task": 0.4, "shared_bottom": 0.35, "mmoe": 0.3, "cgc": 0.3,
            "ple": 0.1} | (loss or {})  # fmt: skip
    z = _draws()
    cells = []
    for p in protocol.PLE_CORRS:
        for m, v in loss.items():
            t1 = v + 0.02 * z()
            t2 = (task2 or {}).get(m, v) + 0.02 * z()
            cells.append(_cell(m, p, np.stack([t1, t2], axis=1)))
    return _results("mtl_gain", cells)


def depth(deep_loss):
    """The depth experiment's models at three correlations; MMoE-deep at ``deep_loss``."""
    loss = {"shared_bottom": 0.35, "shared_bottom_deep": 0.2, "mmoe": 0.3,
            "mmoe_deep": deep_loss, "cgc": 0.28, "ple": 0.1}  # fmt: skip
    z = _draws()
    cells = [_cell(m, x, v + 0.02 * z()) for m, v in loss.items() for x in (0.0, 0.5, 1.0)]
    return _results("depth", cells)


def objectives_results(sb_pcgrad):
    """SB and MMoE under equal weights and PCGrad; SB-PCGrad's level is ``sb_pcgrad``."""
    z = _draws()
    level = {("shared_bottom", "equal"): 0.4, ("mmoe", "equal"): 0.2,
             ("shared_bottom", "pcgrad"): sb_pcgrad, ("mmoe", "pcgrad"): 0.2}  # fmt: skip
    cells = [_cell(m, x, v + 0.02 * z(), objective=o)
             for (m, o), v in level.items() for x in (0.0, 0.2, 0.5, 1.0)]  # fmt: skip
    return _results("objectives", cells)


def conflict(rises=True):
    """The gradient cosine of two models at p = 0 and p = 1."""
    z = _draws()
    cells = []
    for m in ("shared_bottom", "mmoe"):
        for x in (0.0, 1.0):
            level = (0.5 if x == 1.0 else 0.0) if rises else 0.1
            cos = np.repeat((level + 0.05 * z())[:, None], STEPS.size, axis=1)
            cells.append(_cell(m, x, 0.3 + 0.01 * z(), grad_cosine=cos))
    return _results("gradient_conflict", cells)


def collapse(rises=True, home_lower=True):
    """MMoE and the HoME-style MMoE's expert cosine at p = 0, 0.5 and 1."""
    z = _draws()
    cells = []
    for m in ("mmoe", "mmoe_norm"):
        for x in (0.0, 0.5, 1.0):
            level = (
                0.3 + (0.2 * x if rises else 0.0) - (0.1 if m == "mmoe_norm" and home_lower else 0)
            )
            cell = _cell(m, x, 0.3 + 0.01 * z())
            cell.arrays["expert_cosine"] = level + 0.05 * z()
            cells.append(cell)
    return _results("expert_collapse", cells)


def data_regime(effect_small=0.3, gain_small=0.2):
    """Every data_regime architecture at the smallest size and in the stream, at p = 0 and
    1: task 1's loss is 0.2 + effect·(1 − p) for a multi-task model and 0.2 + gain for the
    single-task one, with the given effect and gain at 1e4 and 0.05 of each in the stream."""
    from benchmark.experiments import data_regime as dr

    z = _draws()
    cells = []
    for n, eff, g in ((10_000, effect_small, gain_small), (None, 0.05, 0.05)):
        noise = {m: 0.01 * z() for m in dr.MODELS}  # a run's own, at every correlation
        for p in (0.0, 1.0):
            for m in dr.MODELS:
                loss = 0.2 + (g if m == dr.BASELINE else eff * (1 - p)) + noise[m]
                cell = _cell(m, p, loss)
                cell.meta |= {"series": f"{m} @ {dr.size_label(n)}", "n_train": n}
                cell.arrays["best"] = cell.arrays["final"]
                cells.append(cell)
    return _results("data_regime", cells)


def many_tasks(route=True, sb_grows=True, ds_better=True, sb_negative=True, n_runs=40):
    """Every many_tasks cell that a claim reads, in both regimes. Per-task losses
    (runs, K) are 0.2 + a run's own noise, moved by the switches: Shared-Bottom's tasks
    are 0.3 worse with 4 clusters than with 1 at K = 16 (else one of MMoE's tasks is),
    DSelect-k is 0.05 better than MMoE at K >= 8 (else 0.05 worse), Shared-Bottom is 0.1
    worse than single-task at K = 16, C = 4 (else 0.1 better). With ``route`` a gated model's tasks
    of one cluster share a gate vector and clusters use different experts; else every
    task uses every expert alike."""
    from benchmark.experiments import many_tasks as mt

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(n_runs, 1))
    cells = []

    def add(model, n, k, c, p, level):
        best = level + 0.01 * (shared + rng.normal(size=(n_runs, k)))
        corr = np.array(mt.cosines(k, c, p))
        cluster = mt.structure(corr)[3]
        if model in mt.HEATMAP:
            g = np.full((n_runs, k, 8), 1 / 8)
            if route:
                g = 0.02 + 0.84 * (np.arange(8)[None, None] % c == cluster[None, :, None])
                g = g / g.sum(-1, keepdims=True) + 0.01 * rng.random((n_runs, k, 8))
        else:
            g = np.zeros((n_runs, k, 0))
        cell = _cell(model, float(k), best)
        cell.meta |= {"series": f"{model} {k} {c} {p} {n}", "corr": corr.tolist(), "n_tasks": k}
        cell.meta |= {"steps": 40, "train_wall_s": 1e-3 * k, "n_train": n}
        cell.arrays |= {"best": best, "gate_mean": g}
        cells.append(cell)

    for n in mt.SIZES:
        for k, c, p in mt.settings():
            for m in ("mmoe", "dselect_k"):
                if k >= 8:
                    better = (-0.05 if ds_better else 0.05) if m == "dselect_k" else 0.0
                    add(m, n, k, c, p, 0.2 + better)
        sb4 = 0.2 + (0.3 if sb_grows else 0.0)
        add("shared_bottom", n, 16, 1, 1.0, 0.2)
        add("shared_bottom", n, 16, 4, 1.0, sb4)
        add("single_task", n, 16, 4, 1.0, sb4 + (-0.1 if sb_negative else 0.1))
        if not sb_grows:  # MMoE's worst task grows instead
            mmoe4 = [x for x in cells if x.meta["model"] == "mmoe" and x.meta["n_train"] == n
                     and x.meta["series"].startswith("mmoe 16 4 1.0")]  # fmt: skip
            mmoe4[0].arrays["best"][:, 0] += 0.3
    return _results("many_tasks", cells)


def _many_tasks_fixtures():
    from benchmark.experiments import many_tasks as mt

    out = {}
    switches = {
        "gates_recover_clusters": "route",
        "sb_worst_grows_with_clusters": "sb_grows",
        "dselect_beats_mmoe": "ds_better",
        "sb_negative_transfer": "sb_negative",
    }
    for n in mt.SIZES:
        for name, switch in switches.items():
            out[f"many_tasks.{name}_{mt.size_label(n)}"] = (
                many_tasks(),
                many_tasks(**{switch: False}),
            )
    return out


FIXTURES = {
    **_many_tasks_fixtures(),
    "data_regime.effect_shrinks": (data_regime(), data_regime(effect_small=0.05)),
    "data_regime.gain_shrinks": (data_regime(), data_regime(gain_small=0.0)),
    "expert_collapse.alike_with_relatedness": (collapse(), collapse(rises=False)),
    "expert_collapse.home_less_alike": (collapse(), collapse(home_lower=False)),
    "objectives.close_gap": (objectives_results(0.25), objectives_results(0.38)),
    "gradient_conflict.falls": (conflict(True), conflict(False)),
    "depth.ple_lead_is_depth": (depth(0.12), depth(0.25)),
    "fig3.ordering": (fig3(), fig3(final_offsets=(0.2, 0.0, 0.1))),
    "fig4.monotone": (fig4(), fig4(loc={"mmoe": (0.3, 0.15, 0.15)})),
    "fig4.mmoe_spread": (
        fig4(loc={"mmoe": (0.17, 0.16, 0.15)}),
        fig4(loc={"mmoe": (0.5, 0.3, 0.15)}),
    ),
    "fig4.equal_at_1": (fig4(), fig4(loc={"omoe": (0.35, 0.25, 0.25)})),
    "fig4.moe_beats_sb": (fig4(), fig4(loc={"shared_bottom": (0.5, 0.4, 0.15)})),
    "fig5.sb_spread": (fig4(), fig4(scale={"shared_bottom": (0.1, 0.1, 0.03)})),
    "fig5.omoe_robust": (
        fig4(scale={"omoe": (0.08, 0.05, 0.03)}),
        fig4(scale={"omoe": (0.03, 0.03, 0.03)}),
    ),
    "fig5.best_comparable": (
        fig4(loc={"shared_bottom": (0.32, 0.22, 0.16)}, scale={"shared_bottom": (0.04,) * 3}),
        fig4(loc={"mmoe": (0.9, 0.9, 0.9)}),
    ),
    "mtl_gain.ple_best": (mtl_gain(), mtl_gain(loss={"cgc": 0.1})),
    "mtl_gain.seesaw": (mtl_gain(task2={"shared_bottom": 0.5}), mtl_gain()),
}


def _claims():
    return [c for n in experiments.names() for c in experiments.get(n).claims]


def test_every_claim_has_fixtures():
    assert sorted(c.name for c in _claims()) == sorted(FIXTURES)


@pytest.mark.parametrize("claim", _claims(), ids=lambda c: c.name)
def test_claim_holds_on_its_fixture_and_fails_on_the_other(claim):
    holds, fails = FIXTURES[claim.name]
    good, bad = claim.test(holds), claim.test(fails)
    assert good.holds is True, good.evidence
    assert bad.holds is False, bad.evidence
    assert "[" in good.evidence and "]" in good.evidence  # an interval backs the verdict
    assert claim.words and claim.rule and claim.source


def test_the_objectives_figures_draw_from_their_cells(tmp_path):
    """Both figures of `objectives` (the final loss, and the gradient conflict under each
    objective) draw from its cells, with a CSV row per model, objective and correlation."""
    res = objectives_results(0.25)
    for i, c in enumerate(res.cells):
        c.arrays["grad_cosine"] = np.full((N, STEPS.size), 0.1 * (i % 3))
    written = []
    for fn in experiments.get("objectives").figures:
        written += fn(res, tmp_path, "caption")
    assert [p.name for p in written] == ["objectives.png", "objectives_conflict.png"]
    for name in ("objectives", "objectives_conflict"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        rows = (tmp_path / f"{name}.csv").read_text().strip().splitlines()[1:]
        assert len(rows) == len(res.cells)
    rows = (tmp_path / "objectives_vs_equal.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["shared_bottom", "pcgrad"], ["mmoe", "pcgrad"]]


def test_objectives_vs_equal_reads_the_objectives_stored_at_every_correlation():
    """The across-the-grid table (``objectives_vs_equal.csv``): the paired IQM difference
    against equal weights, only for an objective stored at every correlation."""
    from benchmark.experiments import objectives as exp

    by = exp._by(objectives_results(0.25))
    del by[("mmoe", "pcgrad")][1.0]
    rows = exp.vs_equal(by)
    assert [r[:3] for r in rows] == [["shared_bottom", "pcgrad", 4]]
    point, lo, hi = rows[0][3:]
    assert lo < point < hi < 0
    assert point == pytest.approx(0.25 - 0.4, abs=0.01)


def test_the_objectives_cells_train_the_claims_cells_first():
    """`objectives` trains first the cells its claim reads (Shared-Bottom at p <= 0.3, every
    objective), so a run cut short has decided the claim; the cells are still every
    objective x model x correlation, each once."""
    from benchmark import objectives as objective_registry
    from benchmark.experiments import objectives as exp

    profile = protocol.get_profile("default")
    cells = experiments.get("objectives").cells(profile)
    combos = [(c.spec.objective_name, c.model.name, c.x) for c in cells]
    want = {
        (o, m, float(p))
        for o in objective_registry.names()
        for m in exp.MODELS
        for p in profile.correlations
    }
    assert len(combos) == len(set(combos)) and set(combos) == want
    n_claim = len(objective_registry.names()) * sum(p <= exp.LOW for p in profile.correlations)
    assert all(m == "shared_bottom" and x <= exp.LOW for _, m, x in combos[:n_claim])
    assert not any(m == "shared_bottom" and x <= exp.LOW for _, m, x in combos[n_claim:])


def test_the_objectives_claim_waits_for_every_objective_while_training():
    """On the cells stored so far (`report --partial`), the claim stays undecided until
    every registered objective has its Shared-Bottom cells at p <= 0.3; on complete
    results it decides over the objectives present."""
    import dataclasses

    from benchmark import objectives as objective_registry

    claim = experiments.get("objectives").claims[0]
    res = objectives_results(0.25)
    partial = dataclasses.replace(res, manifest={**res.manifest, "partial": True})
    v = claim.test(partial)
    assert v.holds is None and "cagrad" in v.evidence and "pcgrad" not in v.evidence
    assert claim.test(res).holds is True
    others = [o for o in objective_registry.names() if o not in ("equal", "pcgrad")]
    extra = [_cell("shared_bottom", x, np.full(N, 0.4), objective=o)
             for o in others for x in (0.0, 0.2)]  # fmt: skip
    full = dataclasses.replace(partial, cells=[*res.cells, *extra])
    assert claim.test(full).holds is True  # decided: PCGrad closes the gap


def test_the_data_regime_figures_draw_from_their_cells(tmp_path):
    """Its three figures draw from the stored cells; the CSVs hold the paired effect and
    gain per size, and the single-task control's effect is 0 (its task 1 is the same run
    at every correlation)."""
    import csv

    from benchmark.experiments import data_regime as dr

    res = data_regime()
    paths = [p for fn in experiments.get("data_regime").figures for p in fn(res, tmp_path, "c")]
    assert sorted(p.name for p in paths) == [
        "data_regime_effect.png",
        "data_regime_gain.png",
        "data_regime_loss.png",
        "data_regime_where.png",
    ]
    rows = list(csv.DictReader(open(tmp_path / "data_regime_effect.csv")))
    effect = {(r["model"], r["size"]): float(r["effect"]) for r in rows}
    assert effect[(dr.BASELINE, "1e4")] == 0.0
    assert abs(effect[("mmoe", "1e4")] - 0.3) < 0.02
    assert abs(effect[("mmoe", "stream")] - 0.05) < 0.02
    relative = {(r["model"], r["size"]): float(r["relative"]) for r in rows}
    assert relative[(dr.BASELINE, "1e4")] == 0.0
    assert abs(relative[("mmoe", "1e4")] - 0.3 / 0.2) < 0.15  # loss 0.5 at p = 0, 0.2 at 1
    assert all(float(r["rel_lo"]) <= float(r["relative"]) <= float(r["rel_hi"]) for r in rows)
    gain = list(csv.DictReader(open(tmp_path / "data_regime_gain.csv")))
    assert {r["size"] for r in gain} == {"1e4", "stream"}
    assert dr.BASELINE not in {r["model"] for r in gain}
    sizes = list(csv.DictReader(open(tmp_path / "data_regime_sizes.csv")))
    # Only the finite sizes stored: 1e4, where every architecture's effect is 0.3.
    assert [(r["size"], r["effect_above_0"], r["effect_below_0"]) for r in sizes] == [
        ("1e4", "4", "0")
    ]


def test_the_data_regime_where_figure_follows_the_effect_along_training(tmp_path):
    """`where`: at every evaluation, each multi-task architecture's paired effect of the
    lowest correlation against p = 1 along task 1's test curve (task 2's is not read),
    and the ratio; the single-task control is left out; an effect that exists only
    mid-training shows only there; the early-stopping steps are the quartiles of the runs
    that did not diverge and store one. `where_table` and the figure's CSV agree."""
    import csv

    from benchmark.experiments import data_regime as dr

    res = data_regime()
    bump = np.array([0.0, 0.0, 1.0, 1.0, 0.0])  # an effect at the middle evaluations only
    rng = np.random.default_rng(1)
    for c in res.cells:
        c.arrays["diverged"] = np.zeros(N, bool)
        if c.meta["model"] == "mmoe" and c.meta["n_train"] == 10_000 and c.x == 0.0:
            base = c.arrays["curves"] - 0.3  # the fixture's effect, removed ...
            task1 = np.array([1.0, 0.0])  # ... and put back mid-way, for task 1 only
            c.arrays["curves"] = base + 0.3 * bump[None, :, None] * task1 + 5.0 * (1 - task1)
        c.arrays["best_eval"] = rng.integers(0, STEPS.size, size=c.final.shape)
    ple = [c for c in res.cells if c.meta["model"] == "ple" and c.meta["n_train"] is None]
    ple[0].arrays["best_eval"][:, 0] = 4  # the last evaluation, but for:
    ple[0].arrays["best_eval"][:3, 0] = -1  # runs stored without one,
    ple[0].arrays["diverged"][3:10] = True  # diverged runs,
    ple[0].arrays["best_eval"][3:10, 0] = 0
    ple[1].arrays["best_eval"][:, 0] = 2  # the other cell's at the middle one, but for
    ple[1].arrays["diverged"][:15] = True  # 15 diverged runs
    ple[1].arrays["best_eval"][:15, 0] = 0

    w = dr.where(res)
    assert w.low == 0.0 and w.models == list(dr.MODELS[1:]) and w.sizes == [10_000, None]
    eff = w.effects[("mmoe", 10_000)]
    assert eff[:, 0] == pytest.approx(0.3 * bump, abs=1e-9)  # task 1's, not task 2's
    assert list(w.shown(("mmoe", 10_000))) == [False, False, True, True, False]
    assert eff[:, 3] == pytest.approx(0.3 * bump / 0.2, abs=0.15)
    assert w.effects[("omoe", None)][:, 0] == pytest.approx(0.05, abs=0.01)
    # PLE in the stream: 190 runs at the last evaluation, 185 at the middle one (counting
    # the 22 diverged runs, stopped at the first, would put the median at the middle one).
    median, q1, q3, runs = w.stops[("ple", None)]
    assert runs == 375 and (q1, median, q3) == (STEPS[2], STEPS[4], STEPS[4])

    out = tmp_path / "where"
    out.mkdir()
    assert [p.name for p in dr.draw_where(res, out, "c")] == ["data_regime_where.png"]
    rows = list(csv.DictReader(open(out / "data_regime_where.csv")))
    assert len(rows) == 4 * 2 * STEPS.size  # architectures x sizes x evaluations
    at = {(r["model"], r["size"], int(r["step"])): r for r in rows}
    assert [float(at[("mmoe", "1e4", int(s))]["effect"]) for s in STEPS] == pytest.approx(
        list(eff[:, 0]), abs=1e-6
    )
    assert float(at[("ple", "stream", 0)]["stop_runs"]) == 375

    table = {(r[0], r[1]): r for r in dr.where_table(res)}
    peak = table[("mmoe", "1e4")]
    assert peak[5] in (STEPS[2], STEPS[3]) and peak[9:] == [2, STEPS.size]
    assert peak[6] == pytest.approx(1.0)  # the last evaluation: no effect
    assert "| 10^4 |" in dr.where_markdown(res)


def test_the_data_regime_effect_table_names_where_relatedness_moves_the_loss():
    """`effect_table`: per size and correlation below 1, the multi-task architectures
    whose paired early-stopped effect against p = 1 has its CI off 0, and only those; a
    cell missing at a size leaves that size's entry out."""
    from benchmark.experiments import data_regime as dr

    z, cells = _draws(), []
    shift = {("mmoe", 10_000, 0.0): 0.1, ("omoe", None, 0.5): -0.1}
    for n in (10_000, None):
        noise = {m: 0.01 * z() for m in dr.MODELS}  # a run's own, at every correlation
        for p in (0.0, 0.5, 1.0):
            for m in dr.MODELS:
                if (m, n, p) == ("ple", None, 0.5):
                    continue  # not stored
                cell = _cell(m, p, 0.2 + shift.get((m, n, p), 0.0) + noise[m])
                cell.meta |= {"series": f"{m} @ {dr.size_label(n)}", "n_train": n}
                cell.arrays["best"] = cell.arrays["final"]
                cells.append(cell)
    res = _results("data_regime", cells)
    rows = {(r[0], r[1]): r[2] for r in dr.effect_table(res)}
    assert set(rows) == {("1e4", 0.0), ("1e4", 0.5), ("stream", 0.0), ("stream", 0.5)}
    (found,) = rows[("1e4", 0.0)]
    assert found[0] == "mmoe" and found[1] == pytest.approx(0.1) and found[2] > 0
    assert [f[0] for f in rows[("stream", 0.5)]] == ["omoe"]
    assert rows[("1e4", 0.5)] == [] and rows[("stream", 0.0)] == []
    table = dr.effect_markdown(res)
    assert "| 10^4 | MMoE +0.100 | none |" in table
    assert "| stream | none | OMoE −0.100 (3 of 4 stored) |" in table  # PLE at 0.5 missing


def test_the_data_regime_ends_table_gives_each_size_its_iqm_at_both_ends():
    """`ends_markdown`: a row per stored size, the baseline's one value and each
    multi-task architecture's IQM at the lowest correlation / at p = 1."""
    from benchmark import stats
    from benchmark.experiments import data_regime as dr

    res = data_regime()
    table = dr.ends_markdown(res)
    lines = table.split("\n")
    assert lines[0] == "| size | Single-task | Shared-Bottom | OMoE | MMoE | PLE |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 10^4", "| stream"]
    mmoe = {round(c.x, 6): c for c in res.cells if c.meta["model"] == "mmoe"
            and c.meta["n_train"] == 10_000}  # fmt: skip
    low, high = (stats.iqm(mmoe[p].arrays["best"][:, 0]) for p in (0.0, 1.0))
    assert f" {low:.3f} / {high:.3f} " in lines[2] and low > high + 0.2  # the 0.3 effect
    assert lines[2].split(" | ")[1].count("/") == 0  # the baseline: one value


def test_the_many_tasks_tables_give_loss_transfer_and_routing_per_setting():
    """On the claims' fixture: Shared-Bottom is 0.1 worse than single-task on every one
    of K = 16 tasks at C = 4 (16/16 negative), MMoE and DSelect-k route each cluster
    alike (within − across far above 0); a setting stored for no model has no row."""
    from benchmark.experiments import many_tasks as mt

    res = many_tasks()
    loss = mt.loss_markdown(res).split("\n")
    assert loss[0] == "| regime | K | C | p_in | Single-task | Shared-Bottom | MMoE | DSelect-k |"
    assert len(loss) == 2 + 2 * 12  # K = 8 and 16 (12 settings) in each regime
    assert {line.split(" | ")[1] for line in loss[2:]} == {"8", "16"}  # K < 8: none stored
    row = next(line for line in loss if line.startswith("| 1e5 | 16 | 4 | 1 |"))
    assert row.split(" | ")[5].startswith("0.49")  # Shared-Bottom's 0.2 + 0.3
    transfer = mt.transfer_markdown(res).split("\n")
    assert len(transfer) == 2 + 2  # only K = 16, C = 4, p_in = 1 has its baseline
    sb, mmoe = transfer[2].split(" | ")[4:6]
    assert sb.startswith("−0.10") and sb.endswith("; 16/16")
    assert mmoe.startswith("+0.20") and mmoe.endswith("; 0/16")
    routing = mt.routing_markdown(res).split("\n")
    assert routing[0] == "| regime | K | C | p_in | MMoE | DSelect-k |"
    assert len(routing) == 2 + 2 * 8  # C = 2 and 4 at K = 8 and 16, two p_in, two regimes
    assert all(cell.startswith("+0.8") or cell.startswith("+0.9")
               for line in routing[2:] for cell in line.split(" | ")[4:6])  # fmt: skip
    unrouted = mt.routing_markdown(many_tasks(route=False)).split("\n")[2]
    assert unrouted.split(" | ")[4].startswith("+0.00")


def test_the_many_tasks_stops_table_says_whether_runs_still_improve_at_the_end():
    """`stops_markdown`: per (regime, K) and architecture, the share of tasks whose lowest
    validation MSE is the last evaluation, over the runs that did not diverge, and the
    median fall of the mean-task test MSE over the last tenth of the evaluations."""
    from benchmark.experiments import many_tasks as mt

    res = many_tasks()
    last = STEPS.size - 1
    for c in res.cells:
        runs, k = c.final.shape
        if c.meta["model"] == "dselect_k" and c.meta["n_train"] == mt.SIZES[0]:
            # Falls to 1.0 from 1.25 one evaluation before the end: a 25% fall; every task
            # stops at the end but in 10 runs that diverged (stopped at the first).
            c.arrays["curves"] = np.repeat(np.linspace(2.0, 1.0, STEPS.size)[:, None], k, 1)
            c.arrays["curves"] = np.repeat(c.arrays["curves"][None], runs, 0)
            c.arrays["curves"][:, last - 1] = 1.25
            c.arrays["best_eval"] = np.full((runs, k), last)
            c.arrays["diverged"] = np.arange(runs) < 10
            c.arrays["best_eval"][:10] = 0
        elif c.meta["model"] == "mmoe":  # stops early on half its tasks; flat curves
            c.arrays["best_eval"] = np.where(np.arange(k) % 2 == 0, last, 1)[None].repeat(runs, 0)
    lines = mt.stops_markdown(res).split("\n")
    assert lines[0] == "| regime | K | Single-task | Shared-Bottom | MMoE | DSelect-k |"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        ["| 1e5", "8"], ["| 1e5", "16"], ["| stream", "8"], ["| stream", "16"]
    ]  # fmt: skip
    row = {tuple(line[:-2].split(" | ")[:2]): line[:-2].split(" | ")[2:] for line in lines[2:]}
    assert row[("| 1e5", "16")] == ["n/a · 0%", "n/a · 0%", "50% · 0%", "100% · 25%"]
    assert row[("| 1e5", "8")][:2] == ["–", "–"]  # no single-task or SB cell at K = 8
    assert row[("| stream", "16")][3] == "n/a · 0%"  # no best evaluation stored
    assert mt.stops_markdown(mt.Results("many_tasks", {}, [])) == "No cell is stored yet."


def test_the_docs_tables_say_what_is_missing_instead_of_drawing_a_broken_table():
    """A table with no column or no row is a sentence; an entry whose architectures are
    partly stored says how many; a p = 1 alone has no lower end; a diverged cell reads
    n/a; and an architecture's label keeps its hyphen."""
    import dataclasses

    from benchmark.experiments import _common
    from benchmark.experiments import data_regime as dr
    from benchmark.experiments import many_tasks as mt

    res = many_tasks()
    single = dataclasses.replace(
        res, cells=[c for c in res.cells if c.meta["model"] == dr.BASELINE]
    )
    assert mt.transfer_markdown(single).startswith("No setting has both")
    assert mt.routing_markdown(single).startswith("No gated architecture")
    assert mt.loss_markdown(single).count("\n") == 3  # two regimes' one setting

    full = data_regime()
    assert "| 10^4 | Shared-Bottom +0.300, OMoE +0.300" in dr.effect_markdown(full)
    some = [c for c in full.cells if not (c.x == 0.0 and c.meta["model"] in ("mmoe", "ple")
                                           and c.meta["n_train"] == 10_000)]  # fmt: skip
    table = dr.effect_markdown(dataclasses.replace(full, cells=some))
    assert "| 10^4 | Shared-Bottom +0.300, OMoE +0.300 (2 of 4 stored) |" in table
    ends = [c for c in full.cells if c.x == 1.0]
    assert dr.ends_markdown(dataclasses.replace(full, cells=ends)).startswith("No cell")
    assert dr.effect_markdown(dataclasses.replace(full, cells=ends)).startswith("No cell")
    assert _common.fmt_ci(float("nan"), 0.0, 0.0) == "n/a"
    assert _common.fmt_ci(-0.0125, -0.02, 0.01, signed=True) == "−0.013 [−0.020, 0.010]"


def test_an_experiments_tables_need_names_a_document_can_hold():
    exp = experiments.get("fig3")

    def ends(res):
        return ""

    def claims(res):
        return ""

    for tables in ((ends, ends), (claims,), (lambda res: "",)):
        with pytest.raises(ValueError, match="tables= needs functions with distinct names"):
            protocol.Experiment(exp.name, exp.description, exp.cells, tables=tables)


def test_the_data_regime_stops_table_gives_each_cells_early_stopping_step():
    """`stops_markdown`: the median step of task 1's lowest validation loss and its
    quartiles, over the runs that did not diverge and store one, per size, multi-task
    architecture and correlation; the single-task control has no row."""
    from benchmark.experiments import data_regime as dr

    res = data_regime()
    for c in res.cells:
        c.arrays["diverged"] = np.zeros(N, bool)
        c.arrays["best_eval"] = np.full(c.final.shape, 4)  # step 2000
        if (c.meta["model"], c.meta["n_train"], c.x) == ("omoe", 10_000, 1.0):
            c.arrays["best_eval"][:, 0] = np.where(np.arange(N) < N // 2, 1, 3)  # 500, 1500
            c.arrays["diverged"][N // 2 :] = True  # so its median is 500
        if (c.meta["model"], c.meta["n_train"], c.x) == ("mmoe", None, 0.0):
            c.arrays["best_eval"][:, 0] = -1  # none stored
    table = dr.stops_markdown(res).split("\n")
    assert table[0] == "| size | architecture | p = 0 | p = 1 |"
    assert len(table) == 2 + 2 * 4  # two sizes x four multi-task architectures
    assert "| 10^4 | OMoE | 2k | 500 |" in table
    assert "| stream | MMoE | n/a | 2k |" in table
    assert not any("Single-task" in line for line in table)


def test_experiment_blocks_fill_the_tables_and_claims_an_experiment_names(tmp_path):
    """`EXPERIMENT.FUNCTION` is one of its `tables`, `EXPERIMENT.claims` its verdicts; an
    experiment with no cell stored says so; a name no experiment writes is left out, and
    rendering a document that holds it names it."""
    from benchmark.report import experiment_blocks, render_readme

    exps = [experiments.get(n) for n in ("data_regime", "many_tasks", "fig3")]
    names = ["data_regime.ends_markdown", "many_tasks.claims", "fig3.nope", "nope.x", "claims"]
    blocks = experiment_blocks(tmp_path, protocol.get_profile("default"), exps, names)
    assert blocks == {
        "data_regime.ends_markdown": "No cell of `data_regime` is stored yet.\n",
        "many_tasks.claims": "No cell of `many_tasks` is stored yet.\n",
    }
    text = "<!-- generated: fig3.nope -->\n<!-- /generated -->\n"
    with pytest.raises(ValueError, match="'fig3.nope' has no generator"):
        render_readme(text, blocks)


def test_verdicts_markdown_decides_an_experiments_claims_on_its_stored_cells():
    from benchmark.report import verdicts_markdown

    exp = experiments.get("many_tasks")
    lines = verdicts_markdown(exp, many_tasks(sb_negative=False)).split("\n")
    assert lines[0] == "| claim | reproduces | deciding interval |" and lines[-1] == ""
    assert len(lines) == 2 + len(exp.claims) + 1
    by = {line.split("`")[1]: line.split(" | ")[1] for line in lines[2:-1]}
    assert by["many_tasks.gates_recover_clusters_1e5"] == "**yes**"
    assert by["many_tasks.sb_negative_transfer_stream"] == "no"


def test_plot_heatmap_puts_each_row_and_mark_where_its_label_is():
    """Row r of the values is drawn at the height of label r, top to bottom; hidden and
    missing values are masked from the colour mesh; each mark lands on its own row."""
    from benchmark import plots

    _, axes = plots.figure()
    ax = axes[0][0]
    values = np.array([[0.5, -0.5, 0.2], [np.nan, np.nan, np.nan]])
    shown = np.array([[True, False, True], [True, True, True]])
    marks = np.array([[200.0, 100.0, 200.0], [np.nan] * 3])
    mesh = plots.plot_heatmap(ax, [0, 100, 200], ["a", "b"], values, shown, 1.0, "t", marks)
    drawn = mesh.get_array().reshape(2, 3)
    assert list(drawn.mask[0]) == [False, True, False] and drawn.mask[1].all()
    assert drawn[0, 0] == 0.5 and drawn[0, 2] == 0.2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.get_ylim() == (1.5, -0.5)  # row 0 at the top
    triangle = [ln for ln in ax.lines if ln.get_marker() == "v"]
    assert len(triangle) == 1 and list(triangle[0].get_xydata()[0]) == [200.0, 0.0]


def _regime_sizes(effects):
    """data_regime's ends at the given sizes: ``effects[n]`` is each multi-task
    architecture's exact relatedness effect (task 1's loss 0.2 + effect at p = 0, 0.2 at
    p = 1, a run's own noise the same at both)."""
    from benchmark.experiments import data_regime as dr

    z, cells = _draws(), []
    for n, eff in effects.items():
        noise = {m: 0.01 * z() for m in dr.MODELS}
        level = dict(zip(dr.MODELS, (0.0, *eff), strict=True))
        for p in (0.0, 1.0):
            for m in dr.MODELS:
                cell = _cell(m, p, 0.2 + level[m] * (1 - p) + noise[m])
                cell.meta |= {"series": f"{m} @ {dr.size_label(n)}", "n_train": n}
                cell.arrays["best"] = cell.arrays["final"]
                cells.append(cell)
    return _results("data_regime", cells)


def test_the_data_regime_size_table_counts_the_architectures_where_relatedness_acts():
    """`size_table`: per finite size with both ends stored, how many architectures' paired
    effect CI is above 0 and below 0, and their mean relative effect, an undefined one
    (every run diverged) left out."""
    from benchmark.experiments import data_regime as dr

    effects = {10_000: (0.0,) * 4, 30_000: (0.1, 0.1, 0.1, 0.0),
               100_000: (0.3, 0.3, 0.3, -0.1), 300_000: (0.1, 0.1, 0.1, np.nan)}  # fmt: skip
    rows = dr.size_table(_regime_sizes(effects))
    assert [r[:3] for r in rows] == [["1e4", 0, 0], ["3e4", 3, 0], ["1e5", 3, 1], ["3e5", 3, 0]]
    assert rows[2][3] == pytest.approx((0.9 - 0.1) / 4 / 0.2, abs=0.01)  # effect / loss at p=1
    assert rows[3][3] == pytest.approx(0.1 / 0.2, abs=0.01)  # PLE's NaN left out


def test_the_data_regime_baseline_reads_its_p0_run_where_it_did_not_train(tmp_path):
    """The single-task baseline trains at p = 0 and 1 only; at 0.5 its task 1 is p = 0's
    (the same run), in the loss figure and in the MTL gain."""
    import csv

    from benchmark.experiments import data_regime as dr

    z, cells = _draws(), []
    for p in (0.0, 0.5, 1.0):
        for m in dr.MODELS:
            if m == dr.BASELINE and p not in dr.BASELINE_PS:
                continue
            loss = 0.5 + 0.01 * z() if m == dr.BASELINE else 0.2 + 0.1 * (1 - p) + 0.0 * z()
            cell = _cell(m, p, loss)
            cell.meta |= {"series": f"{m} @ 1e4", "n_train": 10_000}
            cell.arrays["best"] = cell.arrays["final"]
            cells.append(cell)
    res = _results("data_regime", cells)
    table = dr._table(res)
    base = table[(dr.BASELINE, 10_000)]
    assert sorted(base) == [0.0, 0.5, 1.0] and base[0.5] is base[0.0]
    assert dr.gain(table, "mmoe", 10_000, 0.5)[0] == pytest.approx(np.mean(base[0.0]) - 0.25)
    dr.draw_loss(res, tmp_path, "c")
    rows = list(csv.DictReader(open(tmp_path / "data_regime_loss.csv")))
    assert {r["correlation"] for r in rows if r["model"] == dr.BASELINE} == {"0", "0.5", "1"}


def test_the_data_regime_cells_train_both_ends_of_the_grid_first():
    """Its cells: every size, correlation and architecture, with a validation set, the
    p = 0 and p = 1 cells (all its claims read) first; the stream cells differ from the
    default profile's stored stream cells by the validation set only."""
    from benchmark.experiments import data_regime as dr

    prof = protocol.get_profile("default")
    cells = dr.cells(prof)
    per_size = len(dr.CORRS) * (len(dr.MODELS) - 1) + len(dr.BASELINE_PS)
    assert len(cells) == len(dr.SIZES) * per_size
    assert {c.x for c in cells if c.model.name == dr.BASELINE} == set(dr.BASELINE_PS)
    assert len({c.key() for c in cells}) == len(cells)
    first = cells[: 2 * len(dr.SIZES) * len(dr.MODELS)]
    assert {c.x for c in first} == {0.0, 1.0}
    assert {c.spec.train.n_train for c in cells} == set(dr.SIZES)
    assert all(c.spec.train.n_val == dr.N_VAL and c.n_runs == prof.sweep_runs for c in cells)
    assert [dr.size_label(n) for n in dr.SIZES] == ["1e4", "3e4", "1e5", "3e5", "1e6", "stream"]
    stream = next(c for c in cells if c.spec.train.n_train is None)
    assert stream.key() != prof.spec(stream.model, stream.x).key()


def test_the_data_regime_trains_another_architecture_on_request(tmp_path, capsys):
    """`run data_regime --models cgc` trains CGC's grid, which the experiment takes in once
    it is stored (here: planted cell files); the claims read the declared models only."""
    from benchmark import cli, models, runner
    from benchmark.experiments import data_regime as dr

    smoke = protocol.get_profile("smoke")
    exp = experiments.get("data_regime")
    grid = len(dr.SIZES) * len(dr.CORRS)
    extra = exp.extra_cells(smoke, ["cgc", "mmoe"])  # mmoe is one of its own
    assert len(extra) == grid and {c.model.name for c in extra} == {"cgc"}
    others = len(models.names()) - len(dr.MODELS)
    baseline = len(dr.SIZES) * len(dr.BASELINE_PS)  # the baseline trains the ends only
    assert len(exp.every_cell(smoke)) == grid * (len(dr.MODELS) - 1 + others) + baseline
    work = runner.plan(smoke, [exp], tmp_path, models=["cgc"])
    assert work.counts()["cells_to_train"] == grid
    argv = ["run", "data_regime", "--profile", "smoke", "--out", str(tmp_path), "--dry-run"]
    assert cli.main([*argv, "--models", "cgc"]) == 0
    assert f"in {grid} cells" in capsys.readouterr().out
    base = len(exp.cells(smoke))
    for c in extra[:-1]:
        runner.write_npz(runner._cell_path(tmp_path, c.key()), {"final": np.zeros((2, 2))},
                         {"key": c.key(), "n_runs": c.n_runs})  # fmt: skip
    assert len(runner._stored_cells(exp, smoke, tmp_path)) == base  # one cell missing
    c = extra[-1]
    runner.write_npz(runner._cell_path(tmp_path, c.key()), {"final": np.zeros((2, 2))},
                     {"key": c.key(), "n_runs": c.n_runs})  # fmt: skip
    assert len(runner._stored_cells(exp, smoke, tmp_path)) == base + grid


def test_the_many_tasks_cells_train_the_claims_cells_first():
    """Its cells: K in 2..16, C <= K clusters, both regimes, a validation set and a
    quarter of the profile's steps; K = 16 in 4 clusters and in 1 at p_in = 1 (every
    claim's cells) open each regime; a cell's cosine matrix gives back its structure."""
    from benchmark.experiments import many_tasks as mt

    prof = protocol.get_profile("default")
    cells = mt.cells(prof)
    per_size = len(mt.settings()) * len(mt.MODELS)
    assert len(cells) == 2 * per_size and len({c.key() for c in cells}) == len(cells)
    assert len(mt.settings()) == 9 * len(mt.P_IN) + 2  # C = K: the identity, once
    for i, n in enumerate(mt.SIZES):
        block = cells[i * per_size : (i + 1) * per_size]
        assert {c.spec.train.n_train for c in block} == {n}
        first = [mt.structure(c.spec.corr)[:3] for c in block[: 2 * len(mt.MODELS)]]
        assert set(first) == set(mt.CLAIM_CELLS)
    for c in cells:
        k, n_c, p, cluster = mt.structure(c.spec.corr)
        assert (k, c.x, c.spec.n_tasks) == (k, float(k), k) and n_c <= k
        assert list(cluster) == [t * n_c // k for t in range(k)]
        assert (p is None) == (n_c == k)
        t = c.spec.train
        assert (t.steps, t.n_val, c.n_runs) == (40_000, mt.N_VAL, prof.sweep_runs)
    smoke = mt.cells(protocol.get_profile("smoke"))[0].spec.train
    assert smoke.steps == 10 and smoke.steps % smoke.eval_every == 0


def test_the_many_tasks_routing_measure_reads_the_shared_experts():
    """Gate similarity is 1 − total variation between two tasks' mean gates; CGC's gates
    are compared on its shared experts only (each task's own experts are its own)."""
    from benchmark.experiments import many_tasks as mt

    g = np.array([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])  # (1 run, 3, 3)
    sim = mt.gate_similarity("mmoe", g)
    assert sim.shape == (1, 3, 3)
    np.testing.assert_allclose(sim[0], [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    et = ModelConfig.of("cgc").sizes()["task_experts"]
    own = np.zeros((1, 2, et + 2))
    own[0, 0, 0], own[0, 1, 1] = 0.9, 0.9  # different own experts, the same shared mix
    own[0, :, et:] = 0.05
    np.testing.assert_allclose(mt.gate_similarity("cgc", own)[0], np.ones((2, 2)))


def test_the_many_tasks_figures_draw_from_their_cells(tmp_path):
    """Its five figures draw from the cells stored (here the claims' cells); the routing
    CSV gives a clustered model a positive within − across similarity."""
    import csv

    res = many_tasks()
    paths = [p for fn in experiments.get("many_tasks").figures for p in fn(res, tmp_path, "c")]
    assert sorted(p.name for p in paths) == [
        "many_tasks_cost.png",
        "many_tasks_loss.png",
        "many_tasks_negative.png",
        "many_tasks_routing.png",
        "many_tasks_worst.png",
    ]
    rows = list(csv.DictReader(open(tmp_path / "many_tasks_routing.csv")))
    assert {r["model"] for r in rows} == {"mmoe", "dselect_k"}
    assert all(float(r["lo"]) > 0 for r in rows)
    neg = list(csv.DictReader(open(tmp_path / "many_tasks_negative.csv")))
    sb = [r for r in neg if r["model"] == "shared_bottom"]
    assert sb and all(float(r["fraction"]) == 1.0 for r in sb)  # 0.1 worse on every task


def test_every_many_tasks_panel_spans_every_k_even_when_empty():
    """While training, panels without cells (here p_in = 0.95) still show K = 2..16 on
    the same x range as the filled ones."""
    import dataclasses

    from benchmark.experiments import many_tasks as mt

    res = many_tasks()
    keep = [c for c in res.cells if mt.structure(np.array(c.meta["corr"]))[2] != 0.95]
    table = mt._table(dataclasses.replace(res, cells=keep))
    fig, _ = mt._against_k(table, mt._models(table), mt._loss_fn(mt.mean_task), "y", log=True)
    limits = {tuple(np.round(ax.get_xlim(), 6)) for ax in fig.axes if ax.get_title()}
    assert len(limits) == 1, limits
    lo, hi = limits.pop()
    assert lo < min(mt.KS) and hi > max(mt.KS)
    assert any(not ax.lines for ax in fig.axes if ax.get_title())  # an empty panel


def test_a_log_axis_within_one_decade_keeps_labelled_ticks():
    """The cost figure's values (130-700 µs) lie within one decade, where a log axis
    without minor ticks has no labelled tick at all; ``plots.log_y`` labels 200 and 500."""
    from benchmark import plots

    fig, axes = plots.figure(1, 1)
    ax = axes[0][0]
    ax.plot([2, 16], [130, 700])
    ax.minorticks_off()
    plots.log_y(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
    assert {"200", "500"} <= set(shown), shown


def test_the_many_tasks_claims_wait_for_their_cells():
    """On a regime with none of its cells stored, each claim names what it waits for."""
    import dataclasses

    from benchmark.experiments import many_tasks as mt

    res = many_tasks()
    only_stream = dataclasses.replace(res, cells=[c for c in res.cells if c.meta["n_train"]])
    for claim in experiments.get("many_tasks").claims:
        v = claim.test(only_stream)
        if claim.name.endswith("_stream"):
            assert v.holds is None and v.evidence.startswith("waits for"), v.evidence
        else:
            assert v.holds is True
    assert len(mt.CLAIMS) == 8


def test_the_stream_gap_arms_change_one_thing_each_and_share_data_regimes_cells():
    """Each arm differs from the profile's protocol in one thing; the 1e5, 1e6 and stream
    arms are data_regime's Shared-Bottom cells at p = 0.5 (one spec, trained once)."""
    from benchmark.experiments import data_regime as dr
    from benchmark.experiments import stream_gap as sg

    prof = protocol.get_profile("default")
    cells = sg.cells(prof)
    assert [c.series for c in cells] == [a[0] for a in sg.ARMS]
    assert len({c.key() for c in cells}) == len(cells)
    regime = {c.key() for c in dr.cells(prof)}
    shared = [c.series for c in cells if c.key() in regime]
    assert shared == ["1e5", "1e6", "stream"]
    runs = {c.series: c.n_runs for c in cells}
    assert {a for a, n in runs.items() if n == sg.EXTEND * prof.sweep_runs} == set(sg.EXTENDED)
    assert {n for a, n in runs.items() if a not in sg.EXTENDED} == {prof.sweep_runs}
    assert {x for pair in sg.PAIRS for x in pair} <= set(runs)
    base = cells[3].spec  # the stream, the profile's protocol
    for c in cells:
        t = c.spec.train
        # Besides the training-set size, at most one of batch, steps and lr differs.
        changed = [t.batch_size != base.train.batch_size, t.steps != base.train.steps,
                   c.spec.lr != base.lr]  # fmt: skip
        assert sum(changed) <= 1, c.series
        assert (c.model.name, c.spec.corr, t.n_val) == ("shared_bottom", 0.5, dr.N_VAL)


def test_the_stream_gap_figure_reads_the_bad_cluster(tmp_path):
    """The figure's CSV gives each arm's IQMs and the share of runs above BAD."""
    import csv

    from benchmark.experiments import stream_gap as sg

    rng = np.random.default_rng(0)
    cells = []
    for i, (label, n, _) in enumerate(sg.ARMS):
        share = 0.2 if n else 0.6  # a fixed set: fewer runs in the bad cluster
        runs = N * (sg.EXTEND if label in sg.EXTENDED else 1)
        final = np.where(rng.random(runs) < share, 0.18, 0.03) + 0.005 * rng.random(runs)
        if label == "stream":
            final[5] = np.nan  # a diverged run
        cell = _cell("shared_bottom", float(i), final)
        cell.meta |= {"series": label, "n_train": n, "steps": 2000}
        cell.arrays["best"] = cell.arrays["final"] * 0.9
        cells.append(cell)
    paths = sg.draw(_results("stream_gap", cells), tmp_path, "c")
    assert [p.name for p in paths] == ["stream_gap.png"]
    rows = {r["arm"]: r for r in csv.DictReader(open(tmp_path / "stream_gap.csv"))}
    assert set(rows) == {a[0] for a in sg.ARMS}
    assert abs(float(rows["1e5"]["bad_share"]) - 0.2) < 0.1
    assert abs(float(rows["stream"]["bad_share"]) - 0.6) < 0.1
    assert float(rows["stream"]["bad_lo"]) < 0.6 < float(rows["stream"]["bad_hi"]) + 0.1
    pairs = {
        (r["arm"], r["reference"]): r
        for r in csv.DictReader(open(tmp_path / "stream_gap_paired.csv"))
    }
    assert list(pairs) == list(sg.PAIRS)
    gap = pairs[("stream", "1e5")]
    # Over the runs both arms hold (the 80-run arms cut to the other's 20) that neither
    # diverged in.
    assert int(gap["runs"]) == sg.EXTEND * N - 1 and abs(float(gap["bad_diff"]) - 0.4) < 0.2
    assert [int(pairs[k]["runs"]) for k in (("1e7", "1e5"), ("stream", "1e7"))] == [N, N - 1]
    assert float(gap["bad_lo"]) > 0 and float(gap["loss_lo"]) > 0  # the stream: more bad runs
    same = pairs[("1e7", "1e5")]  # two fixed sets: the same share
    assert float(same["bad_lo"]) < 0 < float(same["bad_hi"])
