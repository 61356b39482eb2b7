"""Tests for the training engine (benchmark.engine).

Compiling is the slow part on CPU (10-30 s a program on a loaded 2-core machine), so the
tests share few programs: MMoE on d = 8 with 20 steps for 3 runs (``base``) and for 1 run;
Shared-Bottom with a fixed training set and K = 3 for 2 runs (``fixed``); and a 2-device
child process. Most tests reuse them with other keys, p or lr, which never recompiles.
"""

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark import engine
from benchmark.engine import LR_GRID, TrainConfig, run_keys, select_lr, train_many
from benchmark.models import ModelConfig
from benchmark.runner import ARRAY_KEYS, OPTIONAL_KEYS
from datagen import get_preset

ROOT = Path(__file__).resolve().parents[1]
SPEC = get_preset("kdd18", d=8)
MODEL = ModelConfig.of("mmoe")
CFG = TrainConfig(steps=20, batch_size=16, eval_every=10, n_test=64)
# The second program: a fixed training set, K = 3 and an ungated model, in one compilation.
FIXED_MODEL = ModelConfig.of("shared_bottom")
FIXED_CFG = TrainConfig(steps=20, batch_size=16, eval_every=5, n_test=64, n_train=32, n_tasks=3)
# Per-run p and lr for 4 runs; the shared 3-run fixture uses the first three.
P4 = (0.1, 0.5, 0.9, -0.4)
LR4 = (1e-3, 1e-2, 3e-3, 1e-2)
P3, LR3 = P4[:3], LR4[:3]
TOL = {"rtol": 1e-4, "atol": 1e-6}


def _train(keys, p, lr, *, model=MODEL, cfg=CFG, devices=1, group="auto"):
    return train_many(keys, p, lr, model=model, task=SPEC, cfg=cfg, devices=devices, group=group)


def _runs(out, runs):
    """The arrays of some runs of a result."""
    return {k: out[k][runs] for k in ARRAY_KEYS}


def _assert_close(a, b):
    for k in ARRAY_KEYS:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **TOL)


def _run_child(script: str, **env_vars) -> None:
    """Run ``script`` in a fresh CPU-only Python process with extra environment variables."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def base():
    """The shared 3-run result: keys run_keys(0, 3), per-run p and lr."""
    return _train(run_keys(0, 3), P3, LR3)


# --------------------------------------------------------------------------------------------
# vmapping, determinism, keys
# --------------------------------------------------------------------------------------------


def test_result_layout(base):
    assert set(base) == set(ARRAY_KEYS) | set(OPTIONAL_KEYS) | {"wall_s"}
    assert base["curves"].shape == (3, CFG.n_evals, 2)
    assert base["grad_cosine"].shape == (3, CFG.n_evals) and base["expert_cosine"].shape == (3,)
    assert np.all(np.abs(base["grad_cosine"]) <= 1 + 1e-5)
    assert np.all((base["expert_cosine"] > -1) & (base["expert_cosine"] <= 1 + 1e-5))
    assert base["final"].shape == (3, 2)
    assert base["diverged"].shape == (3,) and base["diverged"].dtype == bool
    assert not base["diverged"].any()
    np.testing.assert_array_equal(base["final"], base["curves"][:, -1])
    assert base["wall_s"] > 0


def test_vmapped_runs_equal_single_runs(base):
    keys = run_keys(0, 3)
    for i in range(3):
        single = _train(keys[i : i + 1], P3[i], LR3[i])
        _assert_close(single, _runs(base, slice(i, i + 1)))


def test_same_keys_same_numbers(base):
    again = _train(run_keys(0, 3), P3, LR3)
    for k in ARRAY_KEYS:
        np.testing.assert_array_equal(again[k], base[k], err_msg=k)


def test_different_keys_different_numbers(base):
    other = _train(run_keys(1, 3), P3, LR3)
    assert not np.allclose(other["curves"], base["curves"])
    # Runs of one call differ from each other too (same p and lr, distinct keys).
    same_setting = _train(run_keys(0, 3), 0.5, 1e-2)
    assert not np.allclose(same_setting["curves"][0], same_setting["curves"][1])


def test_run_keys_do_not_depend_on_how_many_are_drawn():
    whole = jax.random.key_data(run_keys(7, 5))
    tail = jax.random.key_data(run_keys(7, 3, start=2))
    np.testing.assert_array_equal(whole[2:], tail)
    assert not np.array_equal(whole[0], whole[1])


# --------------------------------------------------------------------------------------------
# groups: a device's runs train in vmapped groups, one group after the other
# --------------------------------------------------------------------------------------------


def test_grouping_keeps_run_order_and_pads():
    """5 runs in groups of 2: 3 groups of 2 (one padding run), results in run order."""

    def fn(key, p, lr):
        return {"x": p * 2 + lr, "k": jax.random.key_data(key)[0], "empty": jnp.zeros((2, 0))}

    keys = run_keys(0, 5)
    p = jnp.arange(5.0)
    lr = jnp.arange(5.0) / 10
    grouped = engine._grouped(fn, 2)
    out = grouped(keys, p, lr)
    np.testing.assert_allclose(out["x"], p * 2 + lr)
    np.testing.assert_array_equal(out["k"], jax.random.key_data(keys)[:, 0])
    assert out["empty"].shape == (5, 2, 0)
    # The groups really run one after the other: a scan of 3 iterations over groups of 2.
    jaxpr = str(jax.make_jaxpr(grouped)(keys, p, lr))
    assert "scan" in jaxpr and "length=3" in jaxpr
    # No grouping (None) or a group as large as the runs: one vmap, no scan.
    for group in (None, 5):
        assert "scan" not in str(jax.make_jaxpr(engine._grouped(fn, group))(keys, p, lr))


def test_grouped_runs_match_one_group(base):
    """Training 3 runs in groups of 2 (with padding) gives the numbers of one group of 3."""
    grouped = _train(run_keys(0, 3), P3, LR3, group=2)
    _assert_close(grouped, base)


@pytest.mark.parametrize("group", [0, -3, 2.5, "all"])
def test_bad_group_is_rejected(group):
    with pytest.raises(ValueError, match="group must be a positive integer"):
        _train(run_keys(0, 2), 0.5, 1e-3, group=group)


# --------------------------------------------------------------------------------------------
# compilation
# --------------------------------------------------------------------------------------------

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(scope="module")
def fixed():
    """A second program: fixed training set, K = 3, ungated (Shared-Bottom), 2 runs.

    Its first call is recorded by a compile listener, so the recompilation test knows its
    detectors see a compilation when there is one.
    """
    events = []

    def listener(event, duration, **kwargs):
        if event in (_TRACE, _COMPILE):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        out = _train(run_keys(3, 2), 0.2, 1e-3, model=FIXED_MODEL, cfg=FIXED_CFG)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return out, events


def test_new_p_and_lr_do_not_recompile(fixed):
    first, first_events = fixed
    fn = engine.trainer(FIXED_MODEL, SPEC, FIXED_CFG, 1)
    # The detectors saw the first compilation (so they can see a second one).
    assert _TRACE in first_events and _COMPILE in first_events
    assert fn._cache_size() == 1
    misses = engine._compiled_for.cache_info().misses
    events = []

    def listener(event, duration, **kwargs):
        if event in (_TRACE, _COMPILE):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        keys = run_keys(3, 2)
        second = _train(keys, -0.4, 5e-3, model=FIXED_MODEL, cfg=FIXED_CFG)  # new scalars
        third = _train(  # per-run values
            keys, np.array([0.3, 0.8]), np.array([2e-3, 1e-2]), model=FIXED_MODEL, cfg=FIXED_CFG
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []
    assert fn._cache_size() == 1
    assert engine._compiled_for.cache_info().misses == misses
    # The new p and lr were really used.
    assert not np.allclose(first["curves"][:, 1:], second["curves"][:, 1:])
    assert not np.allclose(second["curves"][:, 1:], third["curves"][:, 1:])


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------

_TWO_DEVICE_SCRIPT = """
import jax
import numpy as np
from benchmark import engine
from benchmark.engine import TrainConfig, run_keys, train_many
from benchmark.models import ModelConfig
from datagen import get_preset

assert jax.device_count() == 2, jax.devices()
spec = get_preset("kdd18", d={d})
model = ModelConfig.of("mmoe")
cfg = TrainConfig(**{cfg})
out4 = train_many(run_keys(0, 4), {p4}, {lr4}, model=model, task=spec, cfg=cfg)
out3 = train_many(run_keys(0, 3), {p3}, {lr3}, model=model, task=spec, cfg=cfg)
# The runs were sharded over both devices.
fn = engine.trainer(model, spec, cfg, 2)
raw = fn(run_keys(0, 4), np.float32({p4}), np.float32({lr4}))
assert len(raw["final"].sharding.device_set) == 2, raw["final"].sharding
for tag, out in (("4", out4), ("3", out3)):
    for key in {keys}:
        np.save("{out}/" + tag + "_" + key + ".npy", out[key])
"""


def test_two_devices_match_one(base, tmp_path):
    script = _TWO_DEVICE_SCRIPT.format(
        d=SPEC.d,
        cfg=CFG.to_dict(),
        p4=list(P4),
        lr4=list(LR4),
        p3=list(P3),
        lr3=list(LR3),
        keys=ARRAY_KEYS,
        out=tmp_path,
    )
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    _run_child(script, XLA_FLAGS=flags)

    # One device: runs 0-2 are the shared fixture, run 3 a single run (a run's numbers do
    # not depend on how many runs share the call: test_vmapped_runs_equal_single_runs).
    last = _train(run_keys(0, 4)[3:], P4[3], LR4[3])
    one_dev4 = {k: np.concatenate([base[k], last[k]]) for k in ARRAY_KEYS}
    two_dev4 = {k: np.load(tmp_path / f"4_{k}.npy") for k in ARRAY_KEYS}
    two_dev3 = {k: np.load(tmp_path / f"3_{k}.npy") for k in ARRAY_KEYS}
    assert two_dev4["curves"].shape == (4, CFG.n_evals, 2)
    assert two_dev3["curves"].shape == (3, CFG.n_evals, 2)  # padding dropped
    _assert_close(two_dev4, one_dev4)
    _assert_close(two_dev3, base)  # odd run count: padded to 4 on 2 devices


_ROLLED_SCRIPT = """
import numpy as np, jax
from benchmark.engine import TrainConfig, run_keys, train_many
from benchmark.models import ModelConfig
from datagen import _cpu_rng, get_preset, sample, task_weights
assert not _cpu_rng.installed()
spec = get_preset("kdd18", d=8)
out = train_many(run_keys(0, 3), {p3}, {lr3}, model=ModelConfig.of("mmoe"), task=spec,
                 cfg=TrainConfig(**{cfg}), devices=1)
key = jax.random.key(5)
x, y = sample(key, spec, 300, task_weights(key, spec, 0.3))
np.savez("{out}/rolled.npz", x=x, y=y, t=jax.random.truncated_normal(key, -2.0, 2.0, (77, 5)),
         **{{k: out[k] for k in {keys}}})
"""


def test_unrolled_cpu_threefry_gives_the_same_numbers(base, tmp_path):
    """datagen switches JAX's CPU threefry lowering for speed: every number must stay."""
    from datagen import _cpu_rng, sample, task_weights

    assert _cpu_rng.installed()
    script = _ROLLED_SCRIPT.format(
        p3=list(P3), lr3=list(LR3), cfg=CFG.to_dict(), keys=ARRAY_KEYS, out=tmp_path
    )
    _run_child(script, MTL_ROLLED_THREEFRY="1")
    rolled = np.load(tmp_path / "rolled.npz")
    key = jax.random.key(5)
    x, y = sample(key, SPEC, 300, task_weights(key, SPEC, 0.3))
    np.testing.assert_array_equal(rolled["x"], x)
    np.testing.assert_array_equal(rolled["y"], y)
    np.testing.assert_array_equal(rolled["t"], jax.random.truncated_normal(key, -2.0, 2.0, (77, 5)))
    for k in ARRAY_KEYS:
        np.testing.assert_array_equal(rolled[k], base[k], err_msg=k)


# --------------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------------


def test_divergence_is_flagged_and_not_hidden(base):
    out = _train(run_keys(0, 3), P3, (LR3[0], 1e8, LR3[2]))
    np.testing.assert_array_equal(out["diverged"], [False, True, False])
    assert not np.all(np.isfinite(out["curves"][1]))  # the NaN/inf is reported, not masked
    assert not np.all(np.isfinite(out["final"][1]))
    # The diverged run leaves its neighbours untouched.
    for i in (0, 2):
        assert np.all(np.isfinite(out["curves"][i]))
        _assert_close(_runs(out, i), _runs(base, i))


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -10}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_every": 0}, "eval_every"),
        ({"n_test": 0}, "n_test"),
        ({"n_tasks": 0}, "n_tasks"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 25, "eval_every": 10}, "eval_every"),
        ({"n_train": 0}, "n_train"),
        ({"n_train": 8, "batch_size": 16}, "n_train"),
        ({"n_train": 8, "batch_size": 16}, "batch_size"),
    ],
)
def test_train_config_rejects(changes, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        dataclasses.replace(CFG, **changes)


def test_unknown_architecture_is_rejected_before_training():
    with pytest.raises(ValueError, match="no_such_arch.*known architectures"):
        _train(run_keys(0, 1), 0.5, 1e-2, model=ModelConfig("no_such_arch"))


def test_bad_model_size_is_rejected_before_training():
    with pytest.raises(ValueError, match="num_experts"):
        _train(run_keys(0, 1), 0.5, 1e-2, model=ModelConfig("mmoe", (("num_experts", 0),)))


@pytest.mark.parametrize("p", [1.5, -1.01, math.nan, (0.5, 2.0, 0.0)])
def test_correlation_out_of_range(p):
    with pytest.raises(ValueError, match=r"\bp\b.*\[-1, 1\]"):
        _train(run_keys(0, 3), p, 1e-2)


def test_correlation_must_be_achievable_for_three_tasks():
    # Three unit vectors cannot all have pairwise cosine below -1/2.
    with pytest.raises(ValueError, match="positive semidefinite"):
        _train(run_keys(0, 2), -0.6, 1e-2, model=FIXED_MODEL, cfg=FIXED_CFG)


@pytest.mark.parametrize("lr", [0.0, -1e-3, math.nan, math.inf, (1e-3, 0.0, 1e-3)])
def test_learning_rate_must_be_positive(lr):
    with pytest.raises(ValueError, match="learning rate"):
        _train(run_keys(0, 3), 0.5, lr)


def test_no_runs():
    with pytest.raises(ValueError, match="run key"):
        _train(run_keys(0, 3)[:0], 0.5, 1e-2)


def test_input_dimension_below_task_count():
    cfg = dataclasses.replace(CFG, n_tasks=3)
    with pytest.raises(ValueError, match=r"\bd\b"):
        train_many(
            run_keys(0, 1), 0.5, 1e-2, model=MODEL, task=SPEC.replace(d=2), cfg=cfg, devices=1
        )


# --------------------------------------------------------------------------------------------
# data regimes
# --------------------------------------------------------------------------------------------


def test_streaming_regime_curves(base):
    assert CFG.n_train is None
    assert CFG.n_evals == CFG.steps // CFG.eval_every + 1 == 3
    np.testing.assert_array_equal(CFG.eval_steps(), [0, 10, 20])
    assert base["curves"].shape == (3, CFG.n_evals, CFG.n_tasks)
    assert np.all(np.isfinite(base["curves"]))


def test_fixed_training_set_regime_three_tasks_ungated(fixed):
    out, _ = fixed
    assert FIXED_CFG.n_train is not None and FIXED_CFG.n_evals == 5
    assert out["curves"].shape == (2, 5, 3)
    assert out["final"].shape == (2, 3)
    assert np.all(np.isfinite(out["curves"])) and not out["diverged"].any()
    # Ungated: empty gate means, NaN scalar statistics.
    assert out["gate_mean"].shape == (2, 3, 0)
    for key in ("gate_entropy", "gate_polarization", "expert_utilization"):
        assert out[key].shape == (2, 3) and np.all(np.isnan(out[key]))


# --------------------------------------------------------------------------------------------
# learning-rate selection
# --------------------------------------------------------------------------------------------


def test_select_lr_picks_a_grid_value():
    grid = (1e-3, 1e-2, 3e-2)  # 3 values x 1 run: the shared compiled shape
    best, scores = select_lr(0.5, model=MODEL, task=SPEC, cfg=CFG, grid=grid, n_runs=1)
    assert best in grid
    assert sorted(scores) == sorted(grid)
    assert all(math.isfinite(v) and v > 0 for v in scores.values())
    assert scores[best] == min(scores.values())


def test_select_lr_counts_divergence_as_infinite():
    grid = (1e-2, 1e8, 1e-3)
    best, scores = select_lr(0.5, model=MODEL, task=SPEC, cfg=CFG, grid=grid, n_runs=1)
    assert scores[1e8] == math.inf
    assert best != 1e8 and best in grid


def test_default_grid_is_the_papers():
    assert LR_GRID == (1e-4, 1e-3, 1e-2)


# --------------------------------------------------------------------------------------------
# gate statistics
# --------------------------------------------------------------------------------------------


def test_gate_statistics_of_a_gated_model(base):
    n_experts = 8
    mean = base["gate_mean"]
    ent, pol, util = base["gate_entropy"], base["gate_polarization"], base["expert_utilization"]
    assert mean.shape == (3, 2, n_experts)
    assert ent.shape == pol.shape == util.shape == (3, 2)
    np.testing.assert_allclose(mean.sum(-1), 1.0, atol=1e-5)
    assert np.all(mean >= 0)
    assert np.all((ent >= -1e-6) & (ent <= math.log(n_experts) + 1e-5))
    assert np.all((pol >= 1 / n_experts - 1e-6) & (pol <= 1 + 1e-6))
    assert np.all((util > 0) & (util <= 1 + 1e-6))
    # Jensen: max weight >= exp(-entropy) per sample; entropy of the mean >= mean entropy.
    assert np.all(pol >= np.exp(-ent) - 1e-5)
    assert np.all(util >= np.exp(ent) / n_experts - 1e-5)


def test_gate_statistics_extremes():
    n, k, e = 6, 2, 4
    uniform = engine._gate_stats(jnp.full((n, k, e), 1 / e), k)
    np.testing.assert_allclose(uniform["gate_mean"], 1 / e, atol=1e-6)
    np.testing.assert_allclose(uniform["gate_entropy"], math.log(e), atol=1e-5)
    np.testing.assert_allclose(uniform["gate_polarization"], 1 / e, atol=1e-6)
    np.testing.assert_allclose(uniform["expert_utilization"], 1.0, atol=1e-5)

    one_expert = engine._gate_stats(jnp.zeros((n, k, e)).at[..., 2].set(1.0), k)
    np.testing.assert_allclose(one_expert["gate_entropy"], 0.0, atol=1e-5)
    np.testing.assert_allclose(one_expert["gate_polarization"], 1.0, atol=1e-6)
    np.testing.assert_allclose(one_expert["expert_utilization"], 1 / e, atol=1e-5)

    # Hard routing that spreads over all experts: polarised per sample, fully utilised.
    route = (jnp.arange(e)[:, None] + jnp.arange(k)[None]) % e  # (E samples, K)
    spread = engine._gate_stats(jax.nn.one_hot(route, e), k)  # every expert once per task
    np.testing.assert_allclose(spread["gate_entropy"], 0.0, atol=1e-5)
    np.testing.assert_allclose(spread["gate_polarization"], 1.0, atol=1e-6)
    np.testing.assert_allclose(spread["expert_utilization"], 1.0, atol=1e-5)


@pytest.mark.parametrize("devices", [0, -1, 1.5])
def test_device_count_must_be_positive(devices):
    with pytest.raises(ValueError, match="devices must be a positive integer"):
        _train(run_keys(0, 1), 0.5, 1e-2, devices=devices)


def test_the_host_device_flag_is_set_on_a_cpu_only():
    """The CLI's one host device per core: set on a CPU, left alone on an accelerator or
    where the user set it."""
    from benchmark import _host

    cpu = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_foo=1"}
    assert _host.xla_flags(cpu) == f"--xla_cpu_foo=1 --{_host.FLAG}={_host.cores()}"
    assert _host.xla_flags({"XLA_FLAGS": f"--{_host.FLAG}=3"}, accelerator=False) is None
    assert _host.xla_flags({"JAX_PLATFORMS": "cuda"}) is None
    assert _host.xla_flags({"JAX_PLATFORMS": "tpu,cpu"}) is None
    assert _host.xla_flags({}, accelerator=True) is None
    assert _host.accelerator_expected({"JAX_PLATFORMS": "cpu,cuda"}) is False
    assert _host.accelerator_expected({}) is False  # this machine: no accelerator plugin


def test_an_accelerator_gets_every_run_in_flight(monkeypatch):
    """The backend branches: on a CPU, groups of CPU_GROUP runs and one chunk per call; on
    a GPU, one group per device and calls of thousands of runs, bounded by the test sets'
    bytes (the paper profile's 10 000 test points allow fewer)."""
    from benchmark import engine, runner
    from benchmark.protocol import get_profile

    spec = get_profile("default").spec(ModelConfig.of("mmoe"), 0.5)
    paper = get_profile("paper").spec(ModelConfig.of("mmoe"), 0.5)
    assert engine.default_group() == engine.CPU_GROUP and runner.default_fuse(spec) == 0
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert engine.default_group() is None
    assert runner.default_fuse(spec) == runner.ACCELERATOR_FUSE
    per_run = 4 * paper.train.n_test * (paper.task.d + paper.train.n_tasks)
    assert runner.default_fuse(paper) == runner.ACCELERATOR_TEST_BYTES // per_run < 8192
    chunks = [runner.Chunk(spec, s, 20) for s in range(0, 200, 20)]
    assert [len(c) for c in runner.fused(chunks, "auto")] == [10]  # one call, 200 runs


def test_many_tasks_train_on_one_cpu_device_unless_asked():
    """Sharded over two XLA host devices, K = 16 programs stall; on a CPU, K >= 8 takes one
    device by default, and every other case all of them."""
    from benchmark.engine import CPU_SHARD_MAX_TASKS, default_devices

    assert default_devices(CPU_SHARD_MAX_TASKS, 2, "cpu") == 1
    assert default_devices(16, 2, "cpu") == 1
    assert default_devices(CPU_SHARD_MAX_TASKS - 1, 2, "cpu") == 2
    assert default_devices(2, 2, "cpu") == 2
    assert default_devices(16, 8, "gpu") == 8


@pytest.mark.parametrize(
    ("n_tasks", "devices", "expected"), [(8, None, 1), (2, None, 2), (8, 2, 2)]
)
def test_train_many_shards_as_default_devices_says(monkeypatch, n_tasks, devices, expected):
    """``train_many`` asks for :func:`default_devices` where the caller names none, and for
    the caller's count where it does (on a CPU seen as having two devices)."""
    seen = []

    def fake_trainer(model, task, cfg, n_devices, group, objective):
        seen.append(n_devices)
        return lambda keys, p, lr: {"final": jnp.zeros((keys.shape[0], cfg.n_tasks))}

    monkeypatch.setattr(engine, "trainer", fake_trainer)
    monkeypatch.setattr(engine.jax, "local_device_count", lambda: 2)
    monkeypatch.setattr(engine.jax, "default_backend", lambda: "cpu")
    cfg = dataclasses.replace(CFG, n_tasks=n_tasks)
    out = train_many(run_keys(0, 3), 0.5, 1e-2, model=MODEL, task=SPEC, cfg=cfg, devices=devices)
    assert seen == [expected] and out["final"].shape == (3, n_tasks)
