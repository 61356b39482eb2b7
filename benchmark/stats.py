"""Statistics over per-run results (pure numpy/scipy; no JAX).

Every function here takes the final losses of independent training runs (one value per run;
lower is better). Non-finite entries (NaN, +inf, -inf) are *diverged* runs: they are excluded
from every statistic and confidence interval, and :func:`summarize` reports how many there were.
This is the project's one rule for diverged runs; the runner marks a diverged run NaN for
every task when it loads results, and paired statistics drop a run index that is non-finite
in any of the paired arrays.

Aggregate point estimate is the interquartile mean (IQM, the mean of the middle 50% of runs),
with percentile-bootstrap confidence intervals, following Agarwal et al., "Deep Reinforcement
Learning at the Edge of the Statistical Precipice" (NeurIPS 2021). All bootstraps are
reproducible from an integer ``seed`` via ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.stats

__all__ = [
    "iqm",
    "iqm_ci",
    "mean_ci",
    "prob_better",
    "prob_better_ci",
    "stratified_iqm_ci",
    "summarize",
    "paired_bootstrap",
    "paired_diff",
    "finite_mean",
    "mean_normal_ci",
    "iqr_axis",
    "quantile_axis",
    "iqm_axis",
    "gate_separation",
]

NAN = float("nan")
_TRIM = 0.25  # fraction cut from EACH end for the IQM
# scipy >= 1.15 takes ``rng=`` (``random_state=`` is the legacy spelling); pyproject allows 1.11.
_BOOT_RNG_KW = (
    "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"
)


def _finite(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """Flatten ``x`` to a 1-D float64 array and drop non-finite (diverged) entries."""
    arr = np.asarray(x, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _check_ci(ci: float) -> None:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _percentile_interval(boot: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile CI of bootstrap replicates ``boot`` (shape ``(n_boot,)``)."""
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def iqm(x: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean of final losses.

    Args:
        x: shape ``(n_runs,)`` (any shape is flattened). Non-finite entries are dropped.

    Returns:
        ``scipy.stats.trim_mean(x, 0.25)`` over the finite values, i.e. the mean after cutting
        ``floor(0.25 * n)`` values from each end of the sorted sample (for ``n = 8``: the mean
        of the 3rd..6th smallest values). NaN if no finite values remain.
    """
    v = _finite(x)
    if v.size == 0:
        return NAN
    return float(scipy.stats.trim_mean(v, _TRIM))


def iqm_axis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """IQM along ``axis`` (no NaN handling: for paired bootstraps of finite values)."""
    return scipy.stats.trim_mean(x, _TRIM, axis=axis)


def iqr_axis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile range (q75 - q25, linear interpolation) along ``axis``."""
    q75, q25 = np.quantile(x, [0.75, 0.25], axis=axis)
    return q75 - q25


def quantile_axis(q: float):
    """A statistic ``f(x, axis)``: the ``q``-quantile along ``axis``."""

    def f(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.quantile(x, q, axis=axis)

    return f


def iqm_ci(
    x: np.ndarray | Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the IQM.

    Uses ``scipy.stats.bootstrap(..., method='percentile', rng=np.random.default_rng(seed))``
    (``random_state=`` on scipy < 1.15), so the result is identical for identical
    ``(x, seed, n_boot, ci)``.

    Args:
        x: shape ``(n_runs,)`` final losses; non-finite entries are dropped first.
        seed: seed for ``np.random.default_rng``.
        n_boot: number of bootstrap resamples.
        ci: confidence level in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats; ``(nan, nan)`` if fewer than 2 finite values.
    """
    return _bootstrap_ci(x, iqm_axis, seed, n_boot, ci)


def mean_ci(
    x: np.ndarray | Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean, as :func:`iqm_ci` otherwise.

    Used for paired per-run differences (e.g. the MTL gain), where the mean is the quantity
    of interest.

    Args:
        x: shape ``(n_runs,)``; non-finite entries are dropped first.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` if fewer than 2 finite values.
    """
    return _bootstrap_ci(x, lambda a, axis=-1: np.mean(a, axis=axis), seed, n_boot, ci)


def _bootstrap_ci(x, statistic, seed: int, n_boot: int, ci: float) -> tuple[float, float]:
    """Percentile bootstrap CI of a vectorised ``statistic(a, axis)`` over finite ``x``."""
    _check_ci(ci)
    v = _finite(x)
    if v.size < 2:
        return NAN, NAN
    if np.all(v == v[0]):
        # Every resample is the constant itself; skip the bootstrap (and its degeneracy warning).
        c = float(v[0])
        return c, c
    res = scipy.stats.bootstrap(
        (v,),
        statistic,
        n_resamples=n_boot,
        vectorized=True,
        confidence_level=ci,
        method="percentile",
        **{_BOOT_RNG_KW: np.random.default_rng(seed)},
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def stratified_iqm_ci(
    groups: Sequence[np.ndarray | Sequence[float]],
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """IQM of pooled runs with a stratified percentile-bootstrap CI.

    Each stratum (e.g. one task, or one task correlation) is resampled with replacement
    *independently and at its own size*, the resampled strata are pooled, and the IQM of the
    pool is one bootstrap replicate. The CI is the ``[(1-ci)/2, (1+ci)/2]`` percentile interval
    of the replicates (numpy's default linear interpolation). This is implemented directly with
    ``np.random.default_rng(seed).integers`` because ``scipy.stats.bootstrap`` cannot keep
    stratum sizes fixed (it would resample the pooled sample as a whole).

    Args:
        groups: list of ``n_strata`` arrays, stratum ``k`` of shape ``(n_runs_k,)``; sizes may
            differ. Non-finite entries are dropped per stratum; strata left empty are ignored.
        seed: seed for ``np.random.default_rng``.
        n_boot: number of bootstrap resamples.
        ci: confidence level in (0, 1).

    Returns:
        ``(iqm, (lo, hi))`` as Python floats, where ``iqm`` is the IQM of all finite runs
        pooled. ``(nan, (nan, nan))`` if fewer than 2 finite values in total.
    """
    _check_ci(ci)
    strata = [s for s in (_finite(g) for g in groups) if s.size > 0]
    n_total = sum(s.size for s in strata)
    if n_total < 2:
        return NAN, (NAN, NAN)
    point = iqm(np.concatenate(strata))
    rng = np.random.default_rng(seed)
    # boot_pool: shape (n_boot, n_total); columns are the resampled strata side by side.
    boot_pool = np.concatenate(
        [s[rng.integers(0, s.size, size=(n_boot, s.size))] for s in strata], axis=1
    )
    boot = iqm_axis(boot_pool, axis=1)  # shape (n_boot,)
    return point, _percentile_interval(boot, ci)


def _prob_better_finite(a: np.ndarray, b_sorted: np.ndarray) -> float:
    """P(a_i < b_j) + 0.5 P(a_i == b_j) over all pairs; ``b_sorted`` must be ascending."""
    m = b_sorted.size
    left = np.searchsorted(b_sorted, a, side="left")  # number of b_j < a_i
    right = np.searchsorted(b_sorted, a, side="right")  # number of b_j <= a_i
    wins = (m - right).sum()  # pairs with b_j > a_i
    ties = (right - left).sum()  # pairs with b_j == a_i
    return float((wins + 0.5 * ties) / (a.size * m))


def prob_better(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    """Probability that a run of A ends with a lower (better) loss than a run of B.

    ``P(A < B) = mean over all (i, j) of [a_i < b_j] + 0.5 * [a_i == b_j]``, taken over the
    finite values only. This equals ``U / (n * m)`` where ``U`` is the Mann-Whitney U statistic
    of ``b`` against ``a`` (``scipy.stats.mannwhitneyu(b, a).statistic`` counts pairs with
    ``b_j > a_i`` plus half the ties). It is computed directly by sorting ``b`` and
    ``np.searchsorted`` in O((n + m) log m); ``P(A<B) + P(B<A) = 1`` exactly.

    Args:
        a: shape ``(n,)`` final losses of method A.
        b: shape ``(m,)`` final losses of method B.

    Returns:
        Python float in [0, 1]; NaN if either side has no finite values.
    """
    av, bv = _finite(a), _finite(b)
    if av.size == 0 or bv.size == 0:
        return NAN
    return _prob_better_finite(av, np.sort(bv))


def prob_better_ci(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of :func:`prob_better`.

    Each replicate resamples the finite values of ``a`` and of ``b`` independently, with
    replacement and at their own sizes, from one ``np.random.default_rng(seed)`` stream.

    Args:
        a: shape ``(n,)`` final losses of method A.
        b: shape ``(m,)`` final losses of method B.
        seed: seed for ``np.random.default_rng``.
        n_boot: number of bootstrap resamples.
        ci: confidence level in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats; ``(nan, nan)`` if either side has fewer than 2 finite
        values.
    """
    _check_ci(ci)
    av, bv = _finite(a), _finite(b)
    if av.size < 2 or bv.size < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    a_boot = av[rng.integers(0, av.size, size=(n_boot, av.size))]  # (n_boot, n)
    b_boot = bv[rng.integers(0, bv.size, size=(n_boot, bv.size))]  # (n_boot, m)
    if av.size * bv.size <= ALL_PAIRS_MAX:
        boot = _prob_better_rows(a_boot, b_boot)
    else:
        b_boot.sort(axis=1)
        boot = np.fromiter(
            (_prob_better_finite(a_boot[k], b_boot[k]) for k in range(n_boot)),
            dtype=np.float64,
            count=n_boot,
        )
    return _percentile_interval(boot, ci)


# Below this many pairs per replicate, comparing every pair at once beats a sorted search
# per replicate (20 x 20 runs: 4.5x faster; 200 x 200: 2.7x slower).
ALL_PAIRS_MAX = 2500


def _prob_better_rows(a_boot: np.ndarray, b_boot: np.ndarray) -> np.ndarray:
    """``(n_boot,)`` :func:`prob_better` of each row of ``a_boot`` ``(n_boot, n)`` against the
    same row of ``b_boot`` ``(n_boot, m)``: every pair compared at once, in blocks of rows
    of at most about 4 M comparisons (the same counts, so the same floats, as the sorted
    search of :func:`_prob_better_finite`)."""
    n_boot, n = a_boot.shape
    m = b_boot.shape[1]
    block = max(1, 4_000_000 // (n * m))
    out = np.empty(n_boot, np.float64)
    for s in range(0, n_boot, block):
        a, b = a_boot[s : s + block, :, None], b_boot[s : s + block, None, :]
        wins = (b > a).sum(axis=(1, 2))  # pairs with b_j > a_i
        ties = (b == a).sum(axis=(1, 2))
        out[s : s + block] = (wins + 0.5 * ties) / (n * m)
    return out


def summarize(
    x: np.ndarray | Sequence[float],
    *,
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> dict:
    """Summary statistics of final losses over runs.

    Args:
        x: shape ``(n_runs,)`` final losses, one per run. NaN/inf entries are diverged runs:
            counted in ``n_runs`` and ``n_diverged`` but excluded from all statistics.
        seed, n_boot, ci: passed to :func:`iqm_ci`.

    Returns:
        ``{"n_runs": int, "n_diverged": int, "final_loss": {"mean", "std", "iqm",
        "iqm_ci": [lo, hi], "q10", "q25", "median", "q75", "q90", "min"}}`` with Python floats.
        ``std`` uses ``ddof=1``; quantiles use numpy's default linear interpolation. With no
        finite values every statistic is NaN; with exactly one, ``std`` and ``iqm_ci`` are NaN
        and the location statistics equal that value. Never raises or warns for these cases.
    """
    arr = np.asarray(x, dtype=np.float64).ravel()
    v = arr[np.isfinite(arr)]
    n = int(v.size)
    if n == 0:
        mean = iqm_val = q10 = q25 = med = q75 = q90 = vmin = NAN
    else:
        mean = float(np.mean(v))
        iqm_val = iqm(v)
        q10, q25, med, q75, q90 = (float(q) for q in np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9]))
        vmin = float(np.min(v))
    std = float(np.std(v, ddof=1)) if n >= 2 else NAN
    lo, hi = iqm_ci(v, seed=seed, n_boot=n_boot, ci=ci)
    return {
        "n_runs": int(arr.size),
        "n_diverged": int(arr.size - n),
        "final_loss": {
            "mean": mean,
            "std": std,
            "iqm": iqm_val,
            "iqm_ci": [lo, hi],
            "q10": q10,
            "q25": q25,
            "median": med,
            "q75": q75,
            "q90": q90,
            "min": vmin,
        },
    }


def paired_bootstrap(
    statistic,
    arrays: Sequence[np.ndarray],
    seed: int = 0,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap CI of a statistic of *paired* runs.

    Run ``i`` of every array shares its key (task weights, data, initialisation seed), so
    the bootstrap resamples run indices, the same indices for every array, which keeps the
    pairing and removes the spread the runs share.

    Args:
        statistic: ``statistic(*arrays, axis) -> value`` computed along ``axis`` (the run
            axis), vectorised: it is called once with arrays of shape ``(n,)`` (axis 0) for
            the point and once with ``(n_boot, n)`` (axis 1) for the replicates.
        arrays: each ``(n_runs,)``, paired by index. A run index that is non-finite in any
            array is dropped from all (the diverged-run rule).
        seed, n_boot, ci: as in :func:`iqm_ci`.

    Returns:
        ``(point, lo, hi)`` as Python floats; NaNs if fewer than 2 runs remain.
    """
    _check_ci(ci)
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"paired arrays need equal run counts, got {[a.size for a in arrs]}")
    ok = np.all([np.isfinite(a) for a in arrs], axis=0)
    arrs = [a[ok] for a in arrs]
    n = int(ok.sum())
    if n < 2:
        return NAN, NAN, NAN
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):  # a ratio of a 0 resample: NaN
        point = float(statistic(*arrs, axis=0))
        boot = np.asarray(statistic(*[a[idx] for a in arrs], axis=1), dtype=np.float64)
    if not np.all(np.isfinite(boot)):
        return point, NAN, NAN
    lo, hi = _percentile_interval(boot, ci)
    return point, lo, hi


def mean_ratio(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    """``mean(a) / mean(b) − 1`` along ``axis``: the relative paired difference, as a
    statistic for :func:`paired_bootstrap`."""
    return np.mean(a, axis=axis) / np.mean(b, axis=axis) - 1.0


def paired_diff(a: np.ndarray, b: np.ndarray, statistic=None, seed: int = 0):
    """``(point, lo, hi)`` of ``statistic(a) - statistic(b)`` over paired runs (default: the
    mean), with a paired percentile-bootstrap 95% CI (:func:`paired_bootstrap`).

    Args:
        a, b: ``(n_runs,)`` each, paired by index.
        statistic: ``f(x, axis)``, vectorised as in :func:`paired_bootstrap`.
    """
    f = statistic or (lambda x, axis: np.mean(x, axis=axis))
    return paired_bootstrap(lambda x, y, axis: f(x, axis) - f(y, axis), [a, b], seed=seed)


def finite_mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean of the finite entries of ``x`` along ``axis``; NaN, without a warning, where
    none is finite (a model without shared parameters has no gradient cosine)."""
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def mean_normal_ci(x: np.ndarray, axis: int = 0, z: float = 1.96):
    """Mean over finite runs along ``axis`` and its normal-approximation interval.

    Args:
        x: e.g. ``(runs, n_evals)`` loss curves; non-finite entries are dropped.
    Returns:
        ``(mean, lo, hi)`` arrays of ``x``'s shape without ``axis``: mean ± z·s/√n; all
        three NaN where no entry is finite (:func:`finite_mean`), and ``lo = hi = NaN``
        where only one entry is.
    """
    x = np.where(np.isfinite(x), x, np.nan)
    n = np.sum(np.isfinite(x), axis=axis)
    mean = finite_mean(x, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        half = z * np.nanstd(x, axis=axis, ddof=1) / np.sqrt(np.maximum(n, 1))
    return mean, mean - half, mean + half


def gate_separation(gate_mean: np.ndarray) -> np.ndarray:
    """How differently the tasks use the experts: mean over task pairs of the total variation
    between their mean gate weights, ``½ Σ_e |ḡ^a_e − ḡ^b_e|``.

    Args:
        gate_mean: ``(runs, K, E)`` each task's mean gate weight per expert.
    Returns:
        ``(runs,)`` in [0, 1]: 0 = every task weighs the experts alike.
    """
    g = np.asarray(gate_mean, dtype=np.float64)
    k = g.shape[1]
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    tv = [0.5 * np.abs(g[:, a] - g[:, b]).sum(-1) for a, b in pairs]
    return np.mean(tv, axis=0)
