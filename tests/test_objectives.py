"""Tests for the objective registry (benchmark.objectives).

The registry-wide tests are parameterised over ``objectives.names()``, so a new objective
file is covered without editing this file. Each built-in objective also has one step
checked against its paper's equations, written out in numpy on a small hand-made example.
"""

import dataclasses
import functools
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize

from benchmark import models, objectives
from benchmark.models import ModelConfig

NAMES = objectives.names()
KEY = jax.random.key(0)


# ---------------------------------------------------------------------------------------
# A hand-made multi-task example: 3 shared entries, and a tower of 2 entries per task.


def toy_grads(shared_rows, seed=0):
    """``(task_grads, shared_mask)`` with the given ``(K, 3)`` shared gradients; task k's
    tower gradient is non-zero in row k only."""
    g = np.asarray(shared_rows, np.float32)
    k = g.shape[0]
    rng = np.random.default_rng(seed)
    towers = np.zeros((k, k, 2), np.float32)
    for i in range(k):
        towers[i, i] = rng.normal(size=2)
    grads = {"shared": jnp.asarray(g), "towers": jnp.asarray(towers)}
    mask = {"shared": True, "towers": np.zeros((k, 2), bool)}
    return grads, mask


@functools.cache
def _jitted_step(obj):
    return jax.jit(obj.step)


def step(obj, grads, losses, state=None, key=KEY, mask=None):
    """One jitted ``obj.step`` (the mask passes as an argument here: any values work)."""
    k = len(losses)
    state = obj.init(k) if state is None else state
    losses = jnp.asarray(losses, jnp.float32)
    d, state, info = _jitted_step(obj)(grads, losses, state, key, mask)
    return jax.tree_util.tree_map(np.asarray, d), state, jax.tree_util.tree_map(np.asarray, info)


def np_adam(theta, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    mh, vh = m / (1 - b1**t), v / (1 - b2**t)
    return theta - lr * mh / (np.sqrt(vh) + eps), m, v


# ---------------------------------------------------------------------------------------
# A tiny differentiable model: preds[:, k] = (x W) . t_k, W shared, t_k task k's tower.


class Toy:
    def __init__(self, n_tasks=3, d=5, h=4):
        self.k, self.d, self.h = n_tasks, d, h

    def init(self, key, x):
        k1, k2 = jax.random.split(key)
        return {
            "shared": {"kernel": jax.random.normal(k1, (self.d, self.h)) / np.sqrt(self.d)},
            "towers": jax.random.normal(k2, (self.k, self.h)) / np.sqrt(self.h),
        }

    def apply(self, params, x):
        return (x @ params["shared"]["kernel"]) @ params["towers"].T, None


def toy_rep_fn(params, x, y, delta):
    """The toy's :func:`objectives.representation_losses`: Z = x W is its representation."""
    z = x @ params["shared"]["kernel"]
    zs = jax.lax.stop_gradient(z) if delta is None else jax.lax.stop_gradient(z) + delta
    return jnp.mean((zs @ params["towers"].T - y) ** 2, axis=0), z


def toy_data(key, n_tasks=3, d=5, b=32):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (b, d))
    w = jax.random.normal(kw, (d, n_tasks))
    w = w.at[:, 1].set(-w[:, 0] + 0.3 * w[:, 1])  # tasks 0 and 1 conflict
    return x, x @ w


def train(obj, key, n_tasks=3, steps=40, lr=0.05):
    """Adam on the toy with ``obj``: ``(first losses, last losses, final state, weights)``."""
    net = Toy(n_tasks)
    mask = objectives.shared_mask_at_init(net, net.d)
    loss_fn = objectives.per_task_mse(net)
    opt = optax.adam(lr)
    k_init, k_data, k_obj = jax.random.split(key, 3)
    x, y = toy_data(k_data, n_tasks)
    params = net.init(k_init, x)

    def body(carry, i):
        params, opt_state, state = carry
        rep_fn = toy_rep_fn if obj.needs_representation else None
        d, losses, state, info = objectives.direction(
            obj, loss_fn, params, x, y, state, jax.random.fold_in(k_obj, i), mask, rep_fn
        )
        updates, opt_state = opt.update(d, opt_state, params)
        params = optax.apply_updates(params, updates)
        if obj.needs_new_losses:
            state = obj.after_step(state, loss_fn(params, x, y))
        return (params, opt_state, state), (losses, info["weights"])

    carry = (params, opt.init(params), obj.init(n_tasks))
    (_, _, state), (losses, weights) = jax.lax.scan(body, carry, jnp.arange(steps))
    return losses[0], losses[-1], state, weights


# ---------------------------------------------------------------------------------------
# The registry


def test_every_module_registers_an_objective():
    pkg = objectives.__path__
    modules = [m.name for m in pkgutil.iter_modules(pkg) if not m.name.startswith("_")]
    registered = {type(objectives.get(n)).__module__.rsplit(".", 1)[1] for n in NAMES}
    assert set(modules) == registered
    assert NAMES[0] == "equal"
    expected = {"equal", "uncertainty", "gradnorm", "pcgrad", "mgda", "cagrad", "famo", "rlw"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_entry_cites_its_paper(name):
    obj = objectives.get(name)
    assert obj.name == name and obj.description and obj.paper
    module = importlib.import_module(type(obj).__module__)
    surname = obj.paper.split()[0].rstrip(",")
    assert surname in module.__doc__, f"{name}: the module docstring must cite {obj.paper}"
    assert dataclasses.is_dataclass(obj) and hash(obj) == hash(objectives.get(name))
    assert objectives.describe()[name]["paper"] == obj.paper


def test_get_rejects_unknown_names_and_fields():
    with pytest.raises(ValueError, match="unknown objective 'nope'.*pcgrad"):
        objectives.get("nope")
    with pytest.raises(ValueError, match="no hyper-parameter bogus"):
        objectives.get("gradnorm", bogus=1)
    assert objectives.get("gradnorm", alpha=0.12).alpha == 0.12


def test_register_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):

        @objectives.register("pcgrad", description="x", paper="y")
        @dataclasses.dataclass(frozen=True)
        class Other(objectives.Objective):
            pass


# ---------------------------------------------------------------------------------------
# Registry-wide behaviour


@pytest.mark.parametrize("name", NAMES)
def test_state_shapes_are_stable(name):
    obj = objectives.get(name)
    grads, mask = toy_grads([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0], [0.5, 0.5, -2.0]])
    state = obj.init(3)
    spec = jax.tree_util.tree_map(lambda a: (jnp.shape(a), jnp.result_type(a)), state)
    for i in range(3):
        _, state, info = step(obj, grads, [1.0, 2.0 - 0.3 * i, 0.5], state, jax.random.key(i), mask)
        if obj.needs_new_losses:
            state = obj.after_step(state, jnp.array([0.9, 1.5, 0.4]))
        assert jax.tree_util.tree_map(lambda a: (jnp.shape(a), jnp.result_type(a)), state) == spec
        assert info["weights"].shape == (3,)
        assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(state))


@pytest.mark.parametrize("name", NAMES)
def test_trains_under_jit_and_vmap_over_runs(name):
    """Adam with the objective inside lax.scan, jit(vmap) over 3 runs: finite, and every
    run's mean loss falls on a small regression with two conflicting tasks."""
    obj = objectives.get(name)
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(3))
    first, last, state, weights = jax.jit(jax.vmap(lambda k: train(obj, k)))(keys)
    assert first.shape == last.shape == (3, 3) and weights.shape == (3, 40, 3)
    for leaf in jax.tree_util.tree_leaves((first, last, state, weights)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(np.asarray(last.mean(-1)) < 0.5 * np.asarray(first.mean(-1)))
    # vmap changes nothing: run 1 alone gives run 1's numbers
    alone = jax.jit(lambda k: train(obj, k))(keys[1])
    np.testing.assert_allclose(alone[1], last[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_one_pass_weights_match_the_step(name):
    """A loss-weighting objective's one-backward-pass form equals its K-gradient step."""
    obj = objectives.get(name)
    if obj.needs_task_grads or obj.needs_representation:
        pytest.skip("needs the per-task gradients on the parameters or the representation")
    net = Toy()
    x, y = toy_data(KEY)
    params = net.init(jax.random.key(3), x)
    loss_fn = objectives.per_task_mse(net)
    mask = objectives.shared_mask(net, params, np.asarray(x))
    state = obj.init(3)
    losses, grads = objectives.task_grads(loss_fn, params, x, y)
    d_step, s_step, _ = obj.step(grads, losses, state, KEY, mask)
    d_one, l_one, s_one, _ = objectives.direction(obj, loss_fn, params, x, y, state, KEY, mask)
    np.testing.assert_allclose(l_one, losses, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves((d_one, s_one)),
                    jax.tree_util.tree_leaves((d_step, s_step)), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Helpers: per-task gradients and the shared mask


def test_task_grads_are_the_jacobian():
    net = Toy()
    x, y = toy_data(KEY)
    params = net.init(jax.random.key(3), x)
    loss_fn = objectives.per_task_mse(net)
    losses, grads = objectives.task_grads(loss_fn, params, x, y)
    jac = jax.jacrev(loss_fn)(params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(jac), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, loss_fn(params, x, y), rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_gram_and_combine_on_mixed_masks(k):
    """Leaves entirely shared, entirely own and mixed; traced masks take the general path."""
    rng = np.random.default_rng(k)
    grads = {
        "all": rng.normal(size=(k, 4, 3)),
        "none": rng.normal(size=(k, 5)),
        "mixed": rng.normal(size=(k, 2, 6)),
    }
    mask = {
        "all": np.ones((4, 3), bool),
        "none": np.zeros(5, bool),
        "mixed": rng.random((2, 6)) < 0.5,
    }
    grads = {n: g.astype(np.float32) for n, g in grads.items()}
    flat = np.concatenate([(g * mask[n]).reshape(k, -1) for n, g in grads.items()], axis=1)
    c_shared, c_own = rng.normal(size=k), rng.normal(size=k)
    for wrap in (lambda f: f, jax.jit):  # a concrete mask, then a traced one
        gg = wrap(objectives.gram)(grads, mask)
        np.testing.assert_allclose(gg, flat @ flat.T, rtol=1e-5, atol=1e-5)
        out = wrap(objectives.combine)(grads, mask, c_shared, c_own)
        for n, g in grads.items():
            want = np.where(mask[n], np.tensordot(c_shared, g, 1), np.tensordot(c_own, g, 1))
            np.testing.assert_allclose(out[n], want, rtol=1e-5, atol=1e-5)


def _mask_of(name, n_tasks=2, d=8):
    net = ModelConfig.of(name).build(n_tasks)
    x = np.random.default_rng(0).normal(size=(256, d)).astype(np.float32)
    return objectives.shared_mask(net, net.init(jax.random.key(0), x[:1]), x)


def test_shared_mask_of_the_paper_models():
    sb = _mask_of("shared_bottom")["params"]
    assert sb["bottom"]["kernel"].all() and sb["bottom"]["bias"].all()
    assert not any(v.any() for v in jax.tree_util.tree_leaves(sb["towers"]))
    mmoe = _mask_of("mmoe", n_tasks=3)["params"]
    assert mmoe["experts"]["dense"]["kernel"].all()
    assert not mmoe["gates"]["dense"]["kernel"].any()  # one column block per task
    assert not any(v.any() for v in jax.tree_util.tree_leaves(mmoe["towers"]))
    single = _mask_of("single_task")
    assert not any(v.any() for v in jax.tree_util.tree_leaves(single))


def test_shared_mask_needs_concrete_inputs():
    net = Toy()
    x = np.ones((4, 5), np.float32)
    params = net.init(KEY, x)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda p: objectives.shared_mask(net, p, x))(params)

    def inside(p):  # while tracing: computed eagerly from the architecture alone
        m = objectives.shared_mask_at_init(net, 5)
        return jax.tree_util.tree_map(lambda a, b: a * jnp.asarray(b), p, m)

    out = jax.jit(jax.vmap(inside))(jax.tree_util.tree_map(lambda a: a[None], params))
    assert np.all(np.asarray(out["towers"]) == 0) and np.all(out["shared"]["kernel"] != 0)


# ---------------------------------------------------------------------------------------
# Each objective against its paper, in numpy

SHARED_CONFLICT = [[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]  # g1 . g2 = -1 < 0
SHARED_AGREE = [[1.0, 0.0, 1.0], [0.25, 2.0, 0.0]]  # g1 . g2 = 0.25 > 0


def _towers_mean(grads):
    return np.asarray(grads["towers"]).mean(0)


def test_equal_is_the_mean_gradient():
    net = Toy(n_tasks=2)
    x, y = toy_data(KEY, n_tasks=2)
    params = net.init(jax.random.key(3), x)

    def engine_loss(p):  # benchmark.engine.train_run's loss
        preds, _ = net.apply(p, x)
        return jnp.mean((preds - y) ** 2)

    losses, grads = objectives.task_grads(objectives.per_task_mse(net), params, x, y)
    mask = objectives.shared_mask(net, params, np.asarray(x))
    d, _, info = objectives.get("equal").step(grads, losses, {}, KEY, mask)
    want = jax.grad(engine_loss)(params)
    for a, b in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(info["weights"], [0.5, 0.5])


def _np_pcgrad(g, orders):
    pc = g.copy()
    for i in range(len(g)):
        for j in orders[i]:
            dot = pc[i] @ g[j]
            if dot < 0:
                pc[i] = pc[i] - dot / (g[j] @ g[j]) * g[j]
    return pc.sum(0) / len(g)


def test_pcgrad_projects_conflicting_gradients():
    g = np.asarray(SHARED_CONFLICT, np.float32)
    grads, mask = toy_grads(g)
    d, _, _ = step(objectives.get("pcgrad"), grads, [1.0, 1.0], mask=mask)
    g1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    g2 = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    np.testing.assert_allclose(d["shared"], (g1 + g2) / 2, rtol=1e-6)
    assert g1 @ g[1] == pytest.approx(0, abs=1e-6) and g2 @ g[0] == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(d["towers"], _towers_mean(grads), rtol=1e-6)


def test_pcgrad_changes_nothing_without_conflict():
    grads, mask = toy_grads(SHARED_AGREE)
    d, _, _ = step(objectives.get("pcgrad"), grads, [1.0, 1.0], mask=mask)
    e, _, _ = step(objectives.get("equal"), grads, [1.0, 1.0], mask=mask)
    for a, b in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(e), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pcgrad_three_tasks_in_the_random_order():
    g = np.array([[1.0, 0.0, 0.0], [-0.8, 1.0, 0.0], [-0.5, -1.0, 0.3]], np.float32)
    grads, mask = toy_grads(g)
    pc = objectives.get("pcgrad")
    results = set()
    for seed in range(12):
        key = jax.random.key(seed)
        orders = np.asarray(pc.orders(key, 3))
        for i, row in enumerate(orders):
            assert sorted(row) == [j for j in range(3) if j != i]
        d, _, _ = step(pc, grads, [1.0, 1.0, 1.0], key=key, mask=mask)
        np.testing.assert_allclose(d["shared"], _np_pcgrad(g, orders), rtol=1e-5, atol=1e-7)
        results.add(tuple(np.round(d["shared"], 5)))
    assert len(results) > 1  # the order matters here, and the key changes it


def _np_min_norm(g):
    k = len(g)
    m = g @ g.T
    res = minimize(lambda a: a @ m @ a, np.full(k, 1 / k), method="SLSQP",
                   bounds=[(0, 1)] * k, constraints={"type": "eq", "fun": lambda a: a.sum() - 1},
                   options={"ftol": 1e-14, "maxiter": 500})  # fmt: skip
    return res.x


@pytest.mark.parametrize(
    "rows", [SHARED_CONFLICT, SHARED_AGREE, [[1.0, 0.0, 1.0], [2.0, 0.0, 2.0]]]
)
def test_mgda_two_tasks_closed_form(rows):
    g = np.asarray(rows, np.float64)
    grads, mask = toy_grads(g)
    d, _, info = step(objectives.get("mgda"), grads, [1.0, 1.0], mask=mask)
    a1 = np.clip((g[1] - g[0]) @ g[1] / ((g[0] - g[1]) @ (g[0] - g[1])), 0, 1)
    np.testing.assert_allclose(info["weights"], [a1, 1 - a1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["shared"], a1 * g[0] + (1 - a1) * g[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["towers"], _towers_mean(grads), rtol=1e-6)
    if 0 < a1 < 1:  # the min-norm point: equal progress on both tasks
        assert d["shared"] @ g[0] == pytest.approx(d["shared"] @ g[1], abs=1e-5)


def test_mgda_three_tasks_min_norm_point():
    g = np.array([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.1], [0.1, -0.6, 1.0]])
    grads, mask = toy_grads(g)
    _, _, info = step(objectives.get("mgda"), grads, [1.0, 1.0, 1.0], mask=mask)
    a = _np_min_norm(g)
    w = info["weights"]
    assert w.min() >= 0 and w.sum() == pytest.approx(1, abs=1e-5)
    assert np.sum((w @ g) ** 2) <= np.sum((a @ g) ** 2) + 1e-6
    np.testing.assert_allclose(w, a, atol=2e-3)


def test_mgda_l2_normalisation():
    g = np.asarray(SHARED_CONFLICT) * np.array([[1.0], [5.0]])
    grads, mask = toy_grads(g)
    _, _, info = step(objectives.get("mgda", normalization="l2"), grads, [1.0, 1.0], mask=mask)
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    a1 = np.clip((u[1] - u[0]) @ u[1] / ((u[0] - u[1]) @ (u[0] - u[1])), 0, 1)
    np.testing.assert_allclose(info["alpha"], [a1, 1 - a1], rtol=1e-5)
    np.testing.assert_allclose(info["weights"], np.array([a1, 1 - a1]) / np.linalg.norm(g, axis=1))


# ---------------------------------------------------------------------------------------
# The shared representation and MGDA-UB

REPRESENTED = [n for n in models.names() if models.get(n).representation]


def _flax_example(name, seed=0, b=256):
    net = ModelConfig.of(name).build(2)
    x, y = toy_data(jax.random.key(seed), n_tasks=2, d=12, b=b)
    params = net.init(jax.random.key(seed + 1), x[:1])
    return net, params, x, y


@pytest.mark.parametrize("name", REPRESENTED)
def test_representation_is_where_sharing_ends(name):
    """A registered representation Z: the losses are the model's; the heads' gradients
    (through delta) touch no shared entry; Z's cotangent reaches every shared entry and
    no entry that the heads' gradients reach."""
    net, params, x, y = _flax_example(name)
    rep_fn = objectives.representation_losses(net, models.get(name).representation)
    z_shape = jax.eval_shape(lambda p: rep_fn(p, x, y, None)[1], params).shape
    (losses, z), vjp = jax.vjp(lambda p, d: rep_fn(p, x, y, d), params, jnp.zeros(z_shape))
    np.testing.assert_allclose(losses, objectives.per_task_mse(net)(params, x, y), rtol=1e-6)
    leaves = jax.tree_util.tree_leaves
    shared = [np.asarray(m, bool) & np.ones(np.shape(g), bool)
              for m, g in zip(leaves(objectives.shared_mask(net, params, np.asarray(x))),
                              leaves(params), strict=True)]  # fmt: skip
    no_z = jnp.zeros_like(z)
    heads = [np.zeros(s_.shape, bool) for s_ in shared]
    for k in range(2):
        for i, g in enumerate(leaves(vjp((jnp.eye(2)[k], no_z))[0])):
            assert not np.any(np.asarray(g)[shared[i]])
            heads[i] |= np.asarray(g) != 0
    body = leaves(vjp((jnp.zeros(2), jax.random.normal(KEY, z.shape)))[0])
    assert sum(h.sum() for h in heads) > 0 and sum(s_.sum() for s_ in shared) > 0
    for g, s_, h in zip(body, shared, heads, strict=True):
        assert np.all(np.asarray(g)[s_] != 0) and not np.any(np.asarray(g)[h])


def test_representation_losses_names_a_missing_submodule():
    net, params, x, y = _flax_example("shared_bottom")
    with pytest.raises(ValueError, match="no submodule 'experts'"):
        objectives.representation_losses(net, "experts")(params, x, y, None)


def test_mgda_ub_needs_a_registered_representation():
    from benchmark.protocol import get_profile

    spec = get_profile("smoke").spec(ModelConfig.of("mmoe"), 0.5)
    dataclasses.replace(spec, objective="mgda_ub")  # MMoE has one
    with pytest.raises(ValueError, match="mgda_ub needs an architecture .*shared_bottom.*ple"):
        dataclasses.replace(spec, model=ModelConfig.of("ple"), objective="mgda_ub")


def test_mgda_ub_against_the_paper():
    """Shared-Bottom, one step: alpha is the two-task closed form on the gradients with
    respect to Z = x W + b (Sener & Koltun, section 3.3, written out here with
    jax.jacrev of the heads, independent of the interceptor); the shared entries get
    sum_k alpha_k grad L_k, the towers mean_k grad L_k."""
    net, params, x, y = _flax_example("shared_bottom", seed=3)
    p = params["params"]
    z = x @ p["bottom"]["kernel"] + p["bottom"]["bias"]

    def heads(z):  # the towers on relu(z), written out
        t = p["towers"]
        h = jnp.einsum("bh,khu->bku", jax.nn.relu(z), t["hidden_kernel"]) + t["hidden_bias"]
        preds = jnp.einsum("bku,ku->bk", jax.nn.relu(h), t["out_kernel"][..., 0])
        return jnp.mean((preds + t["out_bias"] - y) ** 2, axis=0)

    np.testing.assert_allclose(heads(z), objectives.per_task_mse(net)(params, x, y), rtol=1e-5)
    g = np.asarray(jax.jacrev(heads)(z)).reshape(2, -1).astype(np.float64)  # (K, B*H)
    a1 = np.clip((g[1] - g[0]) @ g[1] / np.sum((g[0] - g[1]) ** 2), 0, 1)
    alpha = np.array([a1, 1 - a1])
    assert abs(a1 - 0.5) > 0.05  # else the check could not tell MGDA-UB from equal
    losses, full = objectives.task_grads(objectives.per_task_mse(net), params, x, y)
    obj = objectives.get("mgda_ub")
    rep_fn = objectives.representation_losses(net, "bottom")
    mask = objectives.shared_mask(net, params, np.asarray(x))
    d, l_ub, _, info = objectives.direction(obj, None, params, x, y, {}, KEY, mask, rep_fn)
    np.testing.assert_allclose(info["alpha"], alpha, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(l_ub, losses, rtol=1e-6)
    for name in ("kernel", "bias"):
        want = np.tensordot(alpha, np.asarray(full["params"]["bottom"][name]), axes=1)
        np.testing.assert_allclose(d["params"]["bottom"][name], want, rtol=1e-4, atol=1e-7)
    for name, leaf in d["params"]["towers"].items():
        want = np.asarray(full["params"]["towers"][name]).mean(0)
        np.testing.assert_allclose(leaf, want, rtol=1e-4, atol=1e-7)


def test_mgda_ub_under_jit_and_vmap_matches_eager():
    """The interceptor inside jit(vmap) over two MMoE parameter sets gives the eager
    directions (the engine's setting: vmap over runs, inside a compiled scan)."""
    net, params, x, y = _flax_example("mmoe", b=64)
    other = net.init(jax.random.key(9), x[:1])
    obj = objectives.get("mgda_ub")
    rep_fn = objectives.representation_losses(net, "experts")

    def one(p):
        d, _, _, info = objectives.direction(obj, None, p, x, y, {}, KEY, None, rep_fn)
        return d, info["alpha"]

    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, other)
    d_v, a_v = jax.jit(jax.vmap(one))(both)
    for i, p in enumerate((params, other)):
        d_e, a_e = one(p)
        np.testing.assert_allclose(a_v[i], a_e, rtol=1e-5, atol=1e-6)
        for u, v in zip(jax.tree_util.tree_leaves(d_v), jax.tree_util.tree_leaves(d_e),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(u[i], v, rtol=1e-4, atol=1e-7)


def test_a_representation_that_does_not_exist_is_refused(monkeypatch):
    from benchmark.engine import TrainConfig, check

    wrong = dataclasses.replace(models.get("mmoe"), representation="Experts_0")
    monkeypatch.setitem(models._REGISTRY, "mmoe", wrong)
    with pytest.raises(ValueError, match="mmoe: representation='Experts_0': .*no submodule"):
        check(ModelConfig.of("mmoe"), TrainConfig(), objectives.get("mgda_ub"))


def test_mgda_ub_trains_in_the_engine():
    """The engine's trainer: finite on Shared-Bottom and MMoE, and the one-line error on
    an architecture without a representation."""
    from benchmark.engine import TrainConfig, run_keys, train_many
    from datagen import get_preset

    cfg = TrainConfig(steps=6, batch_size=8, eval_every=6, n_test=16)
    kw = dict(task=get_preset("kdd18"), cfg=cfg, objective="mgda_ub")
    for name in ("shared_bottom", "mmoe"):
        out = train_many(run_keys(0, 2), 0.5, 1e-2, model=ModelConfig.of(name), **kw)
        assert np.all(np.isfinite(out["final"]))
    with pytest.raises(ValueError, match="cgc has none"):
        train_many(run_keys(0, 2), 0.5, 1e-2, model=ModelConfig.of("cgc"), **kw)


def _np_cagrad(g, c):
    """The paper's dual, solved by scipy (as the official code), and its direction."""
    k = len(g)
    m = g @ g.T
    g0 = g.mean(0)
    cn = c * np.linalg.norm(g0)

    def f(w):
        return w @ (g @ g0) + cn * np.sqrt(w @ m @ w + 1e-12)

    res = minimize(f, np.full(k, 1 / k), method="SLSQP", bounds=[(0, 1)] * k,
                   constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
                   options={"ftol": 1e-14, "maxiter": 500})  # fmt: skip
    return res.x, f


@pytest.mark.parametrize(
    "rows",
    [SHARED_CONFLICT, SHARED_AGREE, [[1.0, 0.2, 0.0], [-0.5, 1.0, 0.1], [0.1, -0.6, 1.0]],
     [[3.0, 0.0, 0.0], [-1.0, 0.5, 0.0], [0.0, 0.0, 0.2]]],
)  # fmt: skip
def test_cagrad_against_the_dual(rows):
    c = 0.5
    g = np.asarray(rows, np.float64)
    grads, mask = toy_grads(g)
    d, _, info = step(objectives.get("cagrad", c=c), grads, [1.0] * len(g), mask=mask)
    w_star, f = _np_cagrad(g, c)
    w = info["w"].astype(np.float64)
    assert w.min() >= -1e-7 and w.sum() == pytest.approx(1, abs=1e-5)
    assert f(w) <= f(w_star) + 1e-5 * (1 + abs(f(w_star)))
    g0, gw = g.mean(0), w @ g
    expected = (g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw) / (1 + c**2)
    np.testing.assert_allclose(d["shared"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d["towers"], _towers_mean(grads), rtol=1e-6)
    # the primal: on the ball's boundary, and no worse than g0 for the worst task
    raw = d["shared"] * (1 + c**2)
    assert np.linalg.norm(raw - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-4)
    assert (g @ raw).min() >= (g @ g0).min() - 1e-5


def test_cagrad_with_c_zero_is_equal():
    grads, mask = toy_grads(SHARED_CONFLICT)
    d, _, _ = step(objectives.get("cagrad", c=0.0), grads, [1.0, 1.0], mask=mask)
    np.testing.assert_allclose(d["shared"], np.mean(SHARED_CONFLICT, 0), rtol=1e-6)


def test_nash_mtl_orthogonal_gradients_closed_form():
    g = np.array([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # G^T G diagonal: alpha_k = 1/|g_k|
    grads, mask = toy_grads(g)
    d, _, info = step(objectives.get("nash_mtl", max_norm=0.0), grads, [1.0, 1.0], mask=mask)
    np.testing.assert_allclose(info["alpha"], [0.5, 2.0], rtol=1e-5)
    np.testing.assert_allclose(d["shared"], [1.0, 1.0, 0.0], rtol=1e-5)
    towers = np.asarray(grads["towers"])
    np.testing.assert_allclose(d["towers"], 0.5 * towers[0] + 2.0 * towers[1], rtol=1e-5)


def test_nash_mtl_solves_the_bargaining_equation():
    g = np.array([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.1], [0.1, -0.6, 1.0]]) * 0.3
    grads, mask = toy_grads(g)
    obj = objectives.get("nash_mtl")
    state = obj.init(3)
    for _ in range(2):  # warm start from the previous step's solution
        d, state, info = step(obj, grads, [1.0, 1.0, 1.0], state=state, mask=mask)
        alpha = info["alpha"].astype(np.float64)
        assert np.all(alpha > 0)
        m = g @ g.T
        np.testing.assert_allclose(m @ alpha, 1 / alpha, rtol=1e-4)
        assert np.sum((alpha @ g) ** 2) == pytest.approx(3, rel=1e-4)  # ||d||^2 = K
        # clipped to max_norm = 1 on the shared entries
        np.testing.assert_allclose(d["shared"], (alpha @ g) / np.sqrt(3), rtol=1e-4)


def test_gradnorm_weight_update():
    alpha, lr = 1.5, 0.1
    g = np.array([[1.0, 0.0, 1.0], [-1.0, 3.0, 0.0], [0.2, 0.1, 0.3]])
    grads, mask = toy_grads(g)
    towers = np.asarray(grads["towers"])
    obj = objectives.get("gradnorm", alpha=alpha, lr=lr)
    state = obj.init(3)
    w, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    norms = np.linalg.norm(g, axis=1)  # ||g_k|| on the shared entries
    l0 = None
    for t, losses in enumerate([[2.0, 1.0, 1.0], [1.0, 0.9, 0.8], [0.5, 0.8, 0.7]], start=1):
        losses = np.asarray(losses)
        d, state, info = step(obj, grads, losses, state=state, mask=mask)
        # the network's direction uses the weights before this step's update
        np.testing.assert_allclose(d["shared"], (w @ g) / 3, rtol=1e-5)
        np.testing.assert_allclose(d["towers"], np.tensordot(w, towers, 1) / 3, rtol=1e-5)
        l0 = losses if l0 is None else l0
        lt = losses / l0  # inverse training rate
        r = lt / lt.mean()
        gw = w * norms  # G_W^(k) = ||w_k g_k||
        target = gw.mean() * r**alpha  # held constant
        grad_w = np.sign(gw - target) * norms  # d/dw_k sum_i |G_i - target_i|
        w, m, v = np_adam(w, grad_w, m, v, t, lr)
        w = 3 * w / w.sum()  # renormalised to sum to K
        np.testing.assert_allclose(state["weights"], w, rtol=1e-5)
        assert float(state["weights"].sum()) == pytest.approx(3, rel=1e-6)
    assert not np.allclose(w, 1.0)  # the weights moved


def test_uncertainty_weights_and_log_variance_update():
    lr = 0.1
    g = np.array([[1.0, 0.0, 1.0], [-1.0, 3.0, 0.0]])
    grads, mask = toy_grads(g)
    obj = objectives.get("uncertainty", lr=lr)
    state = obj.init(2)

    def nll(s, losses):  # the paper's eq. (7): L / (2 sigma^2) + log sigma, s = log sigma^2
        sigma = np.exp(s / 2)
        return np.sum(losses / (2 * sigma**2) + np.log(sigma))

    s, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    for t, losses in enumerate([[2.0, 0.1], [1.5, 0.1]], start=1):
        losses = np.asarray(losses)
        d, state, info = step(obj, grads, losses, state=state, mask=mask)
        w = 1 / (2 * np.exp(s))  # 1 / (2 sigma^2)
        np.testing.assert_allclose(info["weights"], w, rtol=1e-6)
        np.testing.assert_allclose(d["shared"], w @ g, rtol=1e-5)
        towers = np.asarray(grads["towers"])
        np.testing.assert_allclose(d["towers"], w[0] * towers[0] + w[1] * towers[1], rtol=1e-5)
        h = 1e-5
        grad_s = np.array([(nll(s + h * e, losses) - nll(s - h * e, losses)) / (2 * h)
                           for e in np.eye(2)])  # fmt: skip
        s, m, v = np_adam(s, grad_s, m, v, t, lr)
        np.testing.assert_allclose(state["log_var"], s, rtol=1e-4, atol=1e-6)
    assert s[0] > 0 > s[1]  # the noisier (larger-loss) task gets the larger variance


def _np_famo_logits(xi, prev, new, m, v, t, beta, gamma):
    z = np.exp(xi) / np.exp(xi).sum()
    delta = np.log(prev + 1e-8) - np.log(new + 1e-8)
    jac = np.diag(z) - np.outer(z, z)  # d softmax / d xi
    return np_adam(xi, jac.T @ delta + gamma * xi, m, v, t, beta)


@pytest.mark.parametrize("same_batch", [True, False])
def test_famo_weights_and_logit_update(same_batch):
    beta, gamma = 0.025, 1e-3
    g = np.array([[1.0, 0.0, 1.0], [-1.0, 3.0, 0.0], [0.0, 1.0, 1.0]])
    grads, mask = toy_grads(g)
    obj = objectives.get("famo", same_batch=same_batch)
    assert obj.needs_new_losses == same_batch
    state = obj.init(3)
    xi, m, v, t = np.zeros(3), np.zeros(3), np.zeros(3), 0
    batches = [([2.0, 1.0, 0.5], [1.5, 0.95, 0.5]), ([1.4, 0.9, 0.45], [1.0, 0.9, 0.44]),
               ([0.9, 0.88, 0.4], [0.7, 0.87, 0.39])]  # fmt: skip
    prev = None
    for losses, after in batches:
        losses, after = np.asarray(losses), np.asarray(after)
        if not same_batch and prev is not None:  # delayed: the update uses this batch
            t += 1
            xi, m, v = _np_famo_logits(xi, prev, losses, m, v, t, beta, gamma)
        d, state, info = step(obj, grads, losses, state=state, mask=mask)
        z = np.exp(xi) / np.exp(xi).sum()
        w = (z / losses) / (z / losses).sum()  # c z_k / L_k, c = 1 / sum_k z_k / L_k
        np.testing.assert_allclose(info["weights"], w, rtol=1e-5)
        np.testing.assert_allclose(d["shared"], w @ g, rtol=1e-5)
        if same_batch:
            state = obj.after_step(state, jnp.asarray(after, jnp.float32))
            t += 1
            xi, m, v = _np_famo_logits(xi, losses, after, m, v, t, beta, gamma)
        prev = losses
        np.testing.assert_allclose(state["logits"], xi, rtol=1e-4, atol=1e-7)
    assert np.argmin(xi) == 0  # the fastest-improving task's logit falls


def test_rlw_weights_are_softmax_of_normal_draws():
    g = np.array([[1.0, 0.0, 1.0], [-1.0, 3.0, 0.0], [0.0, 1.0, 1.0]])
    grads, mask = toy_grads(g)
    obj = objectives.get("rlw")
    seen = []
    for seed in range(5):
        key = jax.random.key(seed)
        d, _, info = step(obj, grads, [1.0, 1.0, 1.0], key=key, mask=mask)
        z = np.asarray(jax.random.normal(key, (3,)), np.float64)
        w = np.exp(z) / np.exp(z).sum()
        np.testing.assert_allclose(info["weights"], w, rtol=1e-5)
        np.testing.assert_allclose(d["shared"], w @ g, rtol=1e-5)
        seen.append(info["weights"])
    assert len({tuple(np.round(s, 6)) for s in seen}) == 5
    many = jax.vmap(lambda k: obj.weights(jnp.ones(3), {}, k)[0])(
        jax.random.split(jax.random.key(9), 4000)
    )
    many = np.asarray(many, np.float64)
    np.testing.assert_allclose(many.sum(1), 1, rtol=1e-5)
    assert many.min() > 0
    np.testing.assert_allclose(many.mean(0), 1 / 3, atol=0.02)
    # log(w_0 / w_1) = z_0 - z_1 ~ N(0, 2)
    assert np.var(np.log(many[:, 0] / many[:, 1])) == pytest.approx(2, rel=0.1)


def test_the_engine_trains_an_objective_instance_with_its_hyper_parameters():
    """``objective`` may be an instance: its defaults give the name's numbers, and a changed
    hyper-parameter changes them."""
    from benchmark.engine import TrainConfig, run_keys, train_many
    from benchmark.models import ModelConfig
    from datagen import get_preset

    cfg = TrainConfig(steps=6, batch_size=8, eval_every=6, n_test=16)
    kw = dict(model=ModelConfig.of("shared_bottom"), task=get_preset("kdd18"), cfg=cfg)
    keys = run_keys(0, 2)
    by_name = train_many(keys, 0.5, 1e-2, objective="uncertainty", **kw)["final"]
    same = train_many(keys, 0.5, 1e-2, objective=objectives.get("uncertainty"), **kw)["final"]
    np.testing.assert_array_equal(by_name, same)
    tuned = objectives.get("uncertainty", init_log_var=2.0)
    other = train_many(keys, 0.5, 1e-2, objective=tuned, **kw)["final"]
    assert not np.allclose(other, by_name)


@pytest.mark.parametrize("name", objectives.names())
def test_label_is_the_name_at_the_paper_defaults(name):
    assert objectives.get(name).label() == name


def test_label_names_the_changed_hyper_parameters():
    from benchmark.engine import TrainConfig
    from benchmark.runner import CellResult
    from benchmark.spec import RunSpec
    from datagen import get_preset

    assert objectives.get("gradnorm", alpha=0.5).label() == "gradnorm(alpha=0.5)"
    assert objectives.get("gradnorm", alpha=1.5).label() == "gradnorm"
    base = dict(model=ModelConfig.of("mmoe"), task=get_preset("kdd18"), corr=0.5, lr=1e-3)
    base["train"] = TrainConfig(steps=4, batch_size=8, eval_every=2, n_test=16)
    default = RunSpec(objective="gradnorm", **base)
    tuned = RunSpec(objective=objectives.get("gradnorm", alpha=0.5), **base)
    assert (default.objective_label, tuned.objective_label) == ("gradnorm", "gradnorm(alpha=0.5)")
    # Readers group by the label; a record written without one falls back to the name.
    assert CellResult({"objective": "famo"}, {}).objective == "famo"
    tuned_meta = {"objective": "gradnorm", "objective_label": "gradnorm(alpha=0.5)"}
    assert CellResult(tuned_meta, {}).objective == "gradnorm(alpha=0.5)"
