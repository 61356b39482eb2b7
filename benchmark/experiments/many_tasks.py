"""Many tasks: K tasks in C clusters of related tasks, negative transfer and routing.

K ∈ {2, 4, 8, 16} regression tasks in C ∈ {1, 2, 4} clusters (C ≤ K): cosine ``p_in``
between two tasks of a cluster, 0 between clusters (``datagen.cluster_cosines``; task k
belongs to cluster ``k * C // K``). The architectures designed for many tasks are here:
DSelect-k (Hazimeh et al., NeurIPS 2021, up to 128 tasks), CGC (Tang et al., RecSys 2020)
and AdaTT (Li et al., KDD 2023), beside Shared-Bottom, MMoE (Ma et al., KDD 2018) and the
single-task baseline of the MTL gain. Each keeps its paper's sizes at every K: MMoE's and
DSelect-k's 8 shared experts are shared by all K tasks, while CGC and AdaTT give every
task its own 2 experts beside 4 shared ones (K * 2 + 4 experts), and the single-task
baseline is K separate networks.

Two data regimes, as ``data_regime`` defines them: a fixed set of 10^5 points per task
(the ``n1e5`` profile's size, by the rule of docs/protocol.md) and the stream. Model
selection is early stopping (each task's test MSE at its lowest validation MSE), in both.
The steps are a quarter of the profile's (40 000 at batch 32 for ``default``): a run-step
of K = 16 costs up to 9 times one of K = 2 (``make bench``, ``task_scaling``), and the
study at the full 160 000 steps would cost about 40 h on 2 cores.

The claims are declared before any cell trained (docs/many_tasks.md) and are decided in
each regime apart. Not part of ``run all``: ``python -m benchmark run many_tasks``
(``make extend``); ``--models NAME`` trains another architecture's grid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from datagen import cluster_cosines

from .. import plots, stats
from ..models import ModelConfig, get
from ..protocol import Cell, Claim, Experiment, Verdict
from ..runner import Results
from . import register
from ._common import fmt_ci, model_grid
from .data_regime import N_VAL, SELECTION, size_label

KS = (2, 4, 8, 16)
CS = (1, 2, 4)
# Label correlation (docs/generator.md): p = 0.95 gives 0.45, about half of p = 1's 0.998.
P_IN = (0.95, 1.0)
SIZES = (100_000, None)  # the n1e5 profile's size (docs/protocol.md), and the stream
BASELINE = "single_task"
MODELS = (BASELINE, "shared_bottom", "mmoe", "dselect_k", "cgc", "adatt")
HEATMAP = ("mmoe", "dselect_k")  # the gates drawn as K x K similarity maps
STEP_DIVISOR = 4  # the profile's steps / this
# The cells every claim reads, trained first: K = 16 in 4 clusters and in 1, p_in = 1.
CLAIM_CELLS = ((16, 4, 1.0), (16, 1, 1.0))


def settings() -> list[tuple[int, int, float | None]]:
    """Every ``(K, C, p_in)``, in training order: :data:`CLAIM_CELLS`, then K descending.
    ``p_in`` is None where C = K: every cluster is one task, so R is the identity."""
    every = [(k, c, p) for k in KS for c in CS if c <= k for p in (P_IN if c < k else (None,))]
    rest = [s for s in every if s not in CLAIM_CELLS]
    return list(CLAIM_CELLS) + sorted(rest, key=lambda s: (-s[0], s[1], -(s[2] or 0.0)))


def cosines(k: int, c: int, p_in: float | None) -> tuple:
    """``R`` of K tasks in C clusters, as nested tuples (a cell's spec)."""
    r = cluster_cosines(k, c, 1.0 if p_in is None else p_in, 0.0)
    return tuple(tuple(float(v) for v in row) for row in r)


def structure(corr) -> tuple[int, int, float | None, np.ndarray]:
    """``(K, C, p_in, cluster (K,))`` of a cosine matrix that :func:`cosines` built:
    clusters are contiguous blocks, so task i opens a new one where ``R[i, i-1] = 0``."""
    r = np.asarray(corr, dtype=np.float64)
    k = r.shape[0]
    cluster = np.concatenate([[0], np.cumsum(np.diag(r, -1) == 0.0)]).astype(int)
    c = int(cluster[-1]) + 1
    return k, c, (None if c == k else float(r[0, 1])), cluster


def _train_changes(profile, k: int, n) -> dict:
    steps = max(profile.train.steps // STEP_DIVISOR, 1)
    every = math.gcd(steps, profile.train.eval_every)
    return {"n_tasks": k, "steps": steps, "eval_every": every, "n_train": n, "n_val": N_VAL}


def _grid(profile, models) -> tuple[Cell, ...]:
    """Every (size, setting, model), ``profile.sweep_runs`` runs each: the finite regime
    first. A cell's x is K; its series ``"<label> | C=<C> p_in=<p> | <size>"``."""
    out = []
    for n in SIZES:
        for k, c, p in settings():
            for model in models:
                spec = profile.spec(model, cosines(k, c, p), **_train_changes(profile, k, n))
                pin = "-" if p is None else f"{p:g}"
                label = f"{model.display()} | C={c} p_in={pin} | {size_label(n)}"
                out.append(Cell(spec, profile.sweep_runs, x=float(k), series=label))
    return tuple(out)


cells, extra = model_grid(_grid, MODELS)  # MODELS' grid; any other's on request


# ----------------------------------------------------------------------------- measures


def _table(res: Results) -> dict:
    """``{(model, n, K, C, p_in): CellResult}``."""
    out = {}
    for cell in res.cells:
        k, c, p, _ = structure(cell.meta["corr"])
        out[(cell.meta["model"], cell.meta.get("n_train"), k, c, p)] = cell
    return out


def _find(table, model, n, k, c, p):
    """The cell at (K, C, p_in); where C = K any p_in names the one identity cell."""
    return table.get((model, n, k, c, None if c == k else p))


def task_loss(cell) -> np.ndarray:
    """(runs, K): each task's early-stopped test MSE."""
    return np.asarray(cell.loss(SELECTION), dtype=np.float64)


def mean_task(cell) -> np.ndarray:
    """(runs,): the mean over tasks of the test MSE."""
    return task_loss(cell).mean(axis=1)


def worst_task(cell) -> np.ndarray:
    """(runs,): the worst task's test MSE."""
    return task_loss(cell).max(axis=1)


def task_gains(single, cell) -> np.ndarray:
    """(K, 3): each task's MTL gain, ``(point, lo, hi)``: the mean over runs of the
    single-task loss minus the same run's multi-task loss, paired 95% bootstrap CI."""
    a, b = task_loss(single), task_loss(cell)
    return np.array([stats.paired_diff(a[:, t], b[:, t]) for t in range(a.shape[1])])


def negative_fraction(single, cell) -> float:
    """The fraction of tasks with negative transfer: gain CI entirely below 0."""
    return float(np.mean(task_gains(single, cell)[:, 2] < 0))


def mean_gain(single, cell):
    """``(point, lo, hi)``: the MTL gain averaged over tasks, paired CI over runs."""
    return stats.paired_diff(mean_task(single), mean_task(cell))


def comparable_gates(model: str, gate_mean: np.ndarray) -> np.ndarray:
    """``(runs, K, E')``: the part of each task's mean gate weights that every task shares,
    renormalised to sum to 1. MMoE, DSelect-k and AdaTT gate over one set of experts (all
    of it); CGC and PLE over their own experts then the shared ones (the shared block)."""
    g = np.asarray(gate_mean, dtype=np.float64)
    if model in ("cgc", "ple"):
        g = g[..., ModelConfig.of(model).sizes()["task_experts"] :]
    return g / np.maximum(g.sum(-1, keepdims=True), 1e-12)


def gate_similarity(model: str, gate_mean: np.ndarray) -> np.ndarray:
    """``(runs, K, K)``: 1 − the total variation between two tasks' mean gate weights, in
    [0, 1]: 1 = the two tasks weigh the experts alike."""
    g = comparable_gates(model, gate_mean)
    return 1.0 - 0.5 * np.abs(g[:, :, None, :] - g[:, None, :, :]).sum(-1)


def routing(cell) -> tuple[np.ndarray, np.ndarray]:
    """``(within (runs,), across (runs,))``: the mean gate similarity of two tasks of one
    cluster, and of two tasks of different clusters. Needs clusters of 2 tasks or more."""
    _, _, _, cluster = structure(cell.meta["corr"])
    sim = gate_similarity(cell.meta["model"], cell.arrays["gate_mean"])
    same = cluster[:, None] == cluster[None, :]
    off = ~np.eye(len(cluster), dtype=bool)
    return sim[:, same & off].mean(-1), sim[:, ~same].mean(-1)


def routing_score(cell):
    """``(point, lo, hi)``: within − across similarity, mean over runs, paired CI."""
    return stats.paired_diff(*routing(cell))


def still_falling(cells) -> tuple[float, float, int]:
    """``(at_end, fall, runs)`` over ``cells`` (a list of :class:`CellResult`), from the
    runs that did not diverge: ``at_end``, the share of their (run, task) pairs whose
    lowest validation MSE is the last evaluation (early stopping did not act); ``fall``,
    the median over runs of the mean-task test MSE's relative fall over the last tenth of
    the evaluations (one at least), ``(MSE there − at the end) / at the end``. NaNs and 0
    runs where no run is left."""
    ends, falls = [], []
    for c in cells:
        keep = ~np.asarray(c.arrays["diverged"], dtype=bool)
        curves = np.asarray(c.arrays["curves"], dtype=np.float64)[keep]  # (runs, evals, K)
        last = curves.shape[1] - 1
        best = np.asarray(c.arrays.get("best_eval", np.full(c.final.shape, -1)))[keep]
        ends.append((best[best >= 0] == last).astype(float))
        late = curves[:, last - max(round(0.1 * last), 1)].mean(-1)
        end = curves[:, last].mean(-1)
        falls.append((late - end) / end)
    ends, falls = np.concatenate(ends or [np.zeros(0)]), np.concatenate(falls or [np.zeros(0)])
    if not falls.size:
        return float("nan"), float("nan"), 0
    at_end = float(ends.mean()) if ends.size else float("nan")
    return at_end, float(np.median(falls)), int(falls.size)


# ----------------------------------------------------------------------------- figures


def _models(table, gated: bool = False) -> list[str]:
    have = {key[0] for key in table}
    out = [m for m in MODELS if m in have] + sorted(have - set(MODELS))
    if gated:
        out = [m for m in out if m != BASELINE and _has_gates(table, m)]
    return out


def _has_gates(table, model) -> bool:
    return any(key[0] == model and v.arrays["gate_mean"].shape[-1] for key, v in table.items())


def _panels(table):
    """``[(n, p_in)]`` rows and the C columns that the stored cells fill."""
    sizes = [n for n in SIZES if any(key[1] == n for key in table)]
    sizes += sorted({key[1] for key in table} - set(SIZES), key=lambda n: (n is None, n or 0))
    return [(n, p) for n in sizes for p in P_IN], [c for c in CS if any(k[3] == c for k in table)]


def _k_axis(ax) -> None:
    """K on a log-2 x axis, labelled at every K, the same range on every panel (filled
    or not)."""
    ax.set_xscale("log", base=2)
    ax.set_xlim(KS[0] / 1.25, KS[-1] * 1.25)
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.minorticks_off()


def _against_k(table, models, fn, ylabel, log=False):
    """A figure of ``fn(table, model, n, K, C, p_in) -> (point, lo, hi) | None`` against
    K: a row per (size, p_in), a column per C. Returns ``(fig, csv rows)``."""
    rows_, cols = _panels(table)
    fig, axes = plots.figure(
        len(rows_), len(cols), figsize=(4.6 * len(cols) + 2, 3.6 * len(rows_)), sharey=True
    )
    rows, panels = [], {}
    for i, (n, p) in enumerate(rows_):
        for j, c in enumerate(cols):
            series = panels[(i, j)] = []
            for m in models:
                pts = [(k, fn(table, m, n, k, c, p)) for k in KS if k >= c]
                pts = [(k, v) for k, v in pts if v is not None]
                if not pts:
                    continue
                ks, vals = [k for k, _ in pts], np.array([v for _, v in pts])
                series.append((get(m).label, plots.color(m), ks, *vals.T))
                rows += [[m, size_label(n), p, c, k, *v] for k, v in zip(ks, vals, strict=True)]
    fullest = max(panels, key=lambda ij: (len(panels[ij]), ij[1], -ij[0]))
    for (i, j), series in panels.items():
        n, p = rows_[i]
        ax = axes[i][j]
        plots.plot_lines(
            ax,
            series,
            "tasks K" if i == len(rows_) - 1 else "",
            ylabel if j == 0 else "",
            title=f"{size_label(n)}, C = {cols[j]}, p_in = {p:g}",
            legend=None if (i, j) != fullest else ("outside" if j == len(cols) - 1 else "inside"),
        )
        _k_axis(ax)
        if log:
            plots.log_y(ax)
    return fig, rows


def _loss_fn(measure):
    def fn(table, m, n, k, c, p):
        cell = _find(table, m, n, k, c, p)
        if cell is None:
            return None
        v = measure(cell)
        return (stats.iqm(v), *stats.iqm_ci(v))

    return fn


def _neg_fn(table, m, n, k, c, p):
    cell, single = _find(table, m, n, k, c, p), _find(table, BASELINE, n, k, c, p)
    if cell is None or single is None:
        return None
    f = negative_fraction(single, cell)
    return (f, f, f)


def _draw_loss(res, out, caption, measure, name, what):
    table = _table(res)
    if not table:
        return []
    fig, rows = _against_k(
        table,
        _models(table),
        _loss_fn(measure),
        f"{what} test MSE, early-stopped\n(IQM over runs, 95% CI; log scale)",
        log=True,
    )
    header = ["model", "size", "p_in", "clusters", "tasks", "iqm", "ci_lo", "ci_hi"]
    plots.write_csv(out / f"{name}.csv", header, rows)
    return [plots.save(fig, out / f"{name}.png", caption)]


def draw_mean_loss(res: Results, out: Path, caption: str) -> list[Path]:
    """The mean-over-tasks loss against K, a panel per (size, p_in) and C."""
    return _draw_loss(res, out, caption, mean_task, "many_tasks_loss", "mean-task")


def draw_worst_loss(res: Results, out: Path, caption: str) -> list[Path]:
    """The worst task's loss against K, a panel per (size, p_in) and C."""
    return _draw_loss(res, out, caption, worst_task, "many_tasks_worst", "worst-task")


def draw_negative(res: Results, out: Path, caption: str) -> list[Path]:
    """The fraction of tasks with negative transfer (per-task MTL gain's paired 95% CI
    below 0) against K, a panel per (size, p_in) and C."""
    table = _table(res)
    models = [m for m in _models(table) if m != BASELINE]
    if not models or not any(key[0] == BASELINE for key in table):
        return []
    fig, rows = _against_k(table, models, _neg_fn, "fraction of tasks with negative transfer")
    header = ["model", "size", "p_in", "clusters", "tasks", "fraction"]
    plots.write_csv(out / "many_tasks_negative.csv", header, [r[:6] for r in rows])
    return [plots.save(fig, out / "many_tasks_negative.png", caption)]


def draw_routing(res: Results, out: Path, caption: str) -> list[Path]:
    """For K = 16, C = 4, p_in = 1: the true cosine matrix beside the K x K gate-vector
    similarity (mean over runs) of :data:`HEATMAP`'s models, a row per size; the CSV
    holds every gated model's routing score (within − across similarity) in every cell
    with clusters of 2 tasks or more."""
    table = _table(res)
    k, c, p = CLAIM_CELLS[0]
    sizes = [n for n in SIZES if any(_find(table, m, n, k, c, p) for m in HEATMAP)]
    rows = []
    for m in _models(table, gated=True):
        for n, kk, cc, pp in sorted(
            {key[1:] for key in table if key[0] == m},
            key=lambda s: (s[0] is None, s[0] or 0, s[1], s[2], s[3] or 0),
        ):
            if kk // cc >= 2 and cc >= 2:
                score = routing_score(table[(m, n, kk, cc, pp)])
                rows.append([m, size_label(n), pp, cc, kk, *score])
    header = ["model", "size", "p_in", "clusters", "tasks", "within_minus_across", "lo", "hi"]
    plots.write_csv(out / "many_tasks_routing.csv", header, rows)
    if not sizes:
        return []
    fig, axes = plots.figure(len(sizes), 1 + len(HEATMAP), figsize=(13, 4.4 * len(sizes)))
    labels = [str(t + 1) for t in range(k)]
    for i, n in enumerate(sizes):
        plots.plot_matrix(
            axes[i][0], labels, np.array(cosines(k, c, p)), title="true cosine R",
            annotate=False, cmap="viridis",
        )  # fmt: skip
        for j, m in enumerate(HEATMAP):
            cell = _find(table, m, n, k, c, p)
            if cell is None:
                axes[i][j + 1].set_visible(False)
                continue
            sim = np.nanmean(gate_similarity(m, cell.arrays["gate_mean"]), axis=0)
            image = plots.plot_matrix(
                axes[i][j + 1], labels, sim, annotate=False, cmap="viridis",
                title=f"{get(m).label}, {size_label(n)}: gate similarity\n"
                f"within − across clusters {fmt_ci(*routing_score(cell), digits=2)}",
            )  # fmt: skip
            fig.colorbar(image, ax=axes[i][j + 1], fraction=0.046)
    return [plots.save(fig, out / "many_tasks_routing.png", caption)]


def draw_cost(res: Results, out: Path, caption: str) -> list[Path]:
    """Wall time per run-step against K, one line per architecture: the stored cells'
    training time as trained (both regimes), mean over cells; ``make bench`` measures the
    same on an idle machine (``task_scaling``)."""
    by: dict = {}
    for cell in res.cells:
        m, k = cell.meta["model"], int(cell.meta["n_tasks"])
        us = 1e6 * cell.meta["train_wall_s"] / (cell.meta["n_runs"] * cell.meta["steps"])
        by.setdefault(m, {}).setdefault(k, []).append(us)
    if not by:
        return []
    fig, axes = plots.figure(1, 1, figsize=(7, 4.2))
    series, rows = [], []
    for m in [m for m in MODELS if m in by] + sorted(set(by) - set(MODELS)):
        ks = sorted(by[m])
        v = np.array([np.mean(by[m][k]) for k in ks])
        series.append((get(m).label, plots.color(m), ks, v, v, v))
        rows += [[m, k, float(x), len(by[m][k])] for k, x in zip(ks, v, strict=True)]
    ax = plots.plot_lines(
        axes[0][0], series, "tasks K", "wall time per run-step (µs, as trained)",
        title="cost per run-step", legend="outside",
    )  # fmt: skip
    _k_axis(ax)
    plots.log_y(ax)
    header = ["model", "tasks", "us_per_run_step", "cells"]
    plots.write_csv(out / "many_tasks_cost.csv", header, rows)
    return [plots.save(fig, out / "many_tasks_cost.png", caption)]


# ----------------------------------------------------------------------------- tables


def _settings_markdown(table, models, entry, empty: str, keep=lambda k, c, p: True) -> str:
    """A markdown table with a row per (size, K, C, p_in) that ``keep`` accepts, the
    finite regime first, then K and C ascending and p_in descending, and a column per
    model of ``models``: ``entry(table, model, n, K, C, p_in)`` fills each cell, or None
    for "–"; a row of None only is left out, and a table without rows or columns is the
    sentence ``empty``."""
    sizes = [n for n in SIZES if any(key[1] == n for key in table)]
    rows = []
    for n in sizes:
        for k, c, p in sorted(settings(), key=lambda s: (s[0], s[1], -(s[2] or 0.0))):
            cells = [entry(table, m, n, k, c, p) for m in models] if keep(k, c, p) else []
            if any(x is not None for x in cells):
                pin = "–" if p is None else f"{p:g}"
                cells = ["–" if x is None else x for x in cells]
                rows.append(f"| {size_label(n)} | {k} | {c} | {pin} | " + " | ".join(cells) + " |")
    if not rows:
        return empty
    head = "| regime | K | C | p_in | " + " | ".join(get(m).label for m in models) + " |"
    return "\n".join([head, "|---" * (4 + len(models)) + "|", *rows])


def _iqm(x) -> str:
    v = stats.iqm(x)
    return f"{v:.3f}" if np.isfinite(v) else "n/a"


def loss_markdown(res: Results) -> str:
    """Every stored cell's mean-task loss, IQM over runs with its 95% CI, and its
    worst-task loss (IQM): a row per (regime, K, C, p_in), a column per architecture.
    The table in docs/many_tasks.md."""
    table = _table(res)

    def entry(table, m, n, k, c, p):
        cell = _find(table, m, n, k, c, p)
        if cell is None:
            return None
        v = mean_task(cell)
        return f"{fmt_ci(stats.iqm(v), *stats.iqm_ci(v))}; {_iqm(worst_task(cell))}"

    return _settings_markdown(table, _models(table), entry, "No cell is stored yet.")


def transfer_markdown(res: Results) -> str:
    """Every multi-task architecture's MTL gain, mean over tasks with its paired 95% CI,
    and how many of the K tasks transfer negatively (gain CI below 0): a row per
    (regime, K, C, p_in) where the single-task cell and a multi-task one are stored. The
    table in docs/many_tasks.md."""
    table = _table(res)

    def entry(table, m, n, k, c, p):
        cell, single = _find(table, m, n, k, c, p), _find(table, BASELINE, n, k, c, p)
        if cell is None or single is None:
            return None
        negative = round(negative_fraction(single, cell) * k)
        return f"{fmt_ci(*mean_gain(single, cell), signed=True)}; {negative}/{k}"

    models = [m for m in _models(table) if m != BASELINE]
    empty = "No setting has both its single-task cell and a multi-task one stored yet."
    return _settings_markdown(table, models, entry, empty)


def routing_markdown(res: Results) -> str:
    """Every gated architecture's routing score (gate similarity within − across
    clusters, paired 95% CI) in every stored setting with 2 clusters or more of 2 tasks
    or more. The table in docs/many_tasks.md."""
    table = _table(res)

    def entry(table, m, n, k, c, p):
        cell = _find(table, m, n, k, c, p)
        return None if cell is None else fmt_ci(*routing_score(cell), digits=2, signed=True)

    clustered = lambda k, c, p: c >= 2 and k // c >= 2  # noqa: E731
    empty = "No gated architecture's cell with clusters of 2 tasks or more is stored yet."
    return _settings_markdown(table, _models(table, gated=True), entry, empty, clustered)


def stops_markdown(res: Results) -> str:
    """Whether the runs still improve at the end of training: per stored (regime, K)
    (rows) and architecture (columns), over the cells of every setting there,
    :func:`still_falling`'s share of tasks whose lowest validation MSE is the last
    evaluation, then the median fall of the mean-task test MSE over the last tenth of
    the steps (``100% · 22%``); "–" where no cell is stored. Descriptive: it decides no
    claim. The table in docs/many_tasks.md."""
    table = _table(res)
    models = _models(table)
    keys = [(n, k) for n in SIZES for k in KS if any(key[1:3] == (n, k) for key in table)]
    if not keys:
        return "No cell is stored yet."

    def entry(m, n, k) -> str:
        cells = [v for key, v in table.items() if key[:3] == (m, n, k)]
        if not cells:
            return "–"
        at_end, fall, runs = still_falling(cells)
        if not runs:
            return "n/a"
        share = "n/a" if not np.isfinite(at_end) else f"{at_end:.0%}"
        return f"{share} · {fall:.0%}"

    lines = ["| regime | K | " + " | ".join(get(m).label for m in models) + " |"]
    lines.append("|---" * (2 + len(models)) + "|")
    for n, k in keys:
        lines.append(
            f"| {size_label(n)} | {k} | " + " | ".join(entry(m, n, k) for m in models) + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- claims


def _need(table, n, wanted) -> list[str]:
    """The missing ``(model, K, C, p_in)`` cells of ``wanted`` at size ``n``, named."""
    return [
        f"{m} K={k} C={c} p_in={p:g}"
        for m, k, c, p in wanted
        if _find(table, m, n, k, c, p) is None
    ]


def _waits(missing) -> Verdict:
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return Verdict(None, "waits for " + ", ".join(missing[:3]) + more)


def gates_recover(res: Results, n) -> Verdict:
    table = _table(res)
    k, c, p = CLAIM_CELLS[0]
    missing = _need(table, n, [(m, k, c, p) for m in HEATMAP])
    if missing:
        return _waits(missing)
    parts, holds = [], True
    for m in HEATMAP:
        ci = routing_score(_find(table, m, n, k, c, p))
        holds &= bool(ci[1] > 0)
        parts.append(f"{get(m).label} {fmt_ci(*ci)}")
    return Verdict(holds, "gate similarity within − across clusters: " + ", ".join(parts))


def sb_worst_grows(res: Results, n) -> Verdict:
    table = _table(res)
    (k, c4, p), (_, c1, _) = CLAIM_CELLS
    wanted = [(m, k, c, p) for m in ("shared_bottom", "mmoe") for c in (c4, c1)]
    missing = _need(table, n, wanted)
    if missing:
        return _waits(missing)
    arrays = [worst_task(_find(table, m, n, kk, c, pp)) for m, kk, c, pp in wanted]

    def stat(sb4, sb1, mm4, mm1, axis):
        return np.mean((sb4 - sb1) - (mm4 - mm1), axis=axis)

    ci = stats.paired_bootstrap(stat, arrays)
    return Verdict(
        bool(ci[1] > 0),
        f"[SB worst-task loss at C = {c4} − at C = {c1}] − [the same for MMoE], K = {k}: "
        + fmt_ci(*ci),
    )


def dselect_beats_mmoe(res: Results, n) -> Verdict:
    table = _table(res)
    big = [(k, c, p) for k, c, p in settings() if k >= 8]
    wanted = [(m, *s) for s in big for m in ("mmoe", "dselect_k")]
    missing = _need(table, n, wanted)
    if missing:
        return _waits(missing)
    mm = np.stack([mean_task(_find(table, "mmoe", n, *s)) for s in big], axis=1).mean(1)
    ds = np.stack([mean_task(_find(table, "dselect_k", n, *s)) for s in big], axis=1).mean(1)
    ci = stats.paired_diff(mm, ds)
    return Verdict(
        bool(ci[1] > 0),
        f"MMoE − DSelect-k mean-task loss, averaged over the {len(big)} settings with "
        f"K ≥ 8: {fmt_ci(*ci)}",
    )


def sb_negative(res: Results, n) -> Verdict:
    table = _table(res)
    k, c, p = CLAIM_CELLS[0]
    missing = _need(table, n, [(m, k, c, p) for m in (BASELINE, "shared_bottom")])
    if missing:
        return _waits(missing)
    ci = mean_gain(_find(table, BASELINE, n, k, c, p), _find(table, "shared_bottom", n, k, c, p))
    what = f"SB's MTL gain, mean over tasks, K = {k}, C = {c}: {fmt_ci(*ci)}"
    return Verdict(bool(ci[2] < 0), what)


_RULES = (
    (
        "gates_recover_clusters",
        gates_recover,
        "MMoE's gates learn which tasks belong together (KDD18 section 4); so do DSelect-k's",
        "Ma et al., KDD 2018; Hazimeh et al., NeurIPS 2021",
        "for MMoE and for DSelect-k at K = 16, C = 4, p_in = 1: the paired 95% CI of [mean "
        "gate similarity of two tasks of one cluster − of two tasks of different clusters] "
        "is above 0; similarity = 1 − total variation between two tasks' mean gate weights",
    ),
    (
        "sb_worst_grows_with_clusters",
        sb_worst_grows,
        "a hard-shared bottom suffers from unrelated tasks more than gated experts do",
        "Ma et al., KDD 2018",
        "at K = 16, p_in = 1: the paired 95% CI of [SB's worst-task loss at C = 4 − at "
        "C = 1] − [MMoE's worst-task loss at C = 4 − at C = 1] is above 0",
    ),
    (
        "dselect_beats_mmoe",
        dselect_beats_mmoe,
        "DSelect-k outperforms MMoE's softmax gate with many tasks",
        "Hazimeh et al., NeurIPS 2021",
        "the paired 95% CI of [MMoE's − DSelect-k's mean-task loss], each run's mean over "
        "every setting with K ≥ 8 (every C and p_in), is above 0",
    ),
    (
        "sb_negative_transfer",
        sb_negative,
        "Shared-Bottom shows negative transfer once the clusters are unrelated",
        "Tang et al., RecSys 2020",
        "at K = 16, C = 4, p_in = 1: the paired 95% CI of Shared-Bottom's MTL gain (single-"
        "task − SB loss, mean over tasks) is below 0",
    ),
)


def _claim(name, fn, words, source, rule, n) -> Claim:
    where = f"on {size_label(n)} points per task" if n is not None else "in the stream"
    return Claim(
        f"many_tasks.{name}_{size_label(n)}",
        source,
        f"{words} ({where})",
        f"{rule}; each task's early-stopped test MSE, {where}",
        lambda res: fn(res, n),
    )


CLAIMS = tuple(_claim(*rule, n) for n in SIZES for rule in _RULES)


register(
    Experiment(
        name="many_tasks",
        description=f"K = 2..16 tasks in C clusters of related tasks, {size_label(SIZES[0])} "
        "points and the stream; single-task/SB/MMoE/DSelect-k/CGC/AdaTT",
        cells=cells,
        figures=(draw_mean_loss, draw_worst_loss, draw_negative, draw_routing, draw_cost),
        claims=CLAIMS,
        in_all=False,
        extra=extra,
        tables=(loss_markdown, transfer_markdown, routing_markdown, stops_markdown),
    )
)
