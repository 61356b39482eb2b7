"""Figures, drawn from stored results only (never retrains).

Each ``plot_*`` function takes a matplotlib ``ax`` (or an array of axes), draws on it and
returns it; none calls ``show()``. :func:`draw_all` writes every PNG with a CSV of the
numbers behind it into a figures folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import stats
from .experiments import ordered
from .report import by_model, mtl_gains
from .runner import load_experiment

__all__ = [
    "plot_curves",
    "plot_histograms",
    "plot_relatedness",
    "plot_mtl_gain",
    "plot_gates",
    "draw_all",
]

LABELS = {
    "single_task": "Single-task",
    "shared_bottom": "Shared-Bottom",
    "omoe": "OMoE",
    "mmoe": "MMoE",
    "cgc": "CGC",
    "ple": "PLE",
}
CORR_COLORS = {0.5: "C3", 0.9: "C1", 1.0: "C2"}
MODEL_COLORS = {m: f"C{i}" for i, m in enumerate(LABELS)}


def _color(model: str) -> str:
    """One colour per architecture in every figure; unregistered names get later colours."""
    if model not in MODEL_COLORS:
        MODEL_COLORS[model] = f"C{len(MODEL_COLORS) % 10}"
    return MODEL_COLORS[model]


def _label(model: str) -> str:
    return LABELS.get(model, model)


def _mean_ci(x: np.ndarray, axis: int = 0):
    """Mean over finite runs and a 95% normal interval of the mean, along ``axis``."""
    x = np.where(np.isfinite(x), x, np.nan)
    n = np.sum(np.isfinite(x), axis=axis)
    mean = np.nanmean(x, axis=axis)
    half = 1.96 * np.nanstd(x, axis=axis, ddof=1) / np.sqrt(np.maximum(n, 1))
    return mean, mean - half, mean + half


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in r])


# ----------------------------------------------------------------------------- curves


def plot_curves(ax, steps, cells, task: int = 0, title: str | None = None):
    """Mean test loss of ``task`` against steps, one line per cell, with a 95% band.

    Args:
      ax: matplotlib axes.
      steps: (n_evals,) training steps.
      cells: list of ``(label, color, curves)`` with curves (runs, n_evals, K).
    """
    for label, color, curves in cells:
        mean, lo, hi = _mean_ci(curves[:, :, task])
        ax.plot(steps, mean, color=color, label=label)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"test MSE, task {task + 1}")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_histograms(axes, grid, bins: int = 30, colors=None):
    """A grid of final-loss histograms: ``grid[r][c] = (title, finals (runs,))``.

    Bins are shared across the whole grid so that spreads compare at a glance; ``colors``
    gives one colour per row.
    """
    finite = np.concatenate([f[np.isfinite(f)] for row in grid for _, f in row])
    edges = np.linspace(finite.min(), finite.max(), bins + 1) if finite.size else bins
    for r, row in enumerate(grid):
        for c, (title, finals) in enumerate(row):
            ax = axes[r][c]
            ok = finals[np.isfinite(finals)]
            ax.hist(ok, bins=edges, color=colors[r] if colors else f"C{r}", alpha=0.8)
            n_div = finals.size - ok.size
            ax.set_title(title + (f" ({n_div} diverged)" if n_div else ""), fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(grid) - 1:
                ax.set_xlabel("final test MSE, task 1")
            if c == 0:
                ax.set_ylabel("runs")
    return axes


def plot_relatedness(ax, series):
    """Final loss against correlation, one line per architecture with its 95% CI.

    Args:
      series: ``{model: (p (C,), iqm (C,), lo (C,), hi (C,))}``.
    """
    for model, (p, mid, lo, hi) in series.items():
        ax.plot(p, mid, "-o", ms=3, color=_color(model), label=_label(model))
        ax.fill_between(p, lo, hi, color=_color(model), alpha=0.15, lw=0)
    ax.set_xlabel("task correlation (cosine of task weights)")
    ax.set_ylabel("final test MSE (IQM over runs, mean of tasks)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_mtl_gain(axes, gains, corrs):
    """Bars of MTL gain per correlation and model, one axis per task.

    Args:
      gains: ``{model: (mean (C, K), lo (C, K), hi (C, K))}``.
      corrs: (C,) correlations.
    """
    models = list(gains)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(corrs))
    for k, ax in enumerate(axes):
        for i, model in enumerate(models):
            mean, lo, hi = (a[:, k] for a in gains[model])
            err = np.stack([mean - lo, hi - mean])
            ax.bar(
                x + (i - (len(models) - 1) / 2) * width,
                mean,
                width,
                yerr=err,
                capsize=2,
                color=_color(model),
                label=_label(model),
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, [f"{p:g}" for p in corrs])
        ax.set_xlabel("task correlation")
        ax.set_ylabel("MTL gain (single-task MSE − multi-task MSE)")
        ax.set_title(f"task {k + 1}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    return axes


def plot_gates(axes, gate_series, examples):
    """Gate use against correlation.

    Args:
      axes: three axes: (separation, entropy, example weights).
      gate_series: ``{model: (p (C,), separation (C, 3), entropy (C, 3))}`` where the
        last axis is (mean, lo, hi) over runs.
      examples: ``{title: gate_mean (K, E)}`` of single runs, drawn as grouped bars.
    """
    ax_sep, ax_ent, ax_ex = axes
    for model, (p, sep, ent) in gate_series.items():
        color = _color(model)
        ax_sep.plot(p, sep[:, 0], "-o", ms=3, color=color, label=_label(model))
        ax_sep.fill_between(p, sep[:, 1], sep[:, 2], color=color, alpha=0.15, lw=0)
        ax_ent.plot(p, ent[:, 0], "-o", ms=3, color=color, label=_label(model))
        ax_ent.fill_between(p, ent[:, 1], ent[:, 2], color=color, alpha=0.15, lw=0)
    ax_sep.set_title("Do the two tasks' gates separate?")
    ax_sep.set_xlabel("task correlation")
    ax_sep.set_ylabel("total variation between task gates\n(½ Σ_e |ḡ¹_e − ḡ²_e|)")
    ax_ent.set_title("Gate entropy (mean over samples and tasks)")
    ax_ent.set_xlabel("task correlation")
    ax_ent.set_ylabel("entropy (nats)")
    for ax in (ax_sep, ax_ent):
        ax.grid(alpha=0.3)
        ax.legend()
    titles = list(examples)
    n_exp = max(v.shape[-1] for v in examples.values()) if examples else 0
    width = 0.8 / max(2 * len(titles), 1)
    x = np.arange(n_exp)
    for j, title in enumerate(titles):
        g = examples[title]
        for k in range(g.shape[0]):
            off = (2 * j + k - (2 * len(titles) - 1) / 2) * width
            ax_ex.bar(
                x + off,
                g[k],
                width,
                color=f"C{2 * j + k}",
                label=f"{title}, task {k + 1}",
            )
    ax_ex.set_xticks(x, [f"e{e + 1}" for e in x])
    ax_ex.set_xlabel("expert")
    ax_ex.set_ylabel("mean gate weight")
    ax_ex.set_title("MMoE gate weights, one run (seed 0)")
    ax_ex.legend(fontsize=7)
    ax_ex.grid(alpha=0.3, axis="y")
    return axes


# ----------------------------------------------------------------------------- drawing


def _fig(nrows=1, ncols=1, **kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_fig3(root: Path, out: Path) -> Path:
    manifest, cells = load_experiment(root, "fig3")
    steps = np.asarray(manifest["eval_steps"])
    series = [
        (f"correlation {meta['p']:g}", CORR_COLORS.get(meta["p"], None), a["curves"])
        for meta, a in sorted(cells, key=lambda c: -c[0]["p"])
    ]
    fig, axes = _fig(figsize=(6, 4.5))
    n = cells[0][1]["final"].shape[0]
    plot_curves(axes[0][0], steps, series, title=f"Shared-Bottom (bottom 16), mean of {n} runs")
    _save(fig, out / "fig3_shared_bottom.png")
    rows = []
    for label, _, curves in series:
        mean, lo, hi = _mean_ci(curves[:, :, 0])
        rows += [[label, int(s), m, a, b] for s, m, a, b in zip(steps, mean, lo, hi, strict=True)]
    _write_csv(out / "fig3_shared_bottom.csv", ["series", "step", "mean", "ci_lo", "ci_hi"], rows)
    return out / "fig3_shared_bottom.png"


def draw_fig4(root: Path, out: Path) -> list[Path]:
    manifest, cells = load_experiment(root, "fig4")
    steps = np.asarray(manifest["eval_steps"])
    by = by_model(cells)
    models = [m for m in ("mmoe", "omoe", "shared_bottom") if m in by]
    fig, axes = _fig(1, len(models), figsize=(5 * len(models), 4.2), sharey=True)
    rows = []
    for ax, model in zip(axes[0], models, strict=True):
        series = [
            (f"correlation {p:g}", CORR_COLORS.get(p), by[model][p]["curves"])
            for p in sorted(by[model], reverse=True)
        ]
        n = series[0][2].shape[0]
        plot_curves(ax, steps, series, title=f"{_label(model)} (mean of {n} runs)")
        for label, _, curves in series:
            mean, lo, hi = _mean_ci(curves[:, :, 0])
            rows += [
                [model, label, int(s), m, a, b]
                for s, m, a, b in zip(steps, mean, lo, hi, strict=True)
            ]
    _save(fig, out / "fig4_models.png")
    _write_csv(out / "fig4_models.csv", ["model", "series", "step", "mean", "ci_lo", "ci_hi"], rows)

    corrs = sorted({p for m in models for p in by[m]})
    grid = [[(f"{_label(m)}, corr {p:g}", by[m][p]["final"][:, 0]) for p in corrs] for m in models]
    fig, axes = _fig(len(models), len(corrs), figsize=(3.6 * len(corrs), 2.6 * len(models)))
    plot_histograms(axes, grid, colors=[_color(m) for m in models])
    _save(fig, out / "fig5_histograms.png")
    hist_rows = [[m, p, i, float(v)] for m in models for p in corrs
                 for i, v in enumerate(by[m][p]["final"][:, 0])]  # fmt: skip
    _write_csv(
        out / "fig5_histograms.csv", ["model", "correlation", "run", "final_task1"], hist_rows
    )
    return [out / "fig4_models.png", out / "fig5_histograms.png"]


def draw_relatedness(root: Path, out: Path, seed: int = 0) -> Path:
    _, cells = load_experiment(root, "relatedness")
    by = by_model(cells)
    series, rows = {}, []
    for model in ordered(by):
        ps = sorted(by[model])
        mids, los, his = [], [], []
        for p in ps:
            finals = by[model][p]["final"].mean(-1)  # mean of the tasks, per run
            mid = stats.iqm(finals)
            lo, hi = stats.iqm_ci(finals, seed=seed)
            mids.append(mid), los.append(lo), his.append(hi)
            rows.append([model, p, int(np.isfinite(finals).sum()), mid, lo, hi])
        series[model] = tuple(np.asarray(v) for v in (ps, mids, los, his))
    fig, axes = _fig(figsize=(7, 5))
    n = cells[0][1]["final"].shape[0]
    plot_relatedness(axes[0][0], series)
    axes[0][0].set_title(f"Final loss against task relatedness ({n} runs per point, 95% CI)")
    _save(fig, out / "relatedness.png")
    _write_csv(
        out / "relatedness.csv", ["model", "correlation", "n_finite", "iqm", "ci_lo", "ci_hi"], rows
    )
    return out / "relatedness.png"


def draw_mtl_gain(root: Path, out: Path) -> Path:
    gains = mtl_gains(root)
    corrs = next(iter(gains.values()))[0]
    fig, axes = _fig(1, 2, figsize=(12, 4.5), sharey=True)
    plot_mtl_gain(axes[0], {m: v[1:] for m, v in gains.items()}, corrs)
    _save(fig, out / "mtl_gain.png")
    rows = [
        [m, p, k + 1, v[1][i, k], v[2][i, k], v[3][i, k]]
        for m, v in gains.items()
        for i, p in enumerate(corrs)
        for k in range(2)
    ]
    _write_csv(
        out / "mtl_gain.csv", ["model", "correlation", "task", "gain", "ci_lo", "ci_hi"], rows
    )
    return out / "mtl_gain.png"


def draw_gates(root: Path, out: Path) -> Path:
    _, cells = load_experiment(root, "gates")
    by = by_model(cells)
    series, rows = {}, []
    for model in ("omoe", "mmoe"):
        if model not in by:
            continue
        ps = sorted(by[model])
        sep, ent = np.zeros((len(ps), 3)), np.zeros((len(ps), 3))
        for i, p in enumerate(ps):
            g = by[model][p]["gate_mean"]  # (runs, K, E)
            tv = 0.5 * np.abs(g[:, 0] - g[:, 1]).sum(-1)  # (runs,)
            e = by[model][p]["gate_entropy"].mean(-1)
            sep[i] = _mean_ci(tv)
            ent[i] = _mean_ci(e)
            rows.append(
                [model, p, sep[i, 0], sep[i, 1], sep[i, 2], ent[i, 0], ent[i, 1], ent[i, 2]]
            )
        series[model] = (np.asarray(ps), sep, ent)
    examples = {}
    if "mmoe" in by:
        ps = sorted(by["mmoe"])
        for p in (ps[0], ps[-1]):
            examples[f"corr {p:g}"] = by["mmoe"][p]["gate_mean"][0]
    fig, axes = _fig(1, 3, figsize=(16, 4.5))
    plot_gates(axes[0], series, examples)
    _save(fig, out / "gates.png")
    _write_csv(
        out / "gates.csv",
        ["model", "correlation", "tv_mean", "tv_lo", "tv_hi", "entropy_mean", "entropy_lo",
         "entropy_hi"],
        rows,
    )  # fmt: skip
    return out / "gates.png"


DRAWERS = {
    "fig3": draw_fig3,
    "fig4": draw_fig4,
    "relatedness": draw_relatedness,
    "mtl_gain": draw_mtl_gain,
    "gates": draw_gates,
}


def draw_all(root: Path, out: Path, names=None) -> list[Path]:
    """Draw every figure whose experiment has results in ``root``; returns the PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in DRAWERS.items():
        if names is not None and name not in names:
            continue
        if not (root / name / "manifest.json").exists():
            continue
        res = draw(root, out)
        written += res if isinstance(res, list) else [res]
    return written
