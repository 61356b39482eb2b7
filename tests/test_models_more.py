"""The architectures beyond the six of the papers reproduced here: each forward pass written
out in numpy from its paper's equations (one small input, the model's own parameters), the
depth controls' parameter budgets, and DSelect-k's sparsity guarantee.

The registry-wide checks (shapes, gates summing to 1, a loss that falls, size validation)
are in tests/test_models.py and cover these architectures too.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark import models
from benchmark.models import ModelConfig, param_count
from benchmark.models.cross_stitch import _stitch_init

D = 8  # input dimension
B = 6  # batch
NEW = ["dselect_k", "cross_stitch", "adatt", "mmoe_norm", "shared_bottom_deep", "mmoe_deep"]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _relu(z):
    return np.maximum(z, 0.0)


def _swish(z):
    return z / (1.0 + np.exp(-z))


def _params_of(net, x, seed=0, scale=1 / 3):
    """Random parameters of ``net`` (numpy, float64, N(0, scale^2)) for inputs like ``x``."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x[:1])
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape) * scale, shapes)


def _apply_float32(net, params, x):
    """``net.apply`` in float32 on float64 ``params`` and ``x``: ``(preds, gates)``."""
    params32 = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), params)
    preds, gates = jax.jit(net.apply)(params32, x.astype(np.float32))
    return np.asarray(preds), None if gates is None else np.asarray(gates)


def _tower(tw, k, h):
    """Task k's tower, written out: ReLU hidden layer, then a scalar output. ``(B,)``."""
    t = _relu(h @ tw["hidden_kernel"][k] + tw["hidden_bias"][k])
    return t @ tw["out_kernel"][k, :, 0] + tw["out_bias"][k]


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# registry entries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_registered_with_label_order_and_only_parameters(name):
    arch = models.get(name)
    assert arch.label and arch.label != name
    assert arch.order >= 10
    net = ModelConfig.of(name).build(2)
    # A pure function: no mutable collections (batch statistics, counters) besides params.
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, D)))
    assert set(shapes) == {"params"}


# --------------------------------------------------------------------------------------------
# DSelect-k (Hazimeh et al., NeurIPS 2021)
# --------------------------------------------------------------------------------------------


def _smooth_step(t, gamma):
    """Eq. (3): 0 if t <= -gamma/2, 1 if t >= gamma/2, else -2t^3/gamma^3 + 3t/(2 gamma) + 1/2."""
    poly = -2 * t**3 / gamma**3 + 3 * t / (2 * gamma) + 0.5
    return np.where(t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, poly))


def _dselect_gates(p, x, n_tasks, n_experts, k, gamma):
    """The DSelect-k gate written out per task, selector, expert and bit: ``(B, K, E)``, and
    the smooth-step activations ``(B, K, k, m)``."""
    m = int(math.log2(n_experts))
    gates = np.zeros((x.shape[0], n_tasks, n_experts))
    acts = np.zeros((x.shape[0], n_tasks, k, m))
    for t in range(n_tasks):
        z = x @ p["z_kernel"][t] + p["z_bias"][t]  # (B, k * m): selector i owns i*m .. i*m+m-1
        alpha = _softmax(x @ p["w_kernel"][t] + p["w_bias"][t])  # (B, k)
        for i in range(k):
            s = _smooth_step(z[:, i * m : (i + 1) * m], gamma)  # (B, m)
            acts[:, t, i] = s
            for e in range(n_experts):
                bits = [(e >> (m - 1 - j)) & 1 for j in range(m)]  # most significant first
                r = np.ones(x.shape[0])
                for j, bit in enumerate(bits):
                    r = r * (s[:, j] if bit else 1.0 - s[:, j])
                gates[:, t, e] += alpha[:, i] * r
    return gates, acts


def test_dselect_k_matches_the_papers_equations():
    net = ModelConfig.of("dselect_k", num_experts=8, k=3, expert_units=4, tower_units=5).build(2)
    x = np.random.default_rng(1).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    p = params["params"]
    want, acts = _dselect_gates(p, x, 2, 8, 3, 1.0)
    # The input reaches both the cubic region and the flat ends of the smooth-step.
    assert np.any((acts > 0) & (acts < 1)) and np.any(acts == 0) and np.any(acts == 1)
    _close(gates, want)
    ex = p["experts"]["dense"]
    f = [
        _relu(x @ ex["kernel"][:, 4 * i : 4 * i + 4] + ex["bias"][4 * i : 4 * i + 4])
        for i in range(8)
    ]
    for t in range(2):
        mixed = sum(want[:, t, i : i + 1] * f[i] for i in range(8))
        _close(preds[:, t], _tower(p["towers"], t, mixed))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dselect_k_saturated_gate_uses_at_most_k_experts(k):
    # Section 3: once every smooth-step is saturated (|z| >= gamma / 2), each single-expert
    # selector is one-hot on the expert whose binary code is [z > 0], so a task's gate has
    # at most k non-zero weights, summing to 1.
    net = ModelConfig.of("dselect_k", k=k).build(2)
    x = np.random.default_rng(2).normal(size=(64, D))
    params = _params_of(net, x, seed=k)
    pz = params["params"]
    z_raw = np.einsum("bd,tdf->btf", x, pz["z_kernel"]) + pz["z_bias"]
    scale = 1.0 / np.abs(z_raw).min()  # every |z| >= 1 > gamma / 2 after scaling
    sat = jax.tree_util.tree_map(lambda v: v, params)
    sat["params"]["z_kernel"] = pz["z_kernel"] * scale
    sat["params"]["z_bias"] = pz["z_bias"] * scale
    _, gates = _apply_float32(net, sat, x)
    z = np.einsum("bd,tdf->btf", x, sat["params"]["z_kernel"]) + sat["params"]["z_bias"]
    assert np.all(np.abs(z) >= 0.5)  # saturated everywhere
    used = (gates > 1e-6).sum(-1)  # (B, K)
    assert np.all(used <= k) and np.all(used >= 1)
    assert used.max() == k  # k distinct selections happen somewhere in 64 examples
    np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-5)
    # The selected experts are the binary codes of the signs of z.
    z = z.reshape(64, 2, k, 3) > 0
    chosen = (z * np.array([4, 2, 1])).sum(-1)  # (B, K, k)
    for b in range(64):
        for t in range(2):
            assert set(np.flatnonzero(gates[b, t] > 1e-6)) <= set(chosen[b, t])
    # Unsaturated (the same parameters, unscaled), the gate is dense: the bound is not free.
    _, dense = _apply_float32(net, params, x)
    assert (dense > 1e-6).sum(-1).max() > k


def test_dselect_k_starts_near_uniform():
    # The reference initialises z near 0, in the smooth-step's cubic region, where every
    # selector weighs all experts about equally: no expert starts without a gradient. (An
    # initialisation with unit-variance z, such as Lecun-normal, fails this: many zeros.)
    net = ModelConfig.of("dselect_k").build(2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(64, 100)), jnp.float32)
    _, gates = net.apply(net.init(jax.random.key(0), x), x)
    assert np.all((np.asarray(gates) > 1 / 24) & (np.asarray(gates) < 3 / 8))  # 1/8 within 3x


def test_dselect_k_requires_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        ModelConfig.of("dselect_k", num_experts=6)
    assert ModelConfig.of("dselect_k", num_experts=4).build(2).num_experts == 4


# --------------------------------------------------------------------------------------------
# cross-stitch (Misra et al., CVPR 2016)
# --------------------------------------------------------------------------------------------


def test_cross_stitch_matches_the_papers_equations():
    # Eq. (1): x~_k = sum_j alpha_kj x_j, here with K = 3 and a non-symmetric alpha, so a
    # transposed unit fails.
    net = ModelConfig.of("cross_stitch", column_units=5, tower_units=4).build(3)
    x = np.random.default_rng(4).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    assert gates is None
    p = params["params"]
    cols = [_relu(x @ p["column_kernel"][k] + p["column_bias"][k]) for k in range(3)]
    alpha = p["stitch"]
    assert not np.allclose(alpha, alpha.T)
    for k in range(3):
        stitched = sum(alpha[k, j] * cols[j] for j in range(3))
        _close(preds[:, k], _tower(p["towers"], k, stitched))


def test_cross_stitch_unit_starts_near_identity():
    # Section 4.1: (alpha_S, alpha_D) = (0.9, 0.1); rows stay convex for any K.
    np.testing.assert_allclose(_stitch_init(0.9)(None, (2, 2)), [[0.9, 0.1], [0.1, 0.9]])
    a3 = np.asarray(_stitch_init(0.9)(None, (3, 3)))
    np.testing.assert_allclose(np.diag(a3), 0.9)
    np.testing.assert_allclose(a3.sum(1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# AdaTT (Li et al., KDD 2023)
# --------------------------------------------------------------------------------------------


def _adatt_level(p, rows, n_tasks, et, es, h, shared_unit):
    """One AdaTT level written out per expert and per fusion unit. ``rows[t]`` is task t's
    input, ``rows[K]`` the shared group's. Returns (outputs per unit, task gates)."""
    own = [  # own[t][j]: task t's expert j
        [
            _relu(
                rows[t] @ p["task_expert_kernel"][t][:, j * h : (j + 1) * h]
                + p["task_expert_bias"][t][j * h : (j + 1) * h]
            )
            for j in range(et)
        ]
        for t in range(n_tasks)
    ]
    sh = p["shared_experts"]["dense"]
    shared = [
        _relu(
            rows[n_tasks] @ sh["kernel"][:, j * h : (j + 1) * h] + sh["bias"][j * h : (j + 1) * h]
        )
        for j in range(es)
    ]
    every = [f for group in own for f in group] + shared
    groups = own + ([shared] if shared_unit else [])
    outs, gates = [], []
    for u, group in enumerate(groups):
        g = _softmax(rows[u] @ p["gate_kernel"][u])  # AllExpert-GF over every expert
        out = sum(g[:, i : i + 1] * every[i] for i in range(len(every)))
        name = "task_residual" if u < n_tasks else "shared_residual"
        if len(group) == 1:
            out = out + group[0]  # NativeExpert-LF with a single expert: weight 1
        else:
            v = p[name][u] if u < n_tasks else p[name]
            out = out + sum(v[j] * group[j] for j in range(len(group)))
        outs.append(out)
        if u < n_tasks:
            gates.append(g)
    return outs, np.stack(gates, axis=1)


@pytest.mark.parametrize("levels,et,es", [(1, 2, 3), (2, 2, 3), (2, 1, 1)])
def test_adatt_matches_the_papers_equations(levels, et, es):
    h, k = 4, 2
    net = ModelConfig.of(
        "adatt", levels=levels, task_experts=et, shared_experts=es, expert_units=h
    ).build(k)
    x = np.random.default_rng(5).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    p = params["params"]
    rows = [x] * (k + 1)
    for level in range(levels):
        rows, want_gates = _adatt_level(
            p[f"fusion_{level}"], rows, k, et, es, h, shared_unit=level < levels - 1
        )
    assert gates.shape == (B, k, k * et + es)
    _close(gates, want_gates)
    for t in range(k):
        _close(preds[:, t], _tower(p["towers"], t, rows[t]))


# --------------------------------------------------------------------------------------------
# HoME-style MMoE (Wang et al., arXiv 2408.05430)
# --------------------------------------------------------------------------------------------


def test_mmoe_norm_matches_the_papers_equations():
    # HoME section 4.1: expert e = Swish(BatchNorm(W_e x)), batch mean and (biased) variance.
    e, h = 3, 4
    net = ModelConfig.of("mmoe_norm", num_experts=e, expert_units=h, tower_units=5).build(2)
    x = np.random.default_rng(6).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    p = params["params"]
    f = []
    for i in range(e):
        u = x @ p["experts"]["kernel"][:, i * h : (i + 1) * h]  # (B, H)
        n = (u - u.mean(0)) / np.sqrt(u.var(0) + 1e-5)
        f.append(_swish(p["norm_scale"][i] * n + p["norm_shift"][i]))
    wg = p["gates"]["dense"]["kernel"]
    for t in range(2):
        g = _softmax(x @ wg[:, t * e : (t + 1) * e])
        _close(gates[:, t], g)
        _close(preds[:, t], _tower(p["towers"], t, sum(g[:, i : i + 1] * f[i] for i in range(e))))


def test_mmoe_norm_experts_do_not_depend_on_their_scale():
    # Normalised experts: scaling an expert's weights by 100 changes nothing downstream, the
    # imbalance HoME's normalisation removes. (Plain MMoE fails this.)
    net = ModelConfig.of("mmoe_norm").build(2)
    x = np.random.default_rng(7).normal(size=(32, D))
    params = _params_of(net, x)
    preds, _ = _apply_float32(net, params, x)
    big = jax.tree_util.tree_map(lambda v: v, params)
    kern = params["params"]["experts"]["kernel"].copy()
    kern[:, :16] *= 100.0  # expert 0
    big["params"]["experts"]["kernel"] = kern
    preds_big, _ = _apply_float32(net, big, x)
    np.testing.assert_allclose(preds_big, preds, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------
# depth-matched controls
# --------------------------------------------------------------------------------------------


def test_shared_bottom_deep_matches_its_equations():
    net = ModelConfig.of("shared_bottom_deep", bottom_units=5, bottom2_units=3).build(2)
    x = np.random.default_rng(8).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    assert gates is None
    p = params["params"]
    h1 = _relu(x @ p["bottom"]["kernel"] + p["bottom"]["bias"])
    h2 = _relu(h1 @ p["bottom2"]["kernel"] + p["bottom2"]["bias"])
    for t in range(2):
        _close(preds[:, t], _tower(p["towers"], t, h2))


def test_mmoe_deep_matches_its_equations():
    e, h1, h2 = 3, 5, 4
    net = ModelConfig.of("mmoe_deep", num_experts=e, expert_hidden=h1, expert_units=h2).build(2)
    x = np.random.default_rng(9).normal(size=(B, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    p = params["params"]
    ex = p["experts"]["dense"]
    f = []
    for i in range(e):
        a = _relu(x @ ex["kernel"][:, i * h1 : (i + 1) * h1] + ex["bias"][i * h1 : (i + 1) * h1])
        f.append(_relu(a @ p["expert2_kernel"][i] + p["expert2_bias"][i]))
    wg = p["gates"]["dense"]["kernel"]
    for t in range(2):
        g = _softmax(x @ wg[:, t * e : (t + 1) * e])
        _close(gates[:, t], g)
        _close(preds[:, t], _tower(p["towers"], t, sum(g[:, i : i + 1] * f[i] for i in range(e))))


@pytest.mark.parametrize("name", ["shared_bottom_deep", "mmoe_deep"])
def test_depth_controls_match_ples_parameter_count(name):
    ple = param_count(ModelConfig.of("ple").build(2), d=100)
    n = param_count(ModelConfig.of(name).build(2), d=100)
    assert abs(n - ple) <= 0.15 * ple, (name, n, ple)
    # ... and they are controls only if they are bigger than their one-layer originals.
    base = {"shared_bottom_deep": "shared_bottom", "mmoe_deep": "mmoe"}[name]
    assert n > param_count(ModelConfig.of(base).build(2), d=100)
