"""Tests for the architecture registry (benchmark.models).

Every per-architecture test is parameterized over ``benchmark.models.names()``, so a new
architecture file is covered without editing this file.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark import engine, models
from benchmark.engine import TrainConfig, run_keys
from benchmark.models import ModelConfig, param_count, register
from datagen import get_preset

ARCHS = models.names()
D = 8  # tiny input dimension for everything that runs

# What the paper architectures are known to return; a new architecture only gets the
# generic checks.
KNOWN_GATED = {"mmoe": 8, "omoe": 8, "cgc": 6, "ple": 6}  # name -> E (experts a task sees)
KNOWN_UNGATED = {"shared_bottom", "single_task"}


def _int_fields(name):
    """The positive-integer size fields of an architecture (n_tasks excluded)."""
    cls = models.get(name).cls
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in ("parent", "name", "n_tasks")
        and isinstance(f.default, int)
        and not isinstance(f.default, bool)
    ]


def _apply(name, n_tasks, batch=5, d=D, seed=0, model=None):
    """``(preds, gates)`` of the architecture on random inputs, with random parameters.

    The parameters come from numpy (shapes from ``jax.eval_shape``), not from the module's
    initialisers: JAX's PRNG is slow to compile on CPU, and the checks here hold for any
    parameter values.
    """
    net = model if model is not None else ModelConfig.of(name).build(n_tasks)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d)).astype(np.float32)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x[:1])

    def draw(s):
        fan_in = s.shape[-2] if len(s.shape) >= 2 else 1
        return (rng.normal(size=s.shape) / math.sqrt(fan_in)).astype(np.float32)

    params = jax.tree_util.tree_map(draw, shapes)
    return jax.jit(net.apply)(params, x)


# --------------------------------------------------------------------------------------------
# registry contents
# --------------------------------------------------------------------------------------------


def test_registry_lists_the_paper_architectures():
    assert len(ARCHS) == len(set(ARCHS))
    for name in KNOWN_GATED.keys() | KNOWN_UNGATED:
        assert name in ARCHS


@pytest.mark.parametrize("name", ARCHS)
def test_entry_is_documented_and_buildable_with_defaults(name):
    arch = models.get(name)
    assert arch.name == name
    assert arch.description and arch.paper
    assert issubclass(arch.cls, nn.Module)
    cfg = ModelConfig.of(name)
    assert cfg.label() == name
    assert cfg.build(3).n_tasks == 3


# --------------------------------------------------------------------------------------------
# output shapes and gates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_tasks", [2, 3])
@pytest.mark.parametrize("name", ARCHS)
def test_output_shapes_and_gates(name, n_tasks):
    batch = 5
    preds, gates = _apply(name, n_tasks, batch=batch)
    assert preds.shape == (batch, n_tasks)
    assert np.all(np.isfinite(preds))
    if name in KNOWN_UNGATED:
        assert gates is None
    if name in KNOWN_GATED:
        assert gates is not None
        assert gates.shape == (batch, n_tasks, KNOWN_GATED[name])
    if gates is not None:
        gates = np.asarray(gates)
        assert gates.ndim == 3 and gates.shape[:2] == (batch, n_tasks) and gates.shape[2] >= 1
        assert np.all(gates >= 0)
        np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-5)
        entropy = -(gates * np.log(gates + 1e-12)).sum(-1)
        assert np.all(entropy <= math.log(gates.shape[2]) + 1e-5)


def test_omoe_has_one_gate_for_every_task():
    _, gates = _apply("omoe", 3)
    np.testing.assert_array_equal(gates[:, 0], gates[:, 1])
    np.testing.assert_array_equal(gates[:, 0], gates[:, 2])


def test_mmoe_gates_differ_between_tasks():
    _, gates = _apply("mmoe", 2)
    assert not np.allclose(gates[:, 0], gates[:, 1])


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _relu(z):
    return np.maximum(z, 0.0)


def _params_of(net, x, seed=0):
    """Random parameters of ``net`` (numpy, float64) for inputs like ``x``."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x[:1])
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape) / 3.0, shapes)


def _apply_float32(net, params, x):
    """``net.apply`` in float32 on float64 ``params`` and ``x``: ``(preds, gates)``."""
    params32 = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), params)
    return jax.jit(net.apply)(params32, x.astype(np.float32))


def _tower(tw, k, h):
    """Task k's tower, written out: ReLU hidden layer, then a scalar output. ``(B,)``."""
    t = _relu(h @ tw["hidden_kernel"][k] + tw["hidden_bias"][k])
    return t @ tw["out_kernel"][k, :, 0] + tw["out_bias"][k]


def test_mmoe_matches_the_papers_equations():
    # KDD18 eq. 6-7, written out per expert and per gate: y_k = h^k(sum_i g^k(x)_i f_i(x)),
    # g^k(x) = softmax(W_gk x). Catches a reshape that mixes experts, units or gates up.
    net = ModelConfig.of("mmoe", num_experts=3, expert_units=4, tower_units=5).build(2)
    x = np.random.default_rng(1).normal(size=(6, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    ex, tw = params["params"]["experts"]["dense"], params["params"]["towers"]
    wk = ex["kernel"].reshape(D, 3, 4)
    bk = ex["bias"].reshape(3, 4)
    wg = params["params"]["gates"]["dense"]["kernel"]
    f = [_relu(x @ wk[:, i] + bk[i]) for i in range(3)]  # expert i: (B, 4)
    for k in range(2):
        g = _softmax(x @ wg[:, k * 3 : (k + 1) * 3])  # (B, 3)
        mixed = sum(g[:, i : i + 1] * f[i] for i in range(3))
        np.testing.assert_allclose(gates[:, k], g, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(preds[:, k], _tower(tw, k, mixed), rtol=1e-4, atol=1e-4)


def test_cgc_matches_the_papers_equations():
    # RecSys 2020 eq. 2-4: task k's gate mixes its own experts followed by the shared ones.
    net = ModelConfig.of("cgc", task_experts=2, shared_experts=3, expert_units=4).build(2)
    x = np.random.default_rng(3).normal(size=(6, D))
    params = _params_of(net, x)
    preds, gates = _apply_float32(net, params, x)
    ex, tw = params["params"]["extraction"], params["params"]["towers"]
    sh = ex["shared_experts"]["dense"]
    shared = _relu(x @ sh["kernel"] + sh["bias"]).reshape(6, 3, 4)
    for k in range(2):
        own = _relu(x @ ex["task_expert_kernel"][k] + ex["task_expert_bias"][k]).reshape(6, 2, 4)
        g = _softmax(x @ ex["task_gate_kernel"][k])  # (B, 2 + 3)
        mixed = np.einsum("be,beh->bh", g, np.concatenate([own, shared], axis=1))
        np.testing.assert_allclose(gates[:, k], g, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(preds[:, k], _tower(tw, k, mixed), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# every architecture learns
# --------------------------------------------------------------------------------------------


def _train_many_unoptimized(name, n_runs, p, lr, *, spec, cfg):
    """What ``train_many(run_keys(0, n_runs), p, lr, ..., devices=1)`` computes, with the
    engine's own compiled trainer, but built at XLA optimisation level 0.

    On a loaded 2-core CPU, optimising these programs takes ~100 s for the six paper
    architectures (PLE alone ~30 s); level 0 takes about a third of that, and whether the
    loss falls does not depend on it.
    """
    fn = engine.trainer(ModelConfig.of(name), spec, cfg, 1)
    keys = run_keys(0, n_runs)
    p = jnp.full((n_runs,), p, jnp.float32)
    lr = jnp.full((n_runs,), lr, jnp.float32)
    compiled = fn.lower(keys, p, lr).compile({"xla_backend_optimization_level": 0})
    return jax.tree_util.tree_map(np.asarray, compiled(keys, p, lr))


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_training_lowers_test_mse(name):
    spec = get_preset("kdd18", d=D)
    cfg = TrainConfig(steps=200, batch_size=16, eval_every=100, n_test=64)
    out = _train_many_unoptimized(name, 2, 0.5, 1e-2, spec=spec, cfg=cfg)
    curves = out["curves"]
    assert curves.shape == (2, cfg.n_evals, 2)
    assert not out["diverged"].any()
    assert np.all(np.isfinite(curves))
    initial, final = curves[:, 0], curves[:, -1]
    # Every task improves on average over runs, and the overall MSE drops by >= 5%.
    assert np.all(final.mean(0) < initial.mean(0)), (initial, final)
    assert final.mean() < 0.95 * initial.mean(), (initial, final)


# --------------------------------------------------------------------------------------------
# paper arithmetic (KDD18 section 5.1)
# --------------------------------------------------------------------------------------------


def _kernel_sizes(net, d=100):
    """``{path: size}`` of every kernel of ``net`` built for inputs of dimension ``d``."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, d)))
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): v.size
        for path, v in flat
        if "kernel" in str(path[-1])
    }


def test_shared_bottom_width_solves_the_papers_budget_equation():
    # KDD18 section 5.1 counts experts and towers only: MMoE's expert kernels plus its tower
    # hidden kernels. Shared-Bottom gets the same count, d * h + h * t * K = that budget,
    # which fixes its bottom width h. Both sides are read off the built models.
    mmoe = ModelConfig.of("mmoe").build(2)
    sb = ModelConfig.of("shared_bottom").build(2)
    mk = _kernel_sizes(mmoe)
    budget = sum(v for p, v in mk.items() if p.startswith("params/experts/"))
    budget += mk["params/towers/hidden_kernel"]
    t = sb.tower_units
    h = round(budget / (100 + t * 2))
    assert sb.bottom_units == h, (budget, t, h)
    sk = _kernel_sizes(sb)
    counted = sum(v for p, v in sk.items() if "out_kernel" not in p)
    assert counted == 100 * h + h * t * 2
    assert abs(counted - budget) <= 100 + t * 2  # within one unit of width


def test_shared_bottom_default_width_is_113():
    cls = models.get("shared_bottom").cls
    assert {f.name: f.default for f in dataclasses.fields(cls)}["bottom_units"] == 113
    assert ModelConfig.of("shared_bottom").build(2).bottom_units == 113


def test_mmoe_expert_and_tower_kernels_count_13056():
    net = ModelConfig.of("mmoe").build(2)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 100)))
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    by_path = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in flat}
    experts = [
        v.size for p, v in by_path.items() if p.startswith("params/experts/") and "kernel" in p
    ]
    towers = [v.size for p, v in by_path.items() if p == "params/towers/hidden_kernel"]
    assert len(experts) == 1 and len(towers) == 1, sorted(by_path)
    assert experts[0] + towers[0] == 13056
    # The remainder is biases, gates and output units only.
    assert param_count(net, d=100) == 13056 + 128 + 100 * 16 + 2 * 8 + 2 * 8 + 2


def test_shared_bottom_and_mmoe_budgets_match_within_15_percent():
    sb = param_count(ModelConfig.of("shared_bottom").build(2), d=100)
    mmoe = param_count(ModelConfig.of("mmoe").build(2), d=100)
    assert abs(sb - mmoe) <= 0.15 * max(sb, mmoe), (sb, mmoe)


def test_param_count_follows_overrides_and_d():
    net = ModelConfig.of("shared_bottom", bottom_units=16).build(2)
    # bottom d*16 + 16, towers 2*(16*8 + 8 + 8*1 + 1)
    assert param_count(net, d=10) == 10 * 16 + 16 + 2 * (16 * 8 + 8 + 8 + 1)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_unknown_architecture_lists_known_names():
    with pytest.raises(ValueError, match="no_such_arch") as err:
        models.get("no_such_arch")
    for name in ARCHS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="known architectures"):
        ModelConfig.of("no_such_arch")


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_size_names_the_field(name, value):
    fields = _int_fields(name)
    assert fields, f"{name} has no integer size field"
    for field in fields:
        with pytest.raises(ValueError, match=rf"{name}\.{field}\b"):
            ModelConfig.of(name, **{field: value})


def test_mmoe_zero_experts():
    with pytest.raises(ValueError, match="num_experts"):
        ModelConfig.of("mmoe", num_experts=0)


@pytest.mark.parametrize("name", ARCHS)
def test_non_positive_task_count(name):
    with pytest.raises(ValueError, match="n_tasks"):
        ModelConfig.of(name).build(0)


@pytest.mark.parametrize("name", ARCHS)
def test_unknown_override_is_rejected(name):
    with pytest.raises(ValueError, match="bogus_units") as err:
        ModelConfig.of(name, bogus_units=4)
    for field in _int_fields(name):
        assert field in str(err.value)  # lists what it does have


def test_config_is_hashable_and_order_independent():
    a = ModelConfig.of("mmoe", num_experts=4, expert_units=8)
    b = ModelConfig.of("mmoe", expert_units=8, num_experts=4)
    assert a == b and hash(a) == hash(b)
    assert a.label() == "mmoe(expert_units=8, num_experts=4)"
    assert a.build(2).num_experts == 4


# --------------------------------------------------------------------------------------------
# registering a new architecture
# --------------------------------------------------------------------------------------------


def test_register_makes_a_new_architecture_available():
    name = "dummy_test_arch"
    assert name not in ARCHS
    try:

        @register(name, description="a linear map, for the test", paper="none")
        class Dummy(nn.Module):
            n_tasks: int = 2
            units: int = 4

            @nn.compact
            def __call__(self, x):
                h = nn.relu(nn.Dense(self.units)(x))
                return nn.Dense(self.n_tasks)(h), None

        assert models.get(name).cls is Dummy
        assert name in models.names()
        net = ModelConfig.of(name, units=3).build(3)
        preds, gates = _apply(name, 3, batch=4, model=net)
        assert preds.shape == (4, 3) and gates is None
        with pytest.raises(ValueError, match="units"):
            ModelConfig.of(name, units=0)

        # Re-registering the same class is harmless; a different class under the name is not.
        register(name, description="again", paper="none")(Dummy)
        with pytest.raises(ValueError, match="registered twice"):

            @register(name, description="clash", paper="none")
            class Other(Dummy):
                pass

    finally:
        models._REGISTRY.pop(name, None)
    assert name not in models.names()
    assert models.names() == ARCHS


@pytest.mark.parametrize("value", [2.5, True, "8"])
def test_sizes_must_be_integers(value):
    with pytest.raises(ValueError, match=r"mmoe\.num_experts must be a positive integer"):
        ModelConfig.of("mmoe", num_experts=value)


def test_readme_worked_example_registers_and_runs():
    """The README's 'one file' example, executed as a module of benchmark.models."""
    import re
    import sys
    import types
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"`benchmark/models/wide_mmoe\.py`:\n\n```python\n(.*?)```", readme, re.S)
    assert code, "the README lost its worked example"
    name = "benchmark.models._readme_wide_mmoe"
    module = types.ModuleType(name)
    module.__package__ = "benchmark.models"
    sys.modules[name] = module
    try:
        exec(compile(code.group(1), name, "exec"), module.__dict__)
        assert "wide_mmoe" in models.names()
        net = ModelConfig.of("wide_mmoe").build(2)
        x = jnp.ones((3, 100))
        preds, gates = net.apply(net.init(jax.random.key(0), x), x)
        assert preds.shape == (3, 2) and gates.shape == (3, 2, 16)
        np.testing.assert_allclose(np.asarray(gates).sum(-1), 1.0, atol=1e-5)
    finally:
        models._REGISTRY.pop("wide_mmoe", None)
        sys.modules.pop(name, None)
