"""Figures: drawing only. Every number drawn is computed by the caller (with
:mod:`benchmark.stats`) and passed in.

Each ``plot_*`` function takes a matplotlib ``ax`` (or a sequence of axes), draws on it and
returns it; none calls ``show()``. :func:`figure`, :func:`save` and :func:`write_csv` are
what an experiment's figure function uses to write a PNG with its caption and the CSV of
the numbers behind it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .models import names as arch_names
from .runner import write_bytes

__all__ = [
    "color",
    "figure",
    "save",
    "write_csv",
    "plot_curves",
    "plot_histograms",
    "plot_lines",
    "plot_bars",
    "plot_gate_weights",
    "plot_intervals",
    "plot_matrix",
    "plot_heatmap",
]

CORR_COLORS = {0.5: "C3", 0.9: "C1", 1.0: "C2"}


# matplotlib's ten default colours, then ten more that none of them resembles.
PALETTE = tuple(f"C{i}" for i in range(10)) + (
    "#000000",
    "#000080",
    "#b8860b",
    "#00ff7f",
    "#8b0000",
    "#ff00ff",
    "#556b2f",
    "#4682b4",
    "#d2b48c",
    "#00ced1",
)


def color(model: str) -> str:
    """One colour per registered architecture, in registry order, in every figure: the
    first 20 architectures get 20 distinct colours."""
    every = arch_names()
    i = every.index(model) if model in every else len(every) + sum(map(ord, model))
    return PALETTE[i % len(PALETTE)]


def corr_color(p: float) -> str | None:
    """The colour of a correlation in the paper's figures (None: matplotlib's cycle)."""
    return CORR_COLORS.get(round(p, 6))


def figure(nrows: int = 1, ncols: int = 1, **kw):
    """``(fig, axes)`` with a 2-D array of axes, on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def save(fig, path: Path, caption: str) -> Path:
    """Write ``fig`` to ``path`` (PNG) with ``caption`` (profile, steps, runs) at the foot;
    a file that holds the same image already is left alone."""
    import matplotlib.pyplot as plt

    fig.text(0.995, 0.005, caption, ha="right", va="bottom", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    write_bytes(Path(path), buf.getvalue())
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write the numbers behind a figure; floats with 6 significant digits. A file that
    holds these numbers already is left alone."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in r])
    write_bytes(Path(path), buf.getvalue().encode())


def log_y(ax) -> None:
    """A log y axis with labelled ticks at 1, 2 and 5 times each power of ten and no minor
    ticks, so that values within one decade still get labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def _steps_formatter():
    """Tick labels in thousands (``40k``), so that long budgets' ticks never run together."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}")


def plot_curves(
    ax, steps, series, ylabel: str, title: str | None = None, band: str = "", log: bool = False
):
    """Lines with shaded bands against training steps.

    Args:
      steps: (n_evals,) training steps.
      series: list of ``(label, color, mean (n_evals,), lo (n_evals,), hi (n_evals,))``.
      band: what the band is, for the legend title (e.g. "band: 95% CI of the mean").
      log: a logarithmic y axis, so that the late phase's small losses stay readable.
    """
    for label, c, mean, lo, hi in series:
        ax.plot(steps, mean, color=c, label=label)
        ax.fill_between(steps, lo, hi, color=c, alpha=0.2, lw=0)
    ax.set_xlabel("training steps")
    ax.xaxis.set_major_formatter(_steps_formatter())
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(title=band or None, title_fontsize=7, fontsize=8)
    return ax


def plot_histograms(axes, grid, edges, colors=None, xlabel: str = "final test MSE"):
    """A grid of histograms, the fraction of runs per bin, the same bins in every panel.

    Args:
      grid: ``grid[r][c] = (title, values (runs,), n_excluded)``; NaNs already removed.
      edges: (bins + 1,) shared bin edges.
      colors: one colour per row.
    """
    for r, row in enumerate(grid):
        for c, (title, values, n_out) in enumerate(row):
            ax = axes[r][c]
            weights = np.full(values.size, 1.0 / max(values.size + n_out, 1))
            ax.hist(
                values,
                bins=edges,
                weights=weights,
                alpha=0.8,
                color=colors[r] if colors else f"C{r}",
            )
            ax.set_title(title + (f" ({n_out} diverged)" if n_out else ""), fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(grid) - 1:
                ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel("fraction of runs")
    return axes


def plot_lines(
    ax, series, xlabel: str, ylabel: str, title: str | None = None, legend: str | None = "inside"
):
    """Points joined by lines, each with a shaded interval.

    Args:
      series: list of ``(label, color, x (C,), mid (C,), lo (C,), hi (C,))``.
      legend: ``"inside"`` (matplotlib's best place), ``"outside"`` (right of the axes,
        for many series) or None.
    """
    for label, c, x, mid, lo, hi in series:
        ax.plot(x, mid, "-o", ms=3, color=c, label=label)
        ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if legend == "outside":
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    elif legend is not None:
        ax.legend(fontsize=8)
    return ax


def plot_bars(ax, groups, series, ylabel: str, title: str | None = None):
    """Grouped bars with error bars.

    Args:
      groups: (C,) group labels on the x axis.
      series: list of ``(label, color, mid (C,), lo (C,), hi (C,))``.
    """
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, c, mid, lo, hi) in enumerate(series):
        err = np.stack([mid - lo, hi - mid])
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            mid,
            width,
            yerr=err,
            capsize=2,
            color=c,
            label=label,
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, list(groups))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return ax


def plot_gate_weights(ax, examples, title: str):
    """Grouped bars of each task's mean gate weight per expert, for a few single runs.

    Args:
      examples: ``{label: gate_mean (K, E)}``.
    """
    titles = list(examples)
    k_max = max((v.shape[0] for v in examples.values()), default=0)
    n_exp = max((v.shape[-1] for v in examples.values()), default=0)
    n_bars = max(k_max * len(titles), 1)
    width = 0.8 / n_bars
    x = np.arange(n_exp)
    i = 0
    for label in titles:
        g = examples[label]
        for k in range(g.shape[0]):
            ax.bar(
                x + (i - (n_bars - 1) / 2) * width,
                g[k],
                width,
                color=f"C{i % 10}",
                label=f"{label}, task {k + 1}",
            )
            i += 1
    ax.set_xticks(x, [f"e{e + 1}" for e in x])
    ax.set_xlabel("expert")
    ax.set_ylabel("mean gate weight")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_intervals(ax, rows, xlabel: str, reference: float | None = None):
    """Horizontal point estimates with intervals, one row each (rliable's interval plot).

    Args:
      rows: list of ``(label, color, point, lo, hi)``, drawn top to bottom.
      reference: a vertical reference line (e.g. 0.5 for P(A better than B)).
    """
    y = np.arange(len(rows))[::-1]
    for yi, (_, c, point, lo, hi) in zip(y, rows, strict=True):
        ax.plot([lo, hi], [yi, yi], color=c, lw=6, alpha=0.5, solid_capstyle="butt")
        ax.plot([point], [yi], "|", color="k", ms=12)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="0.4", ls="--", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_matrix(
    ax,
    labels,
    values,
    marks=None,
    title: str | None = None,
    cmap: str = "RdBu",
    annotate: bool = True,
):
    """A square matrix of values in [0, 1] (e.g. P(row better than column)), each cell
    written out (unless not ``annotate``: large matrices), on a colour scale from 0 to 1.

    Args:
      labels: (n,) names of the rows and columns.
      values: (n, n) the values; NaN cells (the diagonal) stay blank.
      marks: (n, n) bools; a marked cell gets a ``*`` (e.g. a 95% CI that excludes 0.5).
    Returns the ``AxesImage`` for a colour bar.
    """
    values = np.asarray(values, dtype=float)
    n = len(labels)
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap=cmap)
    for i in range(n if annotate else 0):
        for j in range(n):
            if np.isfinite(values[i, j]):
                star = "*" if marks is not None and marks[i][j] else ""
                dark = abs(values[i, j] - 0.5) > 0.3
                ax.text(j, i, f"{values[i, j]:.2f}{star}", ha="center", va="center",
                        fontsize=6, color="w" if dark else "k")  # fmt: skip
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return image


def plot_heatmap(ax, steps, row_labels, values, shown, vlim: float, title: str, marks=None):
    """Rows of values against training steps on a diverging colour scale from ``-vlim`` to
    ``vlim`` (beyond it, the end colours): grey where not ``shown`` (e.g. a CI across 0),
    white where the value is NaN (not stored).

    Args:
      ax: the axes to draw on.
      steps: (n_evals,) training steps, evenly spaced.
      row_labels: (R,) names of the rows, drawn top to bottom.
      values: (R, n_evals) the values.
      shown: (R, n_evals) bools.
      vlim: the end of the colour scale.
      title: the panel's title.
      marks: (R, 3) a training step per row to mark with a black triangle and the ends of
        a bar drawn through it (e.g. a median and its quartiles); NaN: none.
    Returns the ``QuadMesh`` for a colour bar.
    """
    from matplotlib.colors import ListedColormap

    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    half = (steps[1] - steps[0]) / 2 if steps.size > 1 else 0.5
    edges = np.concatenate([steps - half, steps[-1:] + half])
    rows = np.arange(len(row_labels) + 1) - 0.5
    stored = np.isfinite(values)
    hidden = np.ma.masked_where(~stored | np.asarray(shown), np.zeros(values.shape))
    ax.pcolormesh(edges, rows, hidden, cmap=ListedColormap(["0.82"]), vmin=0, vmax=1)
    masked = np.ma.masked_where(~np.asarray(shown) | ~stored, values)
    mesh = ax.pcolormesh(edges, rows, masked, cmap="RdBu_r", vmin=-vlim, vmax=vlim)
    for i, (mid, lo, hi) in enumerate(marks if marks is not None else []):
        if np.isfinite(mid):
            ax.plot([lo, hi], [i, i], color="k", lw=1)
            ax.plot([mid], [i], "v", color="k", ms=5)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_ylim(len(row_labels) - 0.5, -0.5)
    ax.set_xlabel("training steps")
    ax.xaxis.set_major_formatter(_steps_formatter())
    ax.set_title(title, fontsize=10)
    return mesh
