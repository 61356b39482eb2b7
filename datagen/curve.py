"""Figure 2 of KDD18: label Pearson correlation against weight cosine similarity."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .calibrate import FIG2_COSINES, FIG2_PEARSON
from .core import TaskSpec, sample, task_weights, validate_correlation

__all__ = ["corr_curve", "write_curve_csv", "read_curve_csv", "plot_corr_curve"]


def _pearson(y):
    """Pearson correlation of the two columns of ``y`` (n, 2)."""
    yc = y - y.mean(0)
    return (yc[:, 0] * yc[:, 1]).sum() / jnp.sqrt((yc[:, 0] ** 2).sum() * (yc[:, 1] ** 2).sum())


@functools.partial(jax.jit, static_argnames=("spec", "n"))
def _trial_pearsons(keys, p, spec: TaskSpec, n: int):
    """Pearson of y1, y2 for each key: keys (trials,), p scalar -> (trials,)."""

    def one(key):
        kw, kd = jax.random.split(key)
        w = task_weights(kw, spec, p)
        _, y = sample(kd, spec, n, w)
        return _pearson(y)

    return jax.lax.map(one, keys, batch_size=25)


def corr_curve(
    spec: TaskSpec,
    cosines=FIG2_COSINES,
    trials: int = 100,
    n: int = 10_000,
    seed: int = 0,
) -> dict:
    """Monte-Carlo label correlation over ``trials`` independent draws at each cosine.

    Every trial redraws u1, u2, x and the noise from ``fold_in(key(seed), cosine index)``.

    Returns:
      dict with ``cosine`` (C,), ``pearson_mean`` (C,), ``pearson_std`` (C,) as lists.
    """
    if trials < 2:
        raise ValueError(f"trials must be >= 2, got {trials}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    for p in cosines:
        validate_correlation(p, d=spec.d)
    root = jax.random.key(seed)
    means, stds = [], []
    for i, p in enumerate(cosines):
        keys = jax.random.split(jax.random.fold_in(root, i), trials)
        r = np.asarray(_trial_pearsons(keys, jnp.float32(p), spec, n), np.float64)
        means.append(float(r.mean()))
        stds.append(float(r.std(ddof=1)))
    return {
        "preset": spec.name,
        "cosine": [float(p) for p in cosines],
        "pearson_mean": means,
        "pearson_std": stds,
    }


def write_curve_csv(curve: dict, path) -> None:
    """Write a curve (with the paper's value where the cosine is one of Figure 2's)."""
    paper = dict(zip(FIG2_COSINES, FIG2_PEARSON, strict=True))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cosine", "pearson_mean", "pearson_std", "paper"])
        for p, m, s in zip(
            curve["cosine"], curve["pearson_mean"], curve["pearson_std"], strict=True
        ):
            w.writerow([f"{p:.6g}", f"{m:.6f}", f"{s:.6f}", paper.get(p, "")])


def read_curve_csv(path) -> dict:
    """Read back :func:`write_curve_csv`'s file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(
            f"no stored curve at {path}; run `python -m datagen corr-curve --figures DIR`"
        )
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {
            "cosine": [float(r["cosine"]) for r in rows],
            "pearson_mean": [float(r["pearson_mean"]) for r in rows],
            "pearson_std": [float(r["pearson_std"]) for r in rows],
        }
    except (KeyError, ValueError, csv.Error) as e:
        raise ValueError(f"corrupt curve file {path}: {e}") from None


def plot_corr_curve(ax, curve: dict, title: str | None = None):
    """Draw the mean with 2-std error bars, and the paper's values as markers. Returns ax."""
    ax.errorbar(
        curve["cosine"],
        curve["pearson_mean"],
        yerr=2 * np.asarray(curve["pearson_std"]),
        fmt="-o",
        ms=4,
        capsize=3,
        label="this generator (mean ± 2 std)",
    )
    ax.plot(FIG2_COSINES, FIG2_PEARSON, "x", color="C3", ms=9, mew=2, label="KDD18 Figure 2")
    ax.set_xlabel("cosine similarity of task weights, cos(w1, w2)")
    ax.set_ylabel("Pearson correlation of labels")
    ax.set_title(title or "Label correlation against task-weight cosine")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
