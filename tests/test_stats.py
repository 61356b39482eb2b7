"""Tests for benchmark.stats against hand-computed fixtures.

Quantiles follow numpy's default ('linear') rule: for sorted x_0..x_{n-1} and level p, the
position is h = (n - 1) * p and q = x_floor(h) + (h - floor(h)) * (x_ceil(h) - x_floor(h)).
The IQM is scipy.stats.trim_mean(x, 0.25): cut floor(0.25 * n) values from each end, average.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from benchmark.stats import (
    _BOOT_RNG_KW,
    iqm,
    iqm_ci,
    mean_ci,
    mean_ratio,
    paired_bootstrap,
    paired_diff,
    prob_better,
    prob_better_ci,
    stratified_iqm_ci,
    summarize,
)

ONE_TO_EIGHT = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
SKEWED = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0]
FINAL_LOSS_KEYS = {"mean", "std", "iqm", "iqm_ci", "q10", "q25", "median", "q75", "q90", "min"}
SMALL_BOOT = 500  # keep the suite light


# --------------------------------------------------------------------------------------------
# iqm
# --------------------------------------------------------------------------------------------


def test_iqm_one_to_eight():
    # n = 8, cut floor(0.25 * 8) = 2 from each end -> [3, 4, 5, 6] -> 18 / 4 = 4.5
    assert iqm(ONE_TO_EIGHT) == 4.5


def test_iqm_is_robust_to_outlier():
    # Same middle [3, 4, 5, 6] -> 4.5 however far the largest value moves, or whether the
    # smallest does; a value that moves into the middle half changes it.
    assert iqm(SKEWED) == 4.5
    assert iqm(SKEWED[:-1] + [1e6]) == 4.5
    assert iqm([-1e6] + SKEWED[1:]) == 4.5
    # [1, 2, 3, 3.5, 5, 6, 7, 100] -> middle [3, 3.5, 5, 6] -> 17.5 / 4
    assert iqm(SKEWED[:3] + [3.5] + SKEWED[4:]) == 4.375


def test_iqm_floor_of_cut():
    # n = 10, cut floor(2.5) = 2 from each end -> [3..8] -> 33 / 6 = 5.5
    assert iqm(np.arange(1.0, 11.0)) == 5.5
    # n = 3, cut floor(0.75) = 0 -> plain mean (1 + 2 + 4) / 3 = 7 / 3
    assert iqm([1.0, 2.0, 4.0]) == pytest.approx(7.0 / 3.0)


def test_iqm_drops_nonfinite_and_empty_is_nan():
    # Finite [3, 1, 2, 4] -> sorted [1, 2, 3, 4], cut 1 each end -> [2, 3] -> 2.5
    assert iqm([3.0, np.nan, 1.0, np.inf, 2.0, 4.0, -np.inf]) == 2.5
    assert math.isnan(iqm([np.nan, np.inf]))
    assert math.isnan(iqm([]))


# --------------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------------


def test_summarize_schema_exact():
    s = summarize(ONE_TO_EIGHT, n_boot=SMALL_BOOT)
    assert set(s) == {"n_runs", "n_diverged", "final_loss"}
    assert set(s["final_loss"]) == FINAL_LOSS_KEYS
    assert type(s["n_runs"]) is int and type(s["n_diverged"]) is int
    fl = s["final_loss"]
    assert isinstance(fl["iqm_ci"], list) and len(fl["iqm_ci"]) == 2
    for k in FINAL_LOSS_KEYS - {"iqm_ci"}:
        assert type(fl[k]) is float, k
    assert all(type(v) is float for v in fl["iqm_ci"])


def test_summarize_one_to_eight():
    s = summarize(ONE_TO_EIGHT, n_boot=SMALL_BOOT)
    fl = s["final_loss"]
    assert s["n_runs"] == 8 and s["n_diverged"] == 0
    assert fl["mean"] == 4.5  # 36 / 8
    # squared deviations from 4.5: 2 * (12.25 + 6.25 + 2.25 + 0.25) = 42; 42 / 7 = 6
    assert fl["std"] == pytest.approx(math.sqrt(6.0))  # 2.449489742783178
    assert fl["iqm"] == 4.5
    # h = 7p: q10 h=0.7 -> 1.7; q25 h=1.75 -> 2.75; median h=3.5 -> 4.5;
    #         q75 h=5.25 -> 6.25; q90 h=6.3 -> 7.3
    assert fl["q10"] == pytest.approx(1.7)
    assert fl["q25"] == pytest.approx(2.75)
    assert fl["median"] == 4.5
    assert fl["q75"] == pytest.approx(6.25)
    assert fl["q90"] == pytest.approx(7.3)
    assert fl["min"] == 1.0
    lo, hi = fl["iqm_ci"]
    assert 1.0 <= lo <= 4.5 <= hi <= 8.0


def test_summarize_skewed():
    fl = summarize(SKEWED, n_boot=SMALL_BOOT)["final_loss"]
    assert fl["mean"] == 16.0  # (28 + 100) / 8
    assert fl["iqm"] == 4.5  # mean of [3, 4, 5, 6]
    assert fl["median"] == 4.5
    assert fl["q75"] == pytest.approx(6.25)  # h = 5.25 -> 6 + 0.25 * (7 - 6)
    assert fl["q90"] == pytest.approx(34.9)  # h = 6.3 -> 7 + 0.3 * (100 - 7) = 7 + 27.9
    assert fl["min"] == 1.0


def test_summarize_nonfinite_are_diverged():
    s = summarize([1.0, 2.0, np.nan, 4.0, np.inf], n_boot=SMALL_BOOT)
    fl = s["final_loss"]
    assert s["n_runs"] == 5 and s["n_diverged"] == 2
    # statistics over [1, 2, 4]
    assert fl["mean"] == pytest.approx(7.0 / 3.0)
    # deviations -4/3, -1/3, 5/3 -> squares sum 42/9; / 2 -> 7/3
    assert fl["std"] == pytest.approx(math.sqrt(7.0 / 3.0))  # 1.5275252316519468
    assert fl["iqm"] == pytest.approx(7.0 / 3.0)  # n = 3 cuts 0 -> plain mean
    # h = 2p: q10 h=0.2 -> 1.2; q25 h=0.5 -> 1.5; median 2; q75 h=1.5 -> 3; q90 h=1.8 -> 3.6
    assert fl["q10"] == pytest.approx(1.2)
    assert fl["q25"] == pytest.approx(1.5)
    assert fl["median"] == 2.0
    assert fl["q75"] == pytest.approx(3.0)
    assert fl["q90"] == pytest.approx(3.6)
    assert fl["min"] == 1.0
    assert all(math.isfinite(v) for v in fl["iqm_ci"])


def test_summarize_negative_inf_counts_as_diverged():
    s = summarize([-np.inf, 1.0, 3.0], n_boot=SMALL_BOOT)
    assert s["n_runs"] == 3 and s["n_diverged"] == 1
    assert s["final_loss"]["min"] == 1.0


def test_summarize_all_diverged_is_nan_safe():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([np.nan, np.inf, np.nan])
    assert s["n_runs"] == 3 and s["n_diverged"] == 3
    fl = s["final_loss"]
    assert set(fl) == FINAL_LOSS_KEYS
    for k in FINAL_LOSS_KEYS - {"iqm_ci"}:
        assert type(fl[k]) is float and math.isnan(fl[k]), k
    assert len(fl["iqm_ci"]) == 2 and all(math.isnan(v) for v in fl["iqm_ci"])


def test_summarize_empty_is_nan_safe():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([])
    assert s["n_runs"] == 0 and s["n_diverged"] == 0
    assert math.isnan(s["final_loss"]["mean"])


def test_summarize_single_finite_value():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([np.nan, 3.0])
    fl = s["final_loss"]
    assert s["n_runs"] == 2 and s["n_diverged"] == 1
    assert math.isnan(fl["std"])
    assert all(math.isnan(v) for v in fl["iqm_ci"])
    for k in ("mean", "iqm", "q10", "q25", "median", "q75", "q90", "min"):
        assert fl[k] == 3.0, k


def test_summarize_is_reproducible_and_seed_matters():
    x = np.random.default_rng(123).normal(size=40)
    a = summarize(x, seed=7, n_boot=SMALL_BOOT)
    b = summarize(x, seed=7, n_boot=SMALL_BOOT)
    c = summarize(x, seed=8, n_boot=SMALL_BOOT)
    assert a == b
    assert a["final_loss"]["iqm_ci"] != c["final_loss"]["iqm_ci"]


# --------------------------------------------------------------------------------------------
# iqm_ci
# --------------------------------------------------------------------------------------------


def test_iqm_ci_same_seed_identical():
    x = np.random.default_rng(0).normal(size=30)
    assert iqm_ci(x, seed=3, n_boot=SMALL_BOOT) == iqm_ci(x, seed=3, n_boot=SMALL_BOOT)


def test_iqm_ci_contains_iqm():
    for s in range(3):
        x = np.random.default_rng(s).exponential(size=25)
        lo, hi = iqm_ci(x, seed=s, n_boot=SMALL_BOOT)
        assert lo < iqm(x) < hi


def test_iqm_ci_constant_data_is_degenerate():
    assert iqm_ci(np.full(10, 0.25), seed=0, n_boot=SMALL_BOOT) == (0.25, 0.25)


def _scipy_percentile_ci(x, statistic, seed: int) -> tuple[float, float]:
    """scipy's 90% percentile bootstrap of ``statistic``, SMALL_BOOT resamples, rng ``seed``."""
    res = scipy.stats.bootstrap(
        (x,),
        statistic,
        n_resamples=SMALL_BOOT,
        vectorized=True,
        confidence_level=0.9,
        method="percentile",
        **{_BOOT_RNG_KW: np.random.default_rng(seed)},
    )
    return res.confidence_interval.low, res.confidence_interval.high


def test_iqm_ci_matches_scipy_bootstrap():
    x = np.random.default_rng(1).normal(size=20)
    trimmed = _scipy_percentile_ci(
        x, lambda v, axis: scipy.stats.trim_mean(v, 0.25, axis=axis), seed=5
    )
    assert iqm_ci(x, seed=5, n_boot=SMALL_BOOT, ci=0.9) == trimmed


# mean_ci (the MTL gain's CI): the same bootstrap with the mean as the statistic


def test_mean_ci_matches_scipy_bootstrap():
    x = np.random.default_rng(6).normal(size=20)
    expected = _scipy_percentile_ci(x, lambda v, axis: np.mean(v, axis=axis), seed=7)
    assert mean_ci(x, seed=7, n_boot=SMALL_BOOT, ci=0.9) == expected


def test_mean_ci_is_the_normal_interval_for_many_runs():
    # n = 4000 draws of N(0.3, 1): the 95% CI of the mean is 0.3 +- 1.96 / sqrt(4000) = +-0.031.
    x = np.random.default_rng(8).normal(0.3, 1.0, size=4000)
    lo, hi = mean_ci(x, seed=0, n_boot=SMALL_BOOT)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * half, rel=0.15)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.2 * half)


def test_paired_diff_and_the_ratio_statistic():
    # Run i shares s[i] (spread 10) across a and b; the difference's own spread is 0.1, so
    # the paired CI is about +-1.96 * 0.1 / sqrt(200) = +-0.014 around the true 0.5.
    rng = np.random.default_rng(3)
    s = rng.normal(0.0, 10.0, size=200)
    a, b = s + 0.5 + rng.normal(0, 0.1, 200), s + rng.normal(0, 0.1, 200)
    a[7], b[11] = np.nan, np.inf  # a pair with a non-finite member is dropped from both
    point, lo, hi = paired_diff(a, b)
    ok = np.isfinite(a) & np.isfinite(b)
    assert point == pytest.approx(np.mean(a[ok] - b[ok]))
    assert lo < point < hi and hi - lo < 0.05 and lo < 0.5 < hi
    assert mean_ratio(np.array([[3.0, 1.0]]), np.array([[1.0, 1.0]]), axis=1) == [1.0]
    point, lo, hi = paired_bootstrap(mean_ratio, [a + 20, b + 20], n_boot=SMALL_BOOT)
    assert point == pytest.approx(np.mean(a[ok] + 20) / np.mean(b[ok] + 20) - 1)
    assert lo < point < hi


def test_mean_ci_edge_cases():
    assert mean_ci([2.0, 2.0, 2.0, np.nan]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in mean_ci([1.0, np.inf], seed=0))
    x = np.random.default_rng(9).normal(size=30)
    with_nan = np.concatenate([x, [np.nan, -np.inf]])
    assert mean_ci(with_nan, seed=1, n_boot=SMALL_BOOT) == mean_ci(x, seed=1, n_boot=SMALL_BOOT)


def test_iqm_ci_ignores_nonfinite():
    x = np.random.default_rng(2).normal(size=20)
    with_nan = np.concatenate([x, [np.nan, np.inf]])
    assert iqm_ci(with_nan, seed=0, n_boot=SMALL_BOOT) == iqm_ci(x, seed=0, n_boot=SMALL_BOOT)


def test_iqm_ci_too_few_is_nan():
    assert all(math.isnan(v) for v in iqm_ci([1.0], seed=0))
    assert all(math.isnan(v) for v in iqm_ci([np.nan, 2.0], seed=0))


def test_iqm_ci_wider_level_is_wider():
    x = np.random.default_rng(4).normal(size=40)
    lo90, hi90 = iqm_ci(x, seed=0, n_boot=SMALL_BOOT, ci=0.9)
    lo99, hi99 = iqm_ci(x, seed=0, n_boot=SMALL_BOOT, ci=0.99)
    assert lo99 <= lo90 and hi90 <= hi99


def test_iqm_ci_width_shrinks_like_inverse_sqrt_n():
    # 16x the runs -> width / 4 (up to Monte-Carlo noise)
    rng = np.random.default_rng(11)
    small, large = rng.normal(size=200), rng.normal(size=3200)
    w_small = np.diff(iqm_ci(small, seed=0, n_boot=SMALL_BOOT))[0]
    w_large = np.diff(iqm_ci(large, seed=0, n_boot=SMALL_BOOT))[0]
    assert 3.0 < w_small / w_large < 5.3


def test_iqm_ci_bad_level():
    with pytest.raises(ValueError):
        iqm_ci([1.0, 2.0], ci=1.5)


# --------------------------------------------------------------------------------------------
# stratified_iqm_ci
# --------------------------------------------------------------------------------------------


def test_stratified_constant_strata_equal_sizes_degenerate():
    # Every resample of A is [0]*4 and of B is [1]*4 -> pooled [0,0,0,0,1,1,1,1];
    # cut 2 each end -> [0, 0, 1, 1] -> 0.5 in every replicate.
    point, (lo, hi) = stratified_iqm_ci([np.zeros(4), np.ones(4)], seed=0, n_boot=SMALL_BOOT)
    assert point == 0.5 and lo == 0.5 and hi == 0.5


def test_stratified_keeps_unequal_stratum_sizes():
    # A: 3 runs of 0.0, B: 5 runs of 1.0 -> pooled sorted [0,0,0,1,1,1,1,1];
    # cut 2 each end -> [0, 1, 1, 1] -> 0.75. Stratum sizes are fixed, so every replicate is
    # 0.75 and the CI is degenerate.
    groups = [np.zeros(3), np.ones(5)]
    point, (lo, hi) = stratified_iqm_ci(groups, seed=0, n_boot=SMALL_BOOT)
    assert point == 0.75 and (lo, hi) == (0.75, 0.75)
    # The unstratified bootstrap of the same pool lets the 0/1 mix vary, so its CI is not.
    lo_u, hi_u = iqm_ci(np.concatenate(groups), seed=0, n_boot=SMALL_BOOT)
    assert lo_u < 0.75 or hi_u > 0.75


def test_stratified_point_is_pooled_iqm_and_ci_contains_it():
    rng = np.random.default_rng(9)
    groups = [rng.normal(0.0, 1.0, size=12), rng.normal(3.0, 1.0, size=20), rng.normal(size=7)]
    point, (lo, hi) = stratified_iqm_ci(groups, seed=1, n_boot=SMALL_BOOT)
    assert point == iqm(np.concatenate(groups))
    assert lo < point < hi


def test_stratified_reproducible_and_nonfinite_dropped():
    rng = np.random.default_rng(10)
    groups = [rng.normal(size=10), rng.normal(size=6)]
    dirty = [np.append(groups[0], np.nan), np.append(groups[1], [np.inf, np.nan])]
    ref = stratified_iqm_ci(groups, seed=2, n_boot=SMALL_BOOT)
    assert stratified_iqm_ci(groups, seed=2, n_boot=SMALL_BOOT) == ref
    assert stratified_iqm_ci(dirty, seed=2, n_boot=SMALL_BOOT) == ref


def test_stratified_too_few_is_nan():
    point, (lo, hi) = stratified_iqm_ci([[np.nan], [1.0]], seed=0)
    assert math.isnan(point) and math.isnan(lo) and math.isnan(hi)


# --------------------------------------------------------------------------------------------
# prob_better
# --------------------------------------------------------------------------------------------


def test_prob_better_hand_fixtures():
    # all 4 pairs a < b
    assert prob_better([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert prob_better([3.0, 4.0], [1.0, 2.0]) == 0.0
    # pairs (1,2) win, (1,4) win, (3,2) loss, (3,4) win -> 3 / 4
    assert prob_better([1.0, 3.0], [2.0, 4.0]) == 0.75
    # tie counts half
    assert prob_better([1.0], [1.0]) == 0.5
    # a=[1,2], b=[2,3]: (1,2) win, (1,3) win, (2,2) tie, (2,3) win -> 3.5 / 4
    assert prob_better([1.0, 2.0], [2.0, 3.0]) == 0.875


def test_prob_better_symmetry_and_mannwhitney():
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(size=17), 1)  # rounding creates ties
    b = np.round(rng.normal(0.3, 1.0, size=23), 1)
    p_ab, p_ba = prob_better(a, b), prob_better(b, a)
    assert p_ab + p_ba == pytest.approx(1.0, abs=1e-12)
    u = scipy.stats.mannwhitneyu(b, a).statistic  # pairs with b_j > a_i, ties halved
    assert p_ab == pytest.approx(u / (a.size * b.size), abs=1e-12)
    # brute force over all pairs
    brute = np.mean((a[:, None] < b[None, :]) + 0.5 * (a[:, None] == b[None, :]))
    assert p_ab == pytest.approx(brute, abs=1e-12)


def test_prob_better_ignores_nonfinite():
    assert prob_better([1.0, 3.0, np.nan], [2.0, np.inf, 4.0]) == 0.75
    assert math.isnan(prob_better([np.nan], [1.0]))


def test_prob_better_ci():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=30), rng.normal(0.5, 1.0, size=25)
    ci1 = prob_better_ci(a, b, seed=4, n_boot=SMALL_BOOT)
    assert ci1 == prob_better_ci(a, b, seed=4, n_boot=SMALL_BOOT)
    lo, hi = ci1
    assert 0.0 <= lo < prob_better(a, b) < hi <= 1.0
    # fully separated samples: every resample is still separated -> [1, 1]
    assert prob_better_ci([1.0, 2.0, 3.0], [4.0, 5.0], seed=0, n_boot=SMALL_BOOT) == (1.0, 1.0)
    assert all(math.isnan(v) for v in prob_better_ci([1.0], [2.0, 3.0], seed=0))


@pytest.mark.parametrize("n, m", [(20, 20), (7, 3), (60, 50)])
def test_prob_better_ci_paths_agree(monkeypatch, n, m):
    """Comparing every pair at once and the sorted search give the same interval, ties
    included, on either side of the size at which the function switches."""
    import benchmark.stats as st

    rng = np.random.default_rng(n)
    a, b = np.round(rng.normal(size=n), 1), np.round(rng.normal(0.3, 1.0, size=m), 1)
    a[0] = np.nan
    both = []
    for limit in (0, 10**9):  # the sorted search only, then all pairs only
        monkeypatch.setattr(st, "ALL_PAIRS_MAX", limit)
        both.append(prob_better_ci(a, b, seed=2, n_boot=SMALL_BOOT))
    assert both[0] == both[1]
    # one replicate by hand: the rows path counts the same pairs as prob_better
    rows = st._prob_better_rows(a[None, 1:], b[None, :])
    assert rows[0] == prob_better(a, b)


def test_mean_normal_ci_all_missing_is_nan_and_silent():
    """A column with no finite entry (a model without shared parameters has no gradient
    cosine) gives NaN without a warning; the others mean ± 1.96 s/√n."""
    from benchmark.stats import finite_mean, mean_normal_ci

    x = np.array([[1.0, np.nan], [3.0, np.nan], [np.inf, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, lo, hi = mean_normal_ci(x)
        np.testing.assert_array_equal(finite_mean(x.T, axis=1), mean)
    half = 1.96 * np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    assert mean[0] == 2.0 and np.isclose(lo[0], 2.0 - half) and np.isclose(hi[0], 2.0 + half)
    assert np.isnan(mean[1]) and np.isnan(lo[1]) and np.isnan(hi[1])


def test_every_architecture_has_its_own_colour():
    """No two registered architectures share a colour in the figures."""
    from benchmark import plots
    from benchmark.models import names

    colours = [plots.color(n) for n in names()]
    assert len(set(colours)) == len(colours)
