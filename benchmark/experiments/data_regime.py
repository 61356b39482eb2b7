"""Training-set size as an axis: where task relatedness acts.

Every task trains on a fixed set of ``n`` points (``n`` on a half-decade grid from 10^4 to
10^6, the sizes that public re-implementations use) or on the stream of fresh points that
the other experiments use (the large-``n`` limit). The theory of learning with a shared
representation puts the benefit of a related task in the finite-sample term, which
vanishes as ``n`` grows: Baxter, "A Model of Inductive Bias Learning", JAIR 2000; Maurer,
Pontil and Romera-Paredes, "The Benefit of Multitask Representation Learning", JMLR 2016;
Wu, Zhang and Ré, "Understanding and Improving Information Transfer in Multi-Task
Learning", ICLR 2020. The claims below are that theory's predictions, declared before
training (docs/protocol.md, "Training-set size").

Model selection is early stopping in every regime, the stream included: each task's test
MSE at its lowest validation MSE (``N_VAL`` held-out points per run, evaluated every
``eval_every`` steps). The loss is task 1's, as in KDD18's figures: task 1's weights are
the same at every correlation (``datagen.task_weights``), so only the relatedness of its
companion task changes along the correlation axis, and the single-task baseline's task 1 is
the same run at every correlation (an exact control: its effect is 0).
:func:`draw_where` follows the effect along each run's whole test curve, at every
evaluation: it was added after the results, so it describes and decides no claim.
Not part of ``run all``: ``python -m benchmark run data_regime`` (``make extend``); ``--models
NAME`` trains another architecture's grid, which the figures then draw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import plots, stats
from ..models import get
from ..protocol import Cell, Claim, Experiment, Verdict
from ..runner import Results
from . import register
from ._common import fmt_ci, fmt_signed, model_grid

SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000, None)  # None: the stream
CORRS = (0.0, 0.5, 0.9, 0.95, 0.98, 0.99, 1.0)  # dense where the label correlation rises
# The training order: the two ends of the grid first (every claim reads only them), then
# the middle, then the correlations near 1.
TRAIN_ORDER = (0.0, 1.0, 0.5, 0.9, 0.95, 0.98, 0.99)
BASELINE = "single_task"
# The baseline trains at the two ends only: its task 1 is the same run, bit for bit, at
# every correlation (a test checks the stored cells), so its other correlations read p=0.
BASELINE_PS = (0.0, 1.0)
MODELS = (BASELINE, "shared_bottom", "omoe", "mmoe", "ple")
N_VAL = 2_000
SELECTION = "best"  # early stopping, in every regime
STREAM_AT = 10.0  # the stream's place on the size axis: this many times the largest size


def size_label(n: int | None) -> str:
    """``1e4``, ``3e4``, ... or ``stream``."""
    if n is None:
        return "stream"
    exp = int(np.floor(np.log10(n)))
    mant = n / 10**exp
    return f"{mant:g}e{exp}"


def _grid(profile, models) -> tuple[Cell, ...]:
    """Every (correlation, size, model config), ``profile.sweep_runs`` runs each, in
    ``TRAIN_ORDER``; the single-task baseline at :data:`BASELINE_PS` only. A cell's x is
    its correlation; its series is ``"<label> @ <size>"``."""
    out = []
    for p in TRAIN_ORDER:
        for n in SIZES:
            for model in models:
                if model.name == BASELINE and p not in BASELINE_PS:
                    continue
                spec = profile.spec(model, p, n_train=n, n_val=N_VAL)
                label = f"{spec.model.display()} @ {size_label(n)}"
                out.append(Cell(spec, profile.sweep_runs, series=label))
    return tuple(out)


cells, extra = model_grid(_grid, MODELS)  # MODELS' grid; any other's on request


def _table(res: Results) -> dict:
    """``{(model, n): {p: (runs,) task 1's early-stopped test MSE}}``. The baseline's
    task 1 at a correlation it did not train is its task 1 at p = 0, or at p = 1 while
    p = 0 is not stored (the same run)."""
    out: dict = {}
    for c in res.cells:
        loss = c.loss(SELECTION)[:, 0]
        out.setdefault((c.meta["model"], c.meta.get("n_train")), {})[round(c.x, 6)] = loss
    every_p = {p for by in out.values() for p in by}
    for (m, _), by in out.items():
        trained = [by[p] for p in BASELINE_PS if p in by]
        if m == BASELINE and trained:
            for p in every_p - set(by):
                by[p] = trained[0]
    return out


def _size_md(label: str) -> str:
    """A size label as the docs write it: ``3e4`` -> ``3·10^4``, ``stream`` unchanged."""
    return label if label == "stream" else label.replace("1e", "10^").replace("3e", "3·10^")


def _size_rows_markdown(columns: list[str], sizes: list[str], entry) -> str:
    """A markdown table with a row per size label of ``sizes`` and a column per header of
    ``columns``: ``entry(size label, column index)`` fills each cell. Without rows or
    columns, a sentence that says so."""
    if not columns or not sizes:
        return "No cell that this table reads is stored yet."
    lines = ["| size | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for n in sizes:
        cells = [entry(n, j) for j in range(len(columns))]
        lines.append(f"| {_size_md(n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sizes(table) -> list:
    """The stored sizes, ascending, the stream last."""
    sizes = {n for _, n in table}
    return sorted(s for s in sizes if s is not None) + ([None] if None in sizes else [])


def _models(table) -> list[str]:
    return [m for m in MODELS if any(k[0] == m for k in table)] + sorted(
        {m for m, _ in table} - set(MODELS)
    )


def _size_x(n, largest: float) -> float:
    return STREAM_AT * largest if n is None else float(n)


def _size_axis(ax, sizes) -> None:
    largest = max((s for s in sizes if s is not None), default=1.0)
    ax.set_xscale("log")
    ax.set_xticks([_size_x(n, largest) for n in sizes])
    ax.set_xticklabels([size_label(n) for n in sizes])
    ax.minorticks_off()


def effect(table, model: str, n, p: float, ref: float = 1.0):
    """``(point, lo, hi)``: the paired relatedness effect of ``model`` at size ``n``, the
    mean over runs of (loss at ``p`` − the same run's loss at ``ref``), with its paired
    95% bootstrap CI."""
    by = table[(model, n)]
    return stats.paired_diff(by[round(p, 6)], by[round(ref, 6)])


def relative(table, model: str, n, p: float, ref: float = 1.0):
    """``(point, lo, hi)``: the relative relatedness effect of ``model`` at size ``n``,
    its mean loss at ``p`` over its mean loss at ``ref``, minus 1 (the same runs), with
    its paired 95% bootstrap CI: comparable across sizes whose losses differ 50-fold."""
    by = table[(model, n)]
    return stats.paired_bootstrap(stats.mean_ratio, [by[round(p, 6)], by[round(ref, 6)]])


def gain(table, model: str, n, p: float):
    """``(point, lo, hi)``: the MTL gain of ``model`` at size ``n`` and correlation ``p``:
    the mean over runs of (single-task loss − the same run's ``model`` loss), paired CI."""
    return stats.paired_diff(table[(BASELINE, n)][round(p, 6)], table[(model, n)][round(p, 6)])


def draw_loss(res: Results, out: Path, caption: str) -> list[Path]:
    """One panel per training-set size: the IQM of task 1's early-stopped loss against
    the correlation, one line per architecture, 95% bootstrap CIs. The correlations are
    evenly spaced (they crowd near 1)."""
    table = _table(res)
    sizes, models = _sizes(table), _models(table)
    ncols = min(3, len(sizes))
    nrows = -(-len(sizes) // ncols)
    fig, axes = plots.figure(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), sharey=True)
    every_p = sorted({p for by in table.values() for p in by})
    pos = {p: i for i, p in enumerate(every_p)}
    rows = []
    for i, n in enumerate(sizes):
        ax = axes[i // ncols][i % ncols]
        series = []
        for m in models:
            by = table.get((m, n), {})
            ps = sorted(by)
            if not ps:
                continue
            vals = np.array([[stats.iqm(by[p]), *stats.iqm_ci(by[p])] for p in ps])
            series.append((get(m).label, plots.color(m), [pos[p] for p in ps], *vals.T))
            rows += [[m, size_label(n), p, *v] for p, v in zip(ps, vals, strict=True)]
        plots.plot_lines(
            ax,
            series,
            "task correlation",
            "task-1 test MSE, early-stopped (IQM; log scale)" if i % ncols == 0 else "",
            title=f"training set: {size_label(n)}",
            legend="inside" if i == 0 else None,
        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(every_p)))
        ax.set_xticklabels([f"{p:g}" for p in every_p], fontsize=8)
    for j in range(len(sizes), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    header = ["model", "size", "correlation", "iqm", "ci_lo", "ci_hi"]
    plots.write_csv(out / "data_regime_loss.csv", header, rows)
    return [plots.save(fig, out / "data_regime_loss.png", caption)]


def _against_size(axes, table, models, fn, panels, ylabel, title) -> list[list]:
    """Draw ``fn(table, model, n, p)`` against size into ``axes``, one panel per ``p`` of
    ``panels``, one line per model; returns the CSV rows ``[model, p, size, point, lo,
    hi]``."""
    sizes = _sizes(table)
    largest = max((s for s in sizes if s is not None), default=1.0)
    rows = []
    for ax, p in zip(axes, panels, strict=True):
        series = []
        for m in models:
            have = [n for n in sizes if _has(table, m, n, p, fn)]
            if not have:
                continue
            vals = np.array([fn(table, m, n, p) for n in have])
            xs = [_size_x(n, largest) for n in have]
            series.append((get(m).label, plots.color(m), xs, *vals.T))
            rows += [[m, p, size_label(n), *v] for n, v in zip(have, vals, strict=True)]
        plots.plot_lines(
            ax,
            series,
            "training-set size (points per task)",
            ylabel if p == panels[0] else "",
            title=title(p),
            legend="outside" if p == panels[-1] else None,
        )
        ax.axhline(0, color="k", lw=0.8)
        _size_axis(ax, sizes)
    return rows


def _has(table, m, n, p, fn) -> bool:
    need = [(m, n, p)] + ([(BASELINE, n, p)] if fn is gain else [(m, n, 1.0)])
    return all(round(q, 6) in table.get((mm, nn), {}) for mm, nn, q in need)


def _effect_panels(table) -> list[float]:
    ps = sorted({p for by in table.values() for p in by})
    return [p for p in (ps[0], 0.9) if p in ps and p != 1.0] if ps else []


def draw_effect(res: Results, out: Path, caption: str) -> list[Path]:
    """The paired relatedness effect (each run's loss at ``p`` against its loss at p = 1)
    against the training-set size, one line per architecture, at the lowest correlation
    and at 0.9: the difference of the mean losses (top) and their ratio minus 1 (bottom).
    The single-task baseline is the control (its task 1 does not change with p)."""
    table = _table(res)
    panels = _effect_panels(table)
    if not panels:
        return []
    models = _models(table)
    fig, axes = plots.figure(2, len(panels), figsize=(5.5 * len(panels) + 2, 8.6))
    rows = _against_size(
        axes[0],
        table,
        models,
        effect,
        panels,
        "loss at p − loss at p = 1 (mean, paired 95% CI)",
        lambda p: f"relatedness effect, p = {p:g} against p = 1",
    )
    rel = _against_size(
        axes[1],
        table,
        models,
        relative,
        panels,
        "mean loss at p / at p = 1 − 1 (paired 95% CI)",
        lambda p: f"relative effect, p = {p:g} against p = 1",
    )
    plots.write_csv(
        out / "data_regime_effect.csv",
        ["model", "correlation", "size", "effect", "ci_lo", "ci_hi", "relative", "rel_lo",
         "rel_hi"],
        [[*r, *q[3:]] for r, q in zip(rows, rel, strict=True)],
    )  # fmt: skip
    plots.write_csv(
        out / "data_regime_sizes.csv",
        ["size", "effect_above_0", "effect_below_0", "mean_relative_effect"],
        size_table(res),
    )
    return [plots.save(fig, out / "data_regime_effect.png", caption)]


def draw_gain(res: Results, out: Path, caption: str) -> list[Path]:
    """The MTL gain (single-task loss minus the model's, run by run) against the
    training-set size, one line per architecture, at the lowest correlation, 0.9 and 1."""
    table = _table(res)
    ps = sorted({p for by in table.values() for p in by})
    panels = [p for p in dict.fromkeys((ps[0], 0.9, 1.0)) if p in ps] if ps else []
    models = [m for m in _models(table) if m != BASELINE]
    if not panels or not models:
        return []
    fig, axes = plots.figure(1, len(panels), figsize=(5.5 * len(panels) + 2, 4.5), sharey=True)
    rows = _against_size(
        axes[0],
        table,
        models,
        gain,
        panels,
        "single-task loss − model loss (mean, paired 95% CI)",
        lambda p: f"MTL gain at p = {p:g}",
    )
    header = ["model", "correlation", "size", "gain", "ci_lo", "ci_hi"]
    plots.write_csv(out / "data_regime_gain.csv", header, rows)
    return [plots.save(fig, out / "data_regime_gain.png", caption)]


WHERE_RATIO = 2.0  # the colour scale of the loss ratio over training: from 1/2 to 2


def effect_over_training(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n_evals, 6)``: at each evaluation, the paired effect of test curves ``a`` against
    ``b`` (each ``(runs, n_evals)``, paired by run) as ``(point, lo, hi)`` of the mean
    difference, then ``(point, lo, hi)`` of the ratio of the means minus 1; paired 95%
    bootstrap CIs, each evaluation's on its own."""
    return np.array(
        [
            [*stats.paired_diff(a[:, i], b[:, i]),
             *stats.paired_bootstrap(stats.mean_ratio, [a[:, i], b[:, i]])]
            for i in range(a.shape[1])
        ]
    )  # fmt: skip


def stopping_steps(cells, steps: np.ndarray) -> tuple[float, float, float, int]:
    """``(median, lower quartile, upper quartile, runs)`` of the step where task 1 stops
    early, over the runs of ``cells`` (a list of :class:`CellResult`) that did not diverge
    and store one; ``steps`` is ``(n_evals,)``. NaNs and 0 runs where none does."""
    found = []
    for c in cells:
        evals = c.arrays.get("best_eval", np.full(c.final.shape, -1))[:, 0]
        evals = evals[(evals >= 0) & ~c.arrays["diverged"].astype(bool)]
        found.append(np.asarray(steps)[evals])
    at = np.concatenate(found) if found else np.zeros(0)
    if not at.size:
        return float("nan"), float("nan"), float("nan"), 0
    q1, median, q3 = np.percentile(at, (25, 50, 75))
    return float(median), float(q1), float(q3), int(at.size)


@dataclasses.dataclass(frozen=True)
class Where:
    """What :func:`draw_where` draws: the lowest stored correlation ``low``, the
    evaluations' ``steps`` ``(n_evals,)``, the multi-task ``models`` and the ``sizes``
    (rows) with ``low`` and p = 1 stored, ``effects[(model, n)]`` from
    :func:`effect_over_training` (``(n_evals, 6)``: loss at ``low`` against p = 1) and
    ``stops[(model, n)]`` from :func:`stopping_steps` (both cells' runs)."""

    low: float
    steps: np.ndarray
    models: list
    sizes: list
    effects: dict
    stops: dict

    def shown(self, key) -> np.ndarray:
        """``(n_evals,)`` bools: the ratio's paired CI excludes 1."""
        e = self.effects[key]
        return (e[:, 4] > 0) | (e[:, 5] < 0)


def where(res: Results) -> Where | None:
    """The relatedness effect along training, per multi-task architecture and size, from
    the lowest stored correlation and p = 1 (None where either is missing)."""
    by: dict = {}
    for c in res.cells:
        by.setdefault((c.meta["model"], c.meta.get("n_train")), {})[round(c.x, 6)] = c
    ps = sorted({p for cells in by.values() for p in cells})
    if len(ps) < 2 or ps[-1] != 1.0:
        return None
    low = ps[0]
    table = {k: v for k, v in by.items() if k[0] != BASELINE and low in v and 1.0 in v}
    if not table:
        return None
    effects, stops = {}, {}
    for key, cells in table.items():
        a, b = (cells[q].arrays["curves"][:, :, 0] for q in (low, 1.0))
        effects[key] = effect_over_training(a, b)
        stops[key] = stopping_steps([cells[low], cells[1.0]], res.eval_steps)
    return Where(low, res.eval_steps, _models(table), _sizes(table), effects, stops)


def where_table(res: Results) -> list[list]:
    """Per stored (architecture, size): ``[model, size label, (ratio, lo, hi) at the
    evaluation whose ratio is furthest from 1 (log scale) among those whose CI excludes
    1, or NaNs, its step, (ratio, lo, hi) at the last evaluation, the evaluations whose
    CI excludes 1, the evaluations]``; ratio = mean loss at the lowest correlation over
    the same runs' at p = 1. The furthest of many is a description, not a test: its CI
    holds for one evaluation chosen in advance, not for the one picked."""
    w = where(res)
    rows = []
    for m in w.models if w else []:
        for n in w.sizes:
            if (m, n) not in w.effects:
                continue
            e, shown = w.effects[(m, n)], w.shown((m, n))
            ratio = 1.0 + e[:, 3:6]
            with np.errstate(invalid="ignore", divide="ignore"):
                strength = np.where(shown, np.abs(np.log(ratio[:, 0])), -1.0)
            i = int(np.argmax(strength))
            peak = ratio[i] if shown[i] else np.full(3, np.nan)
            step = int(w.steps[i]) if shown[i] else -1
            rows.append([m, size_label(n), *peak, step, *ratio[-1], int(shown.sum()), len(shown)])
    return rows


def where_markdown(res: Results) -> str:
    """:func:`where_table` as the markdown table in docs/data_regime.md: a row per size,
    a column per architecture."""
    rows = where_table(res)
    models = list(dict.fromkeys(r[0] for r in rows))
    sizes = list(dict.fromkeys(r[1] for r in rows))
    cell = {(r[0], r[1]): r for r in rows}

    def fmt(r) -> str:
        if r is None:
            return "–"
        peak = "none" if r[5] < 0 else f"{r[2]:.2f} [{r[3]:.2f}, {r[4]:.2f}] at {r[5] // 1000}k"
        return f"{peak} ({r[9]}/{r[10]}); end {r[6]:.2f} [{r[7]:.2f}, {r[8]:.2f}]"

    columns = [get(m).label for m in models]
    return _size_rows_markdown(columns, sizes, lambda n, j: fmt(cell.get((models[j], n))))


def draw_where(res: Results, out: Path, caption: str) -> list[Path]:
    """Where relatedness acts, in training-set size and in training time: per multi-task
    architecture, a heat map of the loss ratio (task 1's mean test MSE at the lowest
    correlation over the same runs' at p = 1; a log colour scale, so that 2x worse and 2x
    better are equally strong) at every evaluation (columns) and every size (rows),
    coloured where the paired 95% CI of the ratio excludes 1 (each evaluation's CI on its
    own: isolated coloured cells are expected by chance), grey where it does not, white
    where the size is not stored; a triangle marks the median step where early stopping
    stops, a bar its quartiles. The whole test curve, not a model-selection rule: this
    figure describes, and decides no claim. Its CSV holds the effect and the ratio minus
    1 (the relative effect), each with its CI, and the stopping steps."""
    w = where(res)
    if w is None:
        return []
    ncols = min(2, len(w.models))
    nrows = -(-len(w.models) // ncols)
    height = 1.2 + 0.3 * len(w.sizes)
    fig, axes = plots.figure(nrows, ncols, figsize=(6.8 * ncols, height * nrows + 0.4))
    vlim = np.log2(WHERE_RATIO)
    labels = [size_label(n) for n in w.sizes]
    rows = []
    for i, m in enumerate(w.models):
        ax = axes[i // ncols][i % ncols]
        values = np.full((len(w.sizes), w.steps.size), np.nan)
        shown = np.zeros(values.shape, bool)
        marks = np.full((len(w.sizes), 3), np.nan)
        for r, n in enumerate(w.sizes):
            if (m, n) not in w.effects:
                continue
            eff, stop = w.effects[(m, n)], w.stops[(m, n)]
            with np.errstate(invalid="ignore", divide="ignore"):
                values[r] = np.log2(1.0 + eff[:, 3])  # symmetric: 2x worse or 2x better
            shown[r], marks[r] = w.shown((m, n)), stop[:3]
            rows += [[m, labels[r], int(s), *e, *stop] for s, e in zip(w.steps, eff, strict=True)]
        title = f"{get(m).label}: task-1 loss at p = {w.low:g} / at p = 1"
        mesh = plots.plot_heatmap(ax, w.steps, labels, values, shown, vlim, title, marks)
        ax.set_ylabel("training set" if i % ncols == 0 else "")
        bar = fig.colorbar(mesh, ax=ax, extend="both", pad=0.02)
        ticks = np.linspace(-vlim, vlim, 5)
        bar.set_ticks(ticks, labels=[f"{2**t:.2g}×" for t in ticks], fontsize=8)
        if i % ncols == ncols - 1:
            bar.set_label("grey: the ratio's paired 95% CI includes 1", fontsize=8)
    for j in range(len(w.models), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    header = ["model", "size", "step", "effect", "ci_lo", "ci_hi", "relative", "rel_lo",
              "rel_hi", "stop_median", "stop_q1", "stop_q3", "stop_runs"]  # fmt: skip
    plots.write_csv(out / "data_regime_where.csv", header, rows)
    return [plots.save(fig, out / "data_regime_where.png", caption)]


def size_table(res: Results) -> list[list]:
    """Where relatedness acts, size by size: for each finite size whose p = 0 and p = 1
    cells of every multi-task architecture of :data:`MODELS` are stored, ``[size label,
    architectures whose paired relatedness effect (loss at p = 0 − the same run's loss at
    p = 1) has its 95% CI above 0, those whose CI is below 0, the mean over them of the
    relative effect (each one's effect over its mean loss at p = 1; one left undefined by
    diverged runs is left out)]``, ascending."""
    table = _table(res)
    rows = []
    for n in (n for n in SIZES if n is not None):
        if not all(_has(table, m, n, 0.0, effect) for m in MODELS[1:]):
            continue
        cis = {m: effect(table, m, n, 0.0) for m in MODELS[1:]}
        rel = [ci[0] / stats.finite_mean(table[(m, n)][1.0]) for m, ci in cis.items()]
        above = sum(ci[1] > 0 for ci in cis.values())
        below = sum(ci[2] < 0 for ci in cis.values())
        rows.append([size_label(n), above, below, float(stats.finite_mean(rel))])
    return rows


def effect_table(res: Results) -> list[list]:
    """Where relatedness moves the early-stopped loss, by size and correlation: for each
    stored size and each stored correlation below 1, ``[size label, p, [(model, point, lo,
    hi), ...], stored, architectures]``: the multi-task architectures whose paired effect
    (loss at p − the same run's loss at p = 1, task 1's early-stopped test MSE, mean over
    runs) has its 95% CI above or below 0, in :func:`_models` order; how many of the
    multi-task architectures have both cells stored there, and how many there are."""
    table = _table(res)
    ps = sorted({p for by in table.values() for p in by} - {1.0})
    models = [m for m in _models(table) if m != BASELINE]
    rows = []
    for n in _sizes(table):
        for p in ps:
            have = [m for m in models if _has(table, m, n, p, effect)]
            if not have:
                continue
            cis = [(m, *effect(table, m, n, p)) for m in have]
            found = [c for c in cis if c[2] > 0 or c[3] < 0]
            rows.append([size_label(n), p, found, len(have), len(models)])
    return rows


def effect_markdown(res: Results) -> str:
    """:func:`effect_table` as a markdown table, a row per size and a column per
    correlation: each architecture whose effect's CI excludes 0, with the effect; "none"
    where no architecture's does; "(k of n stored)" where some architectures' cells are
    missing, "–" where all are."""
    rows = effect_table(res)
    ps = sorted({r[1] for r in rows})
    sizes = list(dict.fromkeys(r[0] for r in rows))
    cell = {(r[0], r[1]): r[2:] for r in rows}

    def fmt(row) -> str:
        if row is None:
            return "–"
        found, stored, total = row
        parts = [f"{get(m).label} {fmt_signed(pt)}" for m, pt, _, _ in found]
        text = ", ".join(parts) or "none"
        return text + (f" ({stored} of {total} stored)" if stored < total else "")

    columns = [f"p = {p:g}" for p in ps]
    return _size_rows_markdown(columns, sizes, lambda n, j: fmt(cell.get((n, ps[j]))))


def ends_markdown(res: Results) -> str:
    """Task 1's early-stopped test MSE, IQM over runs, at the lowest stored correlation and
    at p = 1 (``low / high``), as the table in docs/data_regime.md: a row per stored size,
    a column per architecture. The single-task baseline has one value: its task 1 is the
    same run at every correlation."""
    table = _table(res)
    ps = sorted({p for by in table.values() for p in by})
    models, sizes = _models(table), {size_label(n): n for n in _sizes(table)}
    if ps[:1] == [1.0]:  # p = 1 only: no lower end yet
        sizes = {}

    def entry(label: str, j: int) -> str:
        by = table.get((models[j], sizes[label]), {})
        if ps[0] not in by or 1.0 not in by:
            return "–"
        low, high = (stats.iqm(by[p]) for p in (ps[0], 1.0))
        low, high = (f"{v:.3f}" if np.isfinite(v) else "n/a" for v in (low, high))
        return low if models[j] == BASELINE else f"{low} / {high}"

    return _size_rows_markdown([get(m).label for m in models], list(sizes), entry)


def stops_markdown(res: Results) -> str:
    """When early stopping stops: per stored size and multi-task architecture (rows) and
    correlation (columns), the median over runs of the step of task 1's lowest
    validation loss, with its quartiles where they differ (``133k (120k–150k)``); "–"
    where the cell is not stored, "n/a" where no run stores one. Descriptive: it decides
    no claim."""
    by: dict = {}
    for c in res.cells:
        if c.meta["model"] != BASELINE:
            by[(c.meta["model"], c.meta.get("n_train"), round(c.x, 6))] = c
    ps = sorted({k[2] for k in by})
    models = _models({k[:2]: None for k in by})
    sizes = _sizes({k[:2]: None for k in by})
    if not ps:
        return "No cell that this table reads is stored yet."

    def step(x: float) -> str:
        return f"{x / 1000:.0f}k" if x >= 1000 else f"{x:.0f}"

    def entry(m, n, p) -> str:
        cell = by.get((m, n, p))
        if cell is None:
            return "–"
        median, q1, q3, runs = stopping_steps([cell], res.eval_steps)
        if not runs:
            return "n/a"
        spread = "" if q1 == q3 else f" ({step(q1)}–{step(q3)})"
        return step(median) + spread

    lines = ["| size | architecture | " + " | ".join(f"p = {p:g}" for p in ps) + " |"]
    lines.append("|---" * (len(ps) + 2) + "|")
    for n in sizes:
        for m in models:
            if any((m, n, p) in by for p in ps):
                row = [_size_md(size_label(n)), get(m).label, *(entry(m, n, p) for p in ps)]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _shrinks(res: Results, measure, p: float, what: str) -> Verdict:
    """For every multi-task architecture: the paired CI of ``measure`` at the smallest
    size minus ``measure`` in the stream is above 0. Run i shares its key across sizes
    (task weights, initialisation, test and validation sets), so the difference is paired."""
    table = _table(res)
    sizes = _sizes(table)
    if None not in sizes or len(sizes) < 2:
        return Verdict(None, "needs the stream and a finite size")
    missing = [m for m in MODELS if not any(k[0] == m for k in table)]
    if missing:
        return Verdict(None, f"waits for {', '.join(missing)}")
    small = sizes[0]
    parts, holds = [], True
    # The declared architectures only: one added with --models is drawn, never decides.
    for m in MODELS[1:]:
        ref = 1.0 if measure is effect else p
        a = _per_run(table, measure, m, small, p, ref)
        b = _per_run(table, measure, m, None, p, ref)
        ci = stats.paired_diff(a, b)
        holds &= bool(ci[1] > 0)
        parts.append(f"{get(m).label} {fmt_ci(*ci)}")
    return Verdict(holds, f"{what} at {size_label(small)} minus in the stream: " + ", ".join(parts))


def _per_run(table, measure, m, n, p, ref):
    """(runs,): each run's effect (loss at p − loss at ref) or gain (single-task − m)."""
    if measure is effect:
        by = table[(m, n)]
        return by[round(p, 6)] - by[round(ref, 6)]
    return table[(BASELINE, n)][round(p, 6)] - table[(m, n)][round(p, 6)]


def effect_shrinks(res: Results) -> Verdict:
    return _shrinks(res, effect, CORRS[0], f"effect (p = {CORRS[0]:g} − p = 1)")


def gain_shrinks(res: Results) -> Verdict:
    return _shrinks(res, gain, 1.0, "MTL gain at p = 1")


CLAIMS = (
    Claim(
        "data_regime.effect_shrinks",
        "Baxter 2000; Maurer et al. 2016",
        "the benefit of a related task lives in the finite-sample term: the relatedness "
        "effect shrinks as the training set grows",
        f"for every multi-task architecture, the paired 95% CI of [effect at the smallest "
        f"size − effect in the stream] is above 0; effect = loss at p = {CORRS[0]:g} − the "
        f"same run's loss at p = 1, task 1's early-stopped test MSE, mean over runs",
        effect_shrinks,
    ),
    Claim(
        "data_regime.gain_shrinks",
        "Baxter 2000; Wu et al. 2020",
        "the gain from training with a related task over training alone shrinks as the "
        "training set grows",
        "for every multi-task architecture, the paired 95% CI of [MTL gain at p = 1 at the "
        "smallest size − MTL gain at p = 1 in the stream] is above 0; MTL gain = single-task "
        "loss − the same run's multi-task loss, task 1's early-stopped test MSE, mean over "
        "runs",
        gain_shrinks,
    ),
)


register(
    Experiment(
        name="data_regime",
        description="training-set size (1e4 to 1e6, and the stream) x correlation, "
        "single-task/SB/OMoE/MMoE/PLE, early-stopped",
        cells=cells,
        figures=(draw_where, draw_effect, draw_loss, draw_gain),
        claims=CLAIMS,
        in_all=False,
        extra=extra,
        tables=(ends_markdown, where_markdown, effect_markdown, stops_markdown),
    )
)
