"""Re-derive the ``kdd18`` preset's alpha and beta from the paper's Figure 2.

Method (deterministic, about two seconds):

1. The label Pearson correlation has a closed form in (c, alpha, beta, noise)
   (:func:`datagen.core.label_correlation`), so no sampling is needed to fit it.
2. For each search seed s in ``range(n_seeds)``, draw a fixed shape
   ``a ~ N(0, 1)^m`` and phases ``beta ~ U(0, 2 pi)^m`` from ``numpy.random.default_rng(s)``.
3. Fit one frequency scale ``k`` in ``[1, 12]`` (bounded Brent) minimising the largest
   absolute gap to the nine Figure 2 values; ``alpha = k * a``.
4. Keep the seed with the smallest largest gap, and round alpha and beta to 4 decimals.

A high scale (|alpha| about 5) is what makes the curve as convex as the paper's: the
sinusoids decorrelate as soon as the weights differ, so labels stay weakly correlated
until the cosine nears 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar

from .core import TaskSpec, label_correlation

# Figure 2 of KDD18, read off the paper (shared spec, section 2).
FIG2_COSINES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
FIG2_PEARSON = (0.055, 0.076, 0.10, 0.137, 0.195, 0.31, 0.45, 0.65, 1.00)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate`.

    Attributes:
      seed: the search seed whose draw fitted best.
      scale: the fitted frequency scale k.
      alpha: calibrated frequencies, rounded to 4 decimals, length m.
      beta: calibrated phases, rounded to 4 decimals, length m.
      fitted: closed-form label correlation at each Figure 2 cosine.
      max_abs_error: largest gap to the Figure 2 values.
    """

    seed: int
    scale: float
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    fitted: tuple[float, ...]
    max_abs_error: float


def curve_errors(spec: TaskSpec) -> np.ndarray:
    """Closed-form label correlation minus the Figure 2 value, at each Figure 2 cosine."""
    return np.array([label_correlation(spec, p) for p in FIG2_COSINES]) - FIG2_PEARSON


def calibrate(
    n_seeds: int = 100, m: int = 10, c: float = 1.0, noise_std: float = 0.1, d: int = 100
) -> Calibration:
    """Search ``n_seeds`` fixed draws, fit a frequency scale to each, keep the best."""
    best = None
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        shape = rng.normal(size=m)
        beta = rng.uniform(0.0, 2 * np.pi, size=m)

        def gap(k, shape=shape, beta=beta):
            spec = TaskSpec(d=d, c=c, alpha=k * shape, beta=beta, noise_std=noise_std)
            return float(np.abs(curve_errors(spec)).max())

        fit = minimize_scalar(gap, bounds=(1.0, 12.0), method="bounded")
        if best is None or fit.fun < best[0]:
            best = (fit.fun, seed, float(fit.x), shape, beta)
    _, seed, k, shape, beta = best
    alpha = tuple(float(v) for v in np.round(k * shape, 4))
    beta = tuple(float(v) for v in np.round(beta, 4))
    spec = TaskSpec(d=d, c=c, alpha=alpha, beta=beta, noise_std=noise_std)
    errs = curve_errors(spec)
    return Calibration(
        seed=seed,
        scale=k,
        alpha=alpha,
        beta=beta,
        fitted=tuple(float(v) for v in errs + FIG2_PEARSON),
        max_abs_error=float(np.abs(errs).max()),
    )
