"""Tests of the ``datagen`` package: the KDD18 task generator, its presets, calibration,
Figure 2 curve and command line.

Everything is deterministic (fixed keys), and sample sizes are kept small: the whole file
runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datagen import cli
from datagen.calibrate import FIG2_COSINES, FIG2_PEARSON, calibrate, curve_errors
from datagen.core import (
    TaskSpec,
    cosine_matrix,
    draw_indices,
    label_correlation,
    label_moments,
    labels,
    orthonormal_basis,
    points,
    psd_cholesky,
    sample,
    sample_at,
    task_weights,
    validate_correlation,
)
from datagen.curve import corr_curve, read_curve_csv, write_curve_csv
from datagen.presets import KDD18_ALPHA, KDD18_BETA, PRESETS, get_preset, preset_names

REPO = Path(__file__).resolve().parents[1]
# Monte-Carlo size of the Figure 2 curve tests. The CLI tests use the same trials and n so
# that corr_curve's jitted kernel (static in spec and n) compiles once for the whole file.
MC_TRIALS, MC_N = 8, 2000
KDD18 = PRESETS["kdd18"]
PLE20 = PRESETS["ple20"]
ATOL = 1e-6


# ----------------------------------------------------------------------------- helpers


def _cosines(w):
    """Cosine matrix and column norms of ``w`` (d, K), computed in float64."""
    w = np.asarray(w, np.float64)
    norms = np.linalg.norm(w, axis=0)
    return (w.T @ w) / np.outer(norms, norms), norms


def _gram_correlation(k: int, rank: int, seed: int) -> np.ndarray:
    """A valid (K, K) correlation matrix: the normalised Gram matrix of ``rank``-dim vectors."""
    g = np.random.default_rng(seed).normal(size=(k, rank))
    gram = g @ g.T
    s = np.sqrt(np.diag(gram))
    return gram / np.outer(s, s)


RANDOM_R5 = _gram_correlation(5, 8, seed=0)  # full rank
SINGULAR_R5 = _gram_correlation(5, 3, seed=1)  # rank 3: two zero eigenvalues


# ----------------------------------------------------------------------------- geometry


def test_singular_fixture_is_really_singular():
    eig = np.linalg.eigvalsh(SINGULAR_R5)
    assert np.sum(np.abs(eig) < 1e-10) == 2
    assert np.linalg.eigvalsh(RANDOM_R5).min() > 1e-3


@pytest.mark.parametrize(("d", "k"), [(2, 2), (100, 2), (100, 5), (512, 5)])
def test_orthonormal_basis(d, k):
    u = orthonormal_basis(jax.random.key(d + k), d, k)
    assert u.shape == (d, k)
    u = np.asarray(u, np.float64)
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=ATOL)


def test_orthonormal_basis_keys():
    a = orthonormal_basis(jax.random.key(0), 50, 3)
    b = orthonormal_basis(jax.random.key(0), 50, 3)
    c = orthonormal_basis(jax.random.key(1), 50, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("p", [-1.0, -0.3, 0.0, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_task_weights_two_tasks_exact_cosine(p, c):
    spec = KDD18.replace(c=c)
    w = task_weights(jax.random.key(7), spec, p)
    assert w.shape == (spec.d, 2)
    cos, norms = _cosines(w)
    np.testing.assert_allclose(norms, c, rtol=ATOL)
    assert abs(cos[0, 1] - p) < ATOL
    assert np.all(np.isfinite(np.asarray(w)))


@pytest.mark.parametrize("p", [-1.0, 0.0, 0.5, 1.0])
def test_task_weights_match_paper_formula(p):
    """For K = 2: w1 = c u1, w2 = c (p u1 + sqrt(1 - p^2) u2), with U from the same key."""
    key = jax.random.key(11)
    spec = KDD18.replace(c=1.7)
    w = np.asarray(task_weights(key, spec, p), np.float64)
    u = np.asarray(orthonormal_basis(key, spec.d, 2), np.float64)
    w1 = spec.c * u[:, 0]
    w2 = spec.c * (p * u[:, 0] + math.sqrt(1 - p * p) * u[:, 1])
    np.testing.assert_allclose(w[:, 0], w1, atol=ATOL)
    np.testing.assert_allclose(w[:, 1], w2, atol=ATOL)


@pytest.mark.parametrize("r", [RANDOM_R5, SINGULAR_R5], ids=["random", "singular"])
def test_task_weights_five_tasks(r):
    spec = KDD18.replace(c=2.0)
    w = task_weights(jax.random.key(3), spec, r)
    assert w.shape == (spec.d, 5)
    cos, norms = _cosines(w)
    np.testing.assert_allclose(norms, spec.c, rtol=ATOL)
    np.testing.assert_allclose(cos, r, atol=ATOL)


def test_task_weights_scalar_p_many_tasks():
    w = task_weights(jax.random.key(4), KDD18, -0.2, n_tasks=5)
    assert w.shape == (KDD18.d, 5)
    cos, norms = _cosines(w)
    np.testing.assert_allclose(norms, 1.0, rtol=ATOL)
    np.testing.assert_allclose(cos, np.asarray(cosine_matrix(-0.2, 5)), atol=ATOL)


def test_cosine_matrix():
    np.testing.assert_allclose(
        np.asarray(cosine_matrix(0.25, 3)),
        [[1, 0.25, 0.25], [0.25, 1, 0.25], [0.25, 0.25, 1]],
    )


@pytest.mark.parametrize(
    "r",
    [
        np.array([[1.0, 0.5], [0.5, 1.0]]),
        np.array([[1.0, 1.0], [1.0, 1.0]]),
        np.array([[1.0, -1.0], [-1.0, 1.0]]),
        np.eye(5),
        np.ones((5, 5)),
        RANDOM_R5,
        SINGULAR_R5,
    ],
    ids=["p0.5", "p1", "p-1", "identity", "all-ones", "random5", "singular5"],
)
def test_psd_cholesky(r):
    lo = np.asarray(psd_cholesky(r), np.float64)
    assert np.all(np.isfinite(lo))
    np.testing.assert_array_equal(np.triu(lo, 1), 0.0)
    np.testing.assert_allclose(lo @ lo.T, r, atol=ATOL)


def test_psd_cholesky_jit_and_vmap_over_p():
    ps = jnp.array([-1.0, -0.5, 0.0, 0.3, 0.9, 1.0])
    got = jax.jit(jax.vmap(lambda p: psd_cholesky(cosine_matrix(p))))(ps)
    assert got.shape == (len(ps), 2, 2)
    for p, lo in zip(np.asarray(ps), np.asarray(got, np.float64), strict=True):
        expect = np.array([[1.0, 0.0], [p, math.sqrt(1 - p * p)]])
        np.testing.assert_allclose(lo, expect, atol=ATOL)

    r_jit = np.asarray(jax.jit(psd_cholesky)(SINGULAR_R5), np.float64)
    np.testing.assert_allclose(r_jit @ r_jit.T, SINGULAR_R5, atol=ATOL)


def test_task_weights_jit_vmap_over_p():
    ps = jnp.array([-1.0, 0.0, 0.5, 1.0])
    key = jax.random.key(5)
    ws = jax.jit(jax.vmap(lambda p: task_weights(key, KDD18, p)))(ps)
    assert ws.shape == (4, KDD18.d, 2)
    for p, w in zip(np.asarray(ps), ws, strict=True):
        cos, norms = _cosines(w)
        np.testing.assert_allclose(norms, 1.0, rtol=ATOL)
        assert abs(cos[0, 1] - p) < ATOL
        np.testing.assert_allclose(w, task_weights(key, KDD18, float(p)), atol=ATOL)


# ----------------------------------------------------------------------------- sampling


def test_same_key_same_data():
    kw, kd = jax.random.key(1), jax.random.key(2)
    w_a = task_weights(kw, KDD18, 0.5)
    w_b = task_weights(kw, KDD18, 0.5)
    np.testing.assert_array_equal(w_a, w_b)
    x_a, y_a = sample(kd, KDD18, 64, w_a)
    x_b, y_b = sample(kd, KDD18, 64, w_b)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert x_a.shape == (64, KDD18.d) and y_a.shape == (64, 2)
    assert x_a.dtype == jnp.float32 and y_a.dtype == jnp.float32


def test_a_point_of_a_set_depends_on_its_index_only():
    w = task_weights(jax.random.key(0), KDD18, 0.5)
    key = jax.random.key(3)
    at = jax.jit(lambda i: sample_at(key, KDD18, i, w))
    x, y = (np.asarray(a) for a in at(jnp.array([5, 3, 5, 70_000_000])))
    x2, y2 = jax.jit(points(key, KDD18, w))(jnp.array([3, 5]))
    np.testing.assert_array_equal(x[[1, 0]], x2)
    np.testing.assert_array_equal(y[[1, 0]], y2)
    np.testing.assert_array_equal(x[0], x[2])
    assert not np.allclose(x[0], x[1]) and x.shape == (4, KDD18.d) and y.shape == (4, 2)


@pytest.mark.parametrize("n", [1, 2, 7, 10_000, 30_000, 100_000, 10**6, 10**7, 2**31 - 1])
def test_draw_indices_is_randint_bit_for_bit(n):
    """The finite-set cells trained with jax.random.randint keep their numbers."""
    keys = jax.random.split(jax.random.key(n), 64)
    got = jax.jit(jax.vmap(lambda k: draw_indices(k, 32, n)))(keys)
    want = jax.vmap(lambda k: jax.random.randint(k, (32,), 0, n))(keys)
    assert got.dtype == want.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)
    assert 0 <= int(got.min()) and int(got.max()) < n


@pytest.mark.parametrize("n", [0, 2**31, 1.5])
def test_draw_indices_refuses_a_size_out_of_range(n):
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 2\*\*31 - 1\]"):
        draw_indices(jax.random.key(0), 4, n)


def test_different_keys_independent_data():
    n = 20_000
    w = task_weights(jax.random.key(0), KDD18, 0.5)
    x1, y1 = sample(jax.random.key(1), KDD18, n, w)
    x2, y2 = sample(jax.random.key(2), KDD18, n, w)
    assert not np.allclose(x1, x2)
    # Pearson of independent samples ~ N(0, 1/sqrt(size)); 5 standard errors.
    rx = np.corrcoef(np.ravel(x1), np.ravel(x2))[0, 1]
    assert abs(rx) < 5 / math.sqrt(x1.size)
    for k in range(2):
        ry = np.corrcoef(np.asarray(y1[:, k]), np.asarray(y2[:, k]))[0, 1]
        assert abs(ry) < 5 / math.sqrt(n)
    # Within one draw, distinct inputs are uncorrelated, and so are the two tasks at p = 0.
    cx = np.corrcoef(np.asarray(x1[:, :5]).T)
    assert np.abs(cx - np.eye(5)).max() < 5 / math.sqrt(n)

    # Weights from different keys are unrelated directions in R^d (cos ~ 1/sqrt(d)).
    w2 = task_weights(jax.random.key(9), KDD18, 0.5)
    cross = np.asarray(w, np.float64).T @ np.asarray(w2, np.float64)
    assert np.abs(cross).max() < 5 / math.sqrt(KDD18.d)


def test_labels_follow_the_formula():
    """With standardisation off, y - (z + sum sin(alpha z + beta)) is the N(0, noise^2) noise."""
    spec = get_preset("google").replace(standardize=False, noise_std=0.3)
    n = 20_000
    w = task_weights(jax.random.key(0), spec, 0.5)
    x, y = sample(jax.random.key(1), spec, n, w)
    x, y, w = (np.asarray(a, np.float64) for a in (x, y, w))
    z = x @ w
    clean = z + np.sin(z[..., None] * np.array(spec.alpha) + np.array(spec.beta)).sum(-1)
    noise = y - clean
    assert abs(noise.mean()) < 5 * 0.3 / math.sqrt(2 * n)
    assert abs(noise.std() / 0.3 - 1) < 0.03
    # The noise is independent across tasks and of the inputs.
    assert abs(np.corrcoef(noise.T)[0, 1]) < 5 / math.sqrt(n)
    cross = np.corrcoef(noise.T, x[:, :10].T)[:2, 2:]
    assert np.abs(cross).max() < 5 / math.sqrt(n)

    # No noise, no sinusoids: the label is exactly the linear term.
    bare = TaskSpec(d=spec.d, noise_std=0.0, standardize=False)
    y_lin = labels(jax.random.key(3), jnp.asarray(x[:50], jnp.float32), jnp.asarray(w), bare)
    np.testing.assert_allclose(np.asarray(y_lin), z[:50], atol=1e-4)


@pytest.mark.parametrize(
    ("preset", "n", "p"),
    [
        ("kdd18", 100_000, -1.0),
        ("kdd18", 100_000, 0.0),
        ("kdd18", 100_000, 0.5),
        ("kdd18", 100_000, 1.0),
        ("ple20", 50_000, 0.0),
        ("ple20", 50_000, 0.9),
        ("google", 50_000, 0.5),
    ],
)
def test_standardised_labels(preset, n, p):
    spec = get_preset(preset)
    assert spec.standardize
    w = task_weights(jax.random.key(21), spec, p)
    _, y = sample(jax.random.key(22), spec, n, w)
    y = np.asarray(y, np.float64)
    assert y.shape == (n, 2)
    # Standard error of the mean is 1/sqrt(n) <= 0.0045; of the variance about 0.006.
    np.testing.assert_allclose(y.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(y.var(0), 1.0, atol=0.03)
    # The two tasks' sample correlation matches the closed form.
    assert abs(np.corrcoef(y.T)[0, 1] - label_correlation(spec, p)) < 0.02


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("p", [-0.7, 0.0, 0.4, 1.0])
def test_label_moments_linear_case(p):
    """No sinusoids: var = c^2 + noise^2 and cov = p c^2."""
    spec = TaskSpec(d=10, c=1.5, noise_std=0.2)
    var, cov = label_moments(spec, p)
    assert var == pytest.approx(1.5**2 + 0.2**2, rel=1e-12)
    assert cov == pytest.approx(p * 1.5**2, rel=1e-12, abs=1e-15)
    assert label_correlation(spec, p) == pytest.approx(p * 2.25 / 2.29, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["kdd18", "ple20", "google"])
def test_label_correlation_closed_form_shape(name):
    spec = get_preset(name)
    assert label_correlation(spec, 0.0) == pytest.approx(0.0, abs=1e-12)
    at_one = label_correlation(spec, 1.0)
    var, _ = label_moments(spec, 1.0)
    # At p = 1 the labels differ only by noise: corr = 1 - noise^2 / var.
    assert at_one == pytest.approx(1 - spec.noise_std**2 / var, rel=1e-9)
    assert 0.98 < at_one < 1.0
    ps = np.linspace(0.0, 1.0, 21)
    curve = np.array([label_correlation(spec, p) for p in ps])
    assert np.all(np.diff(curve) > 0)


def test_label_correlation_monte_carlo():
    """corr_curve: near 1 at p = 1, increasing in p, and equal to the closed form."""
    cosines = (0.0, 0.5, 0.9, 0.95, 1.0)
    trials, n = MC_TRIALS, MC_N
    curve = corr_curve(KDD18, cosines=cosines, trials=trials, n=n, seed=0)
    assert curve["preset"] == "kdd18"
    assert curve["cosine"] == list(cosines)
    mean = np.array(curve["pearson_mean"])
    std = np.array(curve["pearson_std"])
    assert mean.shape == std.shape == (len(cosines),)
    assert mean[-1] > 0.99
    assert np.all(np.diff(mean) > 0)
    exact = np.array([label_correlation(KDD18, p) for p in cosines])
    # Standard error of a mean of `trials` Pearsons, with 4-sigma slack.
    tol = 4 * std / math.sqrt(trials) + 2e-3
    assert np.all(np.abs(mean - exact) < tol), (mean, exact, tol)
    # A trial's Pearson spread is the usual (1 - rho^2) / sqrt(n), within a factor 2.
    expected_std = (1 - exact**2) / math.sqrt(n)
    assert np.all((std > 0.5 * expected_std) & (std < 2 * expected_std + 1e-4))


def test_corr_curve_rejects_bad_arguments():
    with pytest.raises(ValueError, match="trials"):
        corr_curve(KDD18, cosines=(0.5,), trials=1, n=100)
    with pytest.raises(ValueError, match="n must"):
        corr_curve(KDD18, cosines=(0.5,), trials=2, n=1)
    with pytest.raises(ValueError, match="correlation p"):
        corr_curve(KDD18, cosines=(1.5,), trials=2, n=100)


def test_curve_csv_round_trip(tmp_path):
    curve = {"cosine": [0.5, 0.55, 1.0], "pearson_mean": [0.08, 0.1, 0.99]}
    curve["pearson_std"] = [0.01, 0.02, 0.0]
    path = tmp_path / "c.csv"
    write_curve_csv(curve, path)
    back = read_curve_csv(path)
    for key in ("cosine", "pearson_mean", "pearson_std"):
        np.testing.assert_allclose(back[key], curve[key])
    lines = path.read_text().splitlines()
    assert lines[0] == "cosine,pearson_mean,pearson_std,paper"
    assert lines[1].endswith(",0.076") and lines[2].endswith(",") and lines[3].endswith(",1.0")

    with pytest.raises(ValueError, match="no stored curve"):
        read_curve_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("cosine,other\n0.5,x\n")
    with pytest.raises(ValueError, match="corrupt curve file"):
        read_curve_csv(bad)


# ----------------------------------------------------------------------------- presets


def test_presets():
    assert preset_names()[0] == "kdd18"
    assert set(preset_names()) == {"kdd18", "ple20", "google"}
    for name, spec in PRESETS.items():
        assert spec.name == name
        assert spec.m == 10 and spec.c == 1.0 and spec.noise_std == 0.1 and spec.standardize
    assert KDD18.d == 100 and KDD18.alpha == KDD18_ALPHA and KDD18.beta == KDD18_BETA
    assert PLE20.d == 512
    rng = np.random.default_rng(2020)
    assert PLE20.alpha == tuple(float(v) for v in np.round(rng.normal(size=10), 4))
    assert PLE20.beta == tuple(float(v) for v in np.round(rng.normal(size=10), 4))
    google = PRESETS["google"]
    assert google.alpha == tuple(float(i) for i in range(1, 11))
    assert google.beta == tuple(float(i * i) for i in range(1, 11))


def test_get_preset_overrides_and_unknown():
    spec = get_preset("kdd18", d=20)
    assert spec.d == 20 and spec.alpha == KDD18.alpha and KDD18.d == 100
    assert get_preset("ple20") is PLE20
    with pytest.raises(ValueError, match="unknown preset 'nope'.*kdd18, ple20, google"):
        get_preset("nope")
    with pytest.raises(ValueError, match="d must be a positive integer"):
        get_preset("kdd18", d=0)


def test_kdd18_closed_form_matches_figure2():
    errs = curve_errors(KDD18)
    assert errs.shape == (len(FIG2_COSINES),)
    assert np.abs(errs).max() < 0.03, dict(zip(FIG2_COSINES, errs, strict=True))
    fitted = np.array([label_correlation(KDD18, p) for p in FIG2_COSINES])
    np.testing.assert_allclose(fitted, FIG2_PEARSON, atol=0.03)


def test_calibrate_reproduces_stored_preset():
    cal = calibrate()
    assert cal.alpha == KDD18.alpha
    assert cal.beta == KDD18.beta
    assert cal.seed == 47
    assert cal.scale == pytest.approx(4.8394, abs=1e-4)
    assert cal.max_abs_error < 0.03
    np.testing.assert_allclose(cal.fitted, FIG2_PEARSON, atol=0.03)
    np.testing.assert_allclose(np.array(cal.fitted) - FIG2_PEARSON, curve_errors(KDD18))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("corr", "kwargs", "match"),
    [
        (1.5, {}, r"correlation p must lie in \[-1, 1\], got 1.5"),
        (-1.01, {}, r"correlation p must lie in \[-1, 1\]"),
        (float("nan"), {}, r"correlation p must lie in \[-1, 1\]"),
        (
            [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]],
            {},
            r"correlation matrix R must be positive semidefinite",
        ),
        ([[1.0, 2.0], [2.0, 1.0]], {}, r"correlation matrix R entries must lie in \[-1, 1\]"),
        ([[2.0, 0.5], [0.5, 1.0]], {}, r"correlation matrix R must have a unit diagonal"),
        ([[1.0, 0.5], [0.2, 1.0]], {}, r"correlation matrix R must be symmetric"),
        ([[1.0, 0.5, 0.1], [0.5, 1.0, 0.1]], {}, r"correlation matrix R must be square"),
        ([1.0, 0.5], {}, r"correlation matrix R must be square"),
        ([[1.0, np.inf], [np.inf, 1.0]], {}, r"correlation matrix R must be finite"),
        (np.eye(3), {"n_tasks": 2}, r"correlation matrix R is 3x3 but n_tasks is 2"),
        (0.5, {"d": 1}, r"input dimension d must be >= the number of tasks K=2, got d=1"),
        (0.5, {"n_tasks": 5, "d": 4}, r"input dimension d must be >= .* K=5, got d=4"),
    ],
)
def test_validate_correlation_errors(corr, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_correlation(corr, **kwargs)


def test_validate_correlation_accepts():
    np.testing.assert_array_equal(validate_correlation(0.5), [[1, 0.5], [0.5, 1]])
    r = validate_correlation(-0.2, n_tasks=4, d=4)
    assert r.shape == (4, 4) and r.dtype == np.float64
    np.testing.assert_allclose(r, np.asarray(cosine_matrix(-0.2, 4)), atol=1e-7)
    for good in (1.0, -1.0, RANDOM_R5, SINGULAR_R5):
        validate_correlation(good, d=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d": 0}, r"d must be a positive integer, got 0"),
        ({"d": -3}, r"d must be a positive integer"),
        ({"d": 2.5}, r"d must be a positive integer, got 2.5"),
        ({"c": 0.0}, r"c must be a finite number > 0"),
        ({"c": -1.0}, r"c must be a finite number > 0"),
        ({"c": float("inf")}, r"c must be a finite number > 0"),
        ({"alpha": (1.0, 2.0), "beta": (0.0,)}, r"alpha and beta must have the same length m"),
        ({"alpha": (1.0,), "beta": ()}, r"got 1 and 0"),
        ({"alpha": (float("nan"),), "beta": (0.0,)}, r"alpha and beta must be finite"),
        ({"noise_std": -0.1}, r"noise_std must be a finite number >= 0"),
    ],
)
def test_taskspec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_taskspec_behaviour():
    spec = TaskSpec(
        d=np.int64(7), c=np.float32(2.0), alpha=[1, 2], beta=np.array([0.5, 0.25]), noise_std=0
    )
    assert spec.alpha == (1.0, 2.0) and spec.beta == (0.5, 0.25) and spec.m == 2
    # numpy scalars become plain Python numbers, so to_dict() is JSON-ready.
    assert type(spec.d) is int and type(spec.c) is float and type(spec.noise_std) is float
    same = TaskSpec(d=7, c=2.0, alpha=(1.0, 2.0), beta=(0.5, 0.25), noise_std=0.0)
    assert spec == same and hash(spec) == hash(same)
    d = spec.to_dict()
    assert json.loads(json.dumps(d))["alpha"] == [1.0, 2.0]
    assert set(d) == {"d", "c", "alpha", "beta", "noise_std", "standardize", "name"}
    with pytest.raises(ValueError, match="c must be"):
        spec.replace(c=0.0)
    assert TaskSpec().m == 0


# ----------------------------------------------------------------------------- CLI


def cli_commands() -> set[str]:
    return {"sample", "corr-curve", "figure", "describe", "calibrate"}


CURVE_ARGS = ["corr-curve", "--trials", str(MC_TRIALS), "--n", str(MC_N)]
CURVE_ARGS += ["--cosines", "0.5", "0.9", "1.0"]


def test_cli_sample(tmp_path, capsys):
    out = tmp_path / "data.npz"
    argv = ["sample", "--p", "0.6", "--n", "64", "--seed", "3", "--out", str(out)]
    assert cli.main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == {"x", "y", "w", "meta"}
        x, y, w = z["x"], z["y"], z["w"]
        meta = json.loads(str(z["meta"]))
    assert x.shape == (64, 100) and y.shape == (64, 2) and w.shape == (100, 2)
    assert meta["seed"] == 3 and meta["n"] == 64
    assert meta["spec"] == KDD18.to_dict()
    np.testing.assert_allclose(meta["R"], [[1.0, 0.6], [0.6, 1.0]])
    cos, norms = _cosines(w)
    assert abs(cos[0, 1] - 0.6) < ATOL
    np.testing.assert_allclose(norms, 1.0, rtol=ATOL)

    # Same seed, same arrays; a different seed, different ones.
    again = tmp_path / "again.npz"
    other = tmp_path / "other.npz"
    assert cli.main(argv[:-1] + [str(again)]) == 0
    assert cli.main(["sample", "--p", "0.6", "--n", "64", "--seed", "4", "--out", str(other)]) == 0
    with np.load(out) as a, np.load(again) as b, np.load(other) as c:
        for k in ("x", "y", "w"):
            np.testing.assert_array_equal(a[k], b[k])
            assert not np.array_equal(a[k], c[k])


def test_cli_sample_matrix_and_options(tmp_path, capsys):
    r = RANDOM_R5.tolist()
    out = tmp_path / "k5.npz"
    argv = ["sample", "--preset", "ple20", "--d", "100", "--R", json.dumps(r), "--n", "64"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["x"].shape == (64, 100) and z["y"].shape == (64, 5) and z["w"].shape == (100, 5)
        np.testing.assert_allclose(_cosines(z["w"])[0], r, atol=ATOL)
        meta = json.loads(str(z["meta"]))
    assert meta["spec"] == PLE20.replace(d=100).to_dict()
    np.testing.assert_allclose(meta["R"], r)

    out5 = tmp_path / "p5.npz"
    assert cli.main(["sample", "--p", "0.3", "--tasks", "5", "--n", "64", "--out", str(out5)]) == 0
    with np.load(out5) as z:
        assert z["y"].shape == (64, 5)
        np.testing.assert_allclose(
            _cosines(z["w"])[0], np.asarray(cosine_matrix(0.3, 5)), atol=ATOL
        )
    capsys.readouterr()


def test_cli_corr_curve_json(capsys):
    assert cli.main([*CURVE_ARGS, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")
    curve = json.loads(out)
    assert set(curve) == {"preset", "cosine", "pearson_mean", "pearson_std"}
    assert curve["preset"] == "kdd18"
    assert curve["cosine"] == [0.5, 0.9, 1.0]
    assert len(curve["pearson_mean"]) == len(curve["pearson_std"]) == 3
    assert curve["pearson_mean"][-1] > 0.99
    assert curve["pearson_mean"][0] < curve["pearson_mean"][1] < curve["pearson_mean"][2]


def test_cli_corr_curve_figure_and_redraw(tmp_path, capsys):
    fig_dir = tmp_path / "figs" / "nested"
    assert cli.main([*CURVE_ARGS, "--figures", str(fig_dir)]) == 0
    out = capsys.readouterr().out
    assert f"preset kdd18: {MC_TRIALS} trials x {MC_N} points" in out
    assert "wrote" in out
    png = fig_dir / f"{cli.FIG2_STEM}.png"
    csv_path = fig_dir / f"{cli.FIG2_STEM}.csv"
    # The file names are those of the committed Figure 2, which `figure` redraws by default.
    assert (REPO / "figures" / png.name).is_file() and (REPO / "figures" / csv_path.name).is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = read_curve_csv(csv_path)
    assert curve["cosine"] == [0.5, 0.9, 1.0]
    assert "0.31" in csv_path.read_text().splitlines()[2]  # paper's value at 0.9

    # `figure` redraws the PNG from the CSV alone.
    png.unlink()
    assert cli.main(["figure", "--figures", str(fig_dir)]) == 0
    assert "redrew" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --json and --figures together: stdout is still one JSON object.
    assert cli.main([*CURVE_ARGS, "--json", "--figures", str(fig_dir)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {
        "preset",
        "cosine",
        "pearson_mean",
        "pearson_std",
    }


def test_cli_redrawing_the_stored_figure_rewrites_nothing(tmp_path, capsys):
    """`make reproduce` and `make figures` on a clone recompute and redraw Figure 2: files
    that come out byte-identical keep their bytes and their time stamps."""
    fig_dir = tmp_path / "figs"
    assert cli.main([*CURVE_ARGS, "--figures", str(fig_dir)]) == 0
    for f in fig_dir.iterdir():
        os.utime(f, ns=(10**18, 10**18))
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in fig_dir.iterdir()}
    assert cli.main([*CURVE_ARGS, "--figures", str(fig_dir)]) == 0
    assert cli.main(["figure", "--figures", str(fig_dir)]) == 0
    after = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in fig_dir.iterdir()}
    assert after == before
    capsys.readouterr()


@pytest.mark.parametrize("name", ["kdd18", "ple20", "google"])
def test_cli_describe(name, capsys):
    assert cli.main(["describe", "--preset", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    spec = PRESETS[name]
    assert info["name"] == name and info["d"] == spec.d and info["m"] == 10
    assert info["alpha"] == list(spec.alpha)
    assert set(info["label_corr_at"]) == {"0.5", "0.9", "1.0"}
    assert info["label_corr_at"]["0.9"] == round(label_correlation(spec, 0.9), 4)

    assert cli.main(["describe", "--preset", name, "--d", "7"]) == 0
    text = capsys.readouterr().out
    assert f"name: {name}" in text and "d: 7" in text and "label_corr_at" in text


def test_cli_calibrate(capsys):
    # Seed 47 is the best draw, so searching the first 48 reproduces the full search.
    assert cli.main(["calibrate", "--seeds", "48"]) == 0
    out = capsys.readouterr().out
    assert "seed 47" in out
    assert out.rstrip().endswith("matches the stored kdd18 preset")
    assert f"KDD18_ALPHA = {KDD18_ALPHA}" in out


def _assert_cli_error(capsys, flag: str, *needles: str) -> str:
    """Exactly one line on stderr, naming ``flag`` and the allowed values; nothing on stdout."""
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert err.startswith("error: "), err
    assert flag in err, f"{flag!r} not named in {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


BAD_R = {
    "not PSD": "[[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]",
    "diagonal": "[[2, 0.5], [0.5, 1]]",
    "asymmetric": "[[1, 0.5], [0.4, 1]]",
    "entries": "[[1, 2], [2, 1]]",
    "bad JSON": "[[1, 0.5",
    "not square": "[1, 0.5]",
}


@pytest.mark.parametrize(
    ("argv", "flag", "needles"),
    [
        (["calibrate", "--seeds", "0"], "--seeds", ["an integer >= 1", "got 0"]),
        (["calibrate", "--seeds", "-3"], "--seeds", ["an integer >= 1"]),
        (["calibrate", "--seeds", "many"], "--seeds", ["an integer >= 1", "'many'"]),
        (["sample", "--tasks", "0"], "--tasks", ["an integer >= 1", "got 0"]),
        (["sample", "--tasks", "-2"], "--tasks", ["an integer >= 1"]),
        (["sample", "--tasks", "150"], "--d", ["K=150", "--tasks", "d=100"]),
        (["sample", "--n", "0"], "--n", ["an integer >= 1", "got 0"]),
        (["sample", "--n", "-5"], "--n", ["an integer >= 1"]),
        (["sample", "--n", "abc"], "--n", ["an integer >= 1"]),
        (["sample", "--p", "1.5"], "--p", ["[-1, 1]", "1.5"]),
        (["sample", "--p", "-2"], "--p", ["[-1, 1]"]),
        (["sample", "--p", "nan"], "--p", ["[-1, 1]"]),
        (["sample", "--R", BAD_R["not PSD"]], "--R", ["positive semidefinite"]),
        (["sample", "--R", BAD_R["diagonal"]], "--R", ["unit diagonal"]),
        (["sample", "--R", BAD_R["asymmetric"]], "--R", ["symmetric"]),
        (["sample", "--R", BAD_R["entries"]], "--R", ["[-1, 1]"]),
        (["sample", "--R", BAD_R["bad JSON"]], "--R", ["JSON (K, K) matrix"]),
        (["sample", "--R", BAD_R["not square"]], "--R", ["JSON (K, K) matrix"]),
        (["sample", "--d", "0"], "--d", ["an integer >= 1"]),
        (["sample", "--d", "1"], "--d", ["K=2", "d=1"]),
        (["sample", "--d", "2", "--R", json.dumps(RANDOM_R5.tolist())], "--d", ["K=5", "--R"]),
        (["sample", "--seed", "-1"], "--seed", ["an integer in [0, "]),
        (["sample", "--seed", str(2**63)], "--seed", ["an integer in [0, "]),
        (["sample", "--preset", "nope"], "--preset", ["'nope'", "kdd18, ple20, google"]),
        (["describe", "--preset", "nope"], "--preset", ["kdd18, ple20, google"]),
        (["describe", "--d", "0"], "--d", ["an integer >= 1"]),
        (["corr-curve", "--preset", "nope"], "--preset", ["kdd18, ple20, google"]),
        (["corr-curve", "--trials", "1"], "--trials", ["an integer >= 2"]),
        (["corr-curve", "--n", "1"], "--n", ["an integer >= 2"]),
        (["corr-curve", "--d", "1"], "--d", ["an integer >= 2"]),
        (["corr-curve", "--seed", "-1"], "--seed", ["an integer in [0, "]),
        (["corr-curve", "--cosines", "0.5", "1.5"], "--cosines", ["[-1, 1]", "1.5"]),
        (["corr-curve", "--cosines", "0.5", "inf"], "--cosines", ["[-1, 1]"]),
        # sizes this machine cannot hold: refused before anything is allocated
        (["sample", "--n", "10000000000"], "--n", ["--d", "of memory", "available"]),
        (["sample", "--d", "100000000000"], "--d 100000000000", ["--n", "of memory"]),
        (["corr-curve", "--n", "10000000000"], "--n", ["--d", "of memory", "trials at once"]),
    ],
    ids=lambda v: " ".join(v)[:40] if isinstance(v, list) and v and v[0] in cli_commands() else "",
)
def test_cli_bad_values(argv, flag, needles, tmp_path, capsys):
    """Each bad value: exit 2, one line naming the flag and its allowed values, no output."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if argv[0] == "sample":
        argv = [*argv, "--out", str(out_dir / "x.npz")]
    if argv[0] == "corr-curve":
        argv = [*argv, "--figures", str(out_dir / "figs")]
    assert cli.main(argv) == 2
    _assert_cli_error(capsys, flag, *needles)
    assert list(out_dir.iterdir()) == []  # no output file, no temporary left behind


def test_cli_sizes_past_the_generators_counters_or_the_disk(tmp_path, capsys, monkeypatch):
    """With memory to spare, a draw of more than 2**32 values of x is refused (its counters
    would repeat), and so is a file larger than its disk's free space."""
    monkeypatch.setattr(cli, "available_memory", lambda: 2**70)
    out = tmp_path / "x.npz"
    assert cli.main(["sample", "--n", str(2**32 // 100 + 1), "--out", str(out)]) == 2
    _assert_cli_error(capsys, "--n", "--d", "2**32")
    assert cli.main(["corr-curve", "--n", str(2**32 // 100 + 1)]) == 2
    _assert_cli_error(capsys, "--n", "--d", "2**32")
    full = types.SimpleNamespace(total=1, used=1, free=0)
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda path: full)
    assert cli.main(["sample", "--n", "1000", "--out", str(out)]) == 2
    _assert_cli_error(capsys, "--out", "free on its disk")
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_outputs(tmp_path, capsys):
    assert cli.main(["sample", "--out", "/nonexistent_dir/x.npz"]) == 2
    _assert_cli_error(capsys, "--out", "/nonexistent_dir", "does not exist")

    assert cli.main(["sample", "--out", str(tmp_path)]) == 2
    _assert_cli_error(capsys, "--out", "must be a file path")

    assert cli.main(["sample"]) == 2
    _assert_cli_error(capsys, "--out", "required")

    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    assert cli.main([*CURVE_ARGS, "--figures", str(blocker / "sub")]) == 2
    _assert_cli_error(capsys, "--figures", "cannot create directory")

    assert cli.main(["figure", "--figures", str(blocker / "sub")]) == 2
    _assert_cli_error(capsys, "--figures", "is not a directory")

    # `figure` with no stored CSV, and a folder that does not exist: nothing is created.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["figure", "--figures", str(empty)]) == 2
    _assert_cli_error(capsys, "corr-curve --figures", "no stored curve")
    assert cli.main(["figure", "--figures", str(tmp_path / "missing")]) == 2
    _assert_cli_error(capsys, "--figures", "is not a directory")
    assert not (tmp_path / "missing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt"]
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("argv", [[], ["bogus"], ["describe", "--x"], ["sample", "--p"]])
def test_cli_usage_errors_are_one_line(argv, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert "--help" in err


def test_cli_help_shows_every_default(capsys):
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == cli_commands()
    for name, sub in subs.choices.items():
        assert cli.main([name, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for action in sub._actions:
            if action.dest == "help":
                continue
            flag = action.option_strings[0]
            assert action.help, f"{name} {flag} has no description"
            desc = " ".join(action.help.split())
            at = text.find(desc)
            assert at >= 0, f"{name} {flag}: description not in --help"
            after = text[at + len(desc) :]
            if action.required:
                assert after.startswith(" (required)"), (name, flag)
            elif action.default is None:
                assert "(default: " in desc, f"{name} {flag}: default not described"
            else:
                shown = f" (default: {action.default})"
                assert after.startswith(shown), f"{name} {flag}: {after[:60]!r}"


def _main_catching_interrupt(argv) -> int:
    try:
        return cli.main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main")


def test_cli_interrupt_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("datagen.calibrate.calibrate", interrupted)
    assert _main_catching_interrupt(["calibrate"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == f"{cli.INTERRUPTED}\n"

    # Ctrl-C in the middle of writing the .npz: neither the file nor a temporary remains.
    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.np, "savez", half_written)
    out_file = tmp_path / "data.npz"
    assert _main_catching_interrupt(["sample", "--n", "8", "--out", str(out_file)]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == f"{cli.INTERRUPTED}\n"
    assert list(tmp_path.iterdir()) == []


def test_python_m_datagen_sigint_exits_130():
    code = (
        # A child of a background job inherits SIGINT ignored; a terminal's Ctrl-C is not.
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from datagen import cli; print('ready', flush=True); "
        "sys.exit(cli.main(['calibrate', '--seeds', '100000000']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(1.0)  # inside the calibration search
        # Python acts on a signal between bytecodes; on a loaded machine the child may sit
        # in one long XLA call, so press Ctrl-C again if it has not ended after a minute.
        for _ in range(5):
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # A Ctrl-C that lands in JAX's garbage-collection callback is reported by Python as
    # "Exception ignored in: <function _xla_gc_callback ...>" before ours; nothing else.
    assert err.endswith(f"{cli.INTERRUPTED}\n"), err
    assert err.count("Traceback") == err.count("Exception ignored in: <function _xla_gc"), err
    assert out == ""


def test_python_m_datagen_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "datagen", "describe", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == "kdd18" and info["d"] == 100

    proc = subprocess.run(
        [sys.executable, "-m", "datagen", "describe", "--preset", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: argument --preset: unknown preset 'nope'; choose one of: kdd18, ple20, google"
        " (see `python -m datagen describe --help`)\n"
    )


def test_the_cpu_threefry_switch_waits_for_the_sampler_and_a_cpu_backend():
    """Importing datagen (or the benchmark) leaves JAX's lowering alone; the first draw on
    a CPU backend installs the unrolled CPU lowering."""
    script = (
        "import benchmark, datagen, jax\n"
        "from datagen import _cpu_rng\n"
        "assert not _cpu_rng.installed()\n"
        "spec = datagen.get_preset('kdd18', d=4)\n"
        "w = datagen.task_weights(jax.random.key(1), spec, 0.5)\n"
        "datagen.sample(jax.random.key(0), spec, 3, w)\n"
        "assert _cpu_rng.installed()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MTL_ROLLED_THREEFRY"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def test_the_cpu_threefry_switch_is_absent_on_other_backends(monkeypatch):
    """On a GPU or TPU backend, ensure() installs nothing (JAX's own lowering stays)."""
    from datagen import _cpu_rng

    calls = []
    monkeypatch.setattr(_cpu_rng, "_state", {"installed": False, "decided": False})
    monkeypatch.setattr(_cpu_rng, "install", lambda: calls.append(1) or True)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _cpu_rng.ensure() is False
    assert calls == []
    monkeypatch.setattr(_cpu_rng, "_state", {"installed": False, "decided": False})
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    _cpu_rng.ensure()
    assert calls == [1]


def test_cluster_cosines_builds_blocks_and_refuses_what_is_not_a_cosine_matrix():
    from datagen import cluster_cosines

    r = cluster_cosines(16, 4, p_in=0.9)
    assert r.shape == (16, 16) and np.all(np.diag(r) == 1.0)
    assert r[0, 3] == r[12, 15] == 0.9 and r[3, 4] == r[0, 15] == 0.0
    validate_correlation(r, n_tasks=16, d=100)
    w = task_weights(jax.random.key(0), get_preset("kdd18"), r)
    cos = np.asarray(w.T @ w) / np.linalg.norm(w, axis=0) ** 2
    np.testing.assert_allclose(cos, r, atol=1e-5)
    uneven = cluster_cosines(5, 2, p_in=0.5, p_out=0.1)  # blocks of 3 and 2
    assert uneven[0, 2] == 0.5 and uneven[2, 3] == 0.1 and uneven[3, 4] == 0.5
    np.testing.assert_array_equal(cluster_cosines(4, 1, 0.7), validate_correlation(0.7, 4))
    for args, word in [
        ((1, 1, 0.5), "n_tasks must be >= 2"),
        ((4, 5, 0.5), "n_clusters must lie in [1, n_tasks = 4]"),
        ((4, 2, 1.5), "p_in must lie in [-1, 1]"),
        ((4, 2, 0.2, 0.5), "p_out must be <= p_in"),
        ((4, 1, -0.9, -0.9), "not positive semidefinite"),
        ((4.0, 2, 0.5), "n_tasks must be an integer"),
    ]:
        with pytest.raises(ValueError, match=re.escape(word)):
            cluster_cosines(*args)
