"""``python -m benchmark bench``: the engine against a naive loop and the machine's peak.

Everything is measured in one process, so every ratio comes from the same conditions:

- engine: ``train_many`` over S runs (vmap + scan, sharded over every device), timed
  after compilation; also on one device, for the scaling across cores;
- naive: the same model trained one run at a time by a Python loop over a jitted step,
  the way a user would write it;
- peak: float32 matmul GFLOP/s with every core busy (one large matmul per device, all
  devices at once);
- achieved: FLOPs of one compiled engine step (XLA cost analysis) x steps / time;
- overheads: compile time, and the peak resident memory of the process so far.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datagen import get_preset, sample, task_weights

from .engine import TrainConfig, _compiled, run_keys, train_many
from .experiments import ordered
from .models import ModelConfig, names

PAPER_STEPS = 10_000_000  # the KDD18 figures' x axes run to about 10M steps
PAPER_RUNS = 200 * 3 * 3  # 200 runs x 3 models x 3 correlations


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_gflops(size: int = 1024, reps: int = 10) -> float:
    """float32 matmul GFLOP/s, one ``size`` x ``size`` matmul chain per device, all at once."""
    devices = jax.devices()
    n = len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    a = jax.device_put(jnp.ones((n, size, size), jnp.float32) / size, shard)

    @jax.jit
    def chain(a):
        def body(x, _):
            return jnp.einsum("bij,bjk->bik", x, a), None

        return jax.lax.scan(body, a, None, length=reps)[0]

    jax.block_until_ready(chain(a))
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(chain(a))
        dt = time.perf_counter() - t0
        best = max(best, 2 * size**3 * n * reps / dt / 1e9)
    return best


def _adam_step(net, opt):
    """``(params, state, x, y) -> (params, state)``: one Adam step on the mean squared error."""

    def step(params, state, x, y):
        def loss(p):
            return jnp.mean((net.apply(p, x)[0] - y) ** 2)

        g = jax.grad(loss)(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    return step


def _step_flops(model: ModelConfig, spec, cfg: TrainConfig, runs: int) -> float:
    """FLOPs of one vmapped Adam step of ``runs`` runs, from XLA's cost analysis."""
    net = model.build(cfg.n_tasks)
    opt = optax.adam(1e-3)
    step_only = _adam_step(net, opt)
    key = jax.random.key(0)
    w = task_weights(key, spec, 0.5)
    x, y = sample(key, spec, cfg.batch_size, w)
    params = net.init(key, x[:1])
    state = opt.init(params)
    batched = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (runs,) + v.shape), params)
    bstate = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (runs,) + jnp.shape(v)), state)
    bx = jnp.broadcast_to(x, (runs,) + x.shape)
    by = jnp.broadcast_to(y, (runs,) + y.shape)
    compiled = jax.jit(jax.vmap(step_only)).lower(batched, bstate, bx, by).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost.get("flops", 0.0))


def _naive_steps_per_s(model: ModelConfig, spec, batch: int, steps: int) -> float:
    """One run, a Python loop over a jitted step that samples its own batch."""
    net = model.build(2)
    opt = optax.adam(1e-3)
    key = jax.random.key(1)
    w = task_weights(key, spec, 0.5)
    params = net.init(key, jnp.zeros((1, spec.d)))
    state = opt.init(params)

    update = _adam_step(net, opt)

    @jax.jit
    def step(params, state, key):
        return update(params, state, *sample(key, spec, batch, w))

    params, state = step(params, state, key)
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    for i in range(steps):
        params, state = step(params, state, jax.random.fold_in(key, i))
    jax.block_until_ready(params)
    return steps / (time.perf_counter() - t0)


def _engine(model, spec, cfg, runs, devices):
    keys = run_keys(0, runs)
    fn = _compiled(model, spec, cfg, devices)
    p = jnp.full((runs,), 0.5, jnp.float32)
    lr = jnp.full((runs,), 1e-3, jnp.float32)
    t0 = time.perf_counter()
    compiled = fn.lower(keys, p, lr).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(keys, p, lr))  # warm
    out = train_many(keys, 0.9, 2e-3, model=model, spec=spec, cfg=cfg, devices=devices)
    return runs * cfg.steps / out["wall_s"], compile_s


def measure(
    quick: bool = False, runs: int | None = None, models=None, log=None, batch: int = 128
) -> dict:
    """Run every measurement and return the JSON-ready result."""
    log = log or (lambda s: None)
    spec = get_preset("kdd18")
    runs = runs or (64 if quick else 200)
    steps = 200 if quick else 500
    naive_steps = 200 if quick else 500
    models = models or (["shared_bottom", "mmoe"] if quick else ordered(names()))
    cfg = TrainConfig(steps=steps, batch_size=batch, eval_every=steps, n_test=256)
    n_dev = jax.device_count()
    peak = peak_gflops(512 if quick else 1024)
    log(f"peak float32 matmul: {peak:.1f} GFLOP/s on {n_dev} device(s), {os.cpu_count()} cores")
    result = {
        "peak_gflops": peak,
        "cores": os.cpu_count(),
        "devices": n_dev,
        "backend": jax.default_backend(),
        "runs": runs,
        "steps": steps,
        "batch_size": cfg.batch_size,
        "architectures": {},
    }
    for name in models:
        model = ModelConfig.of(name)
        rate, compile_s = _engine(model, spec, cfg, runs, n_dev)
        # The 1-device rerun costs a second compilation: skipped by --quick.
        rate_1 = rate if n_dev == 1 else (None if quick else _engine(model, spec, cfg, runs, 1)[0])
        naive = _naive_steps_per_s(model, spec, cfg.batch_size, naive_steps)
        flops = _step_flops(model, spec, cfg, runs) / runs  # per run-step
        achieved = flops * rate / 1e9
        entry = {
            "engine_run_steps_per_s": rate,
            "engine_samples_per_s": rate * cfg.batch_size,
            "engine_run_steps_per_s_1_device": rate_1,
            "scaling_all_vs_1_device": None if rate_1 is None else rate / rate_1,
            "naive_run_steps_per_s": naive,
            "speedup_vs_naive": rate / naive,
            "flops_per_run_step": flops,
            "achieved_gflops": achieved,
            "efficiency": achieved / peak,
            "compile_s": compile_s,
            "peak_rss_mb": _rss_mb(),
            "paper_protocol_hours_extrapolated": PAPER_RUNS * PAPER_STEPS / rate / 3600,
        }
        result["architectures"][name] = entry
        one = "not measured" if rate_1 is None else f"{rate_1:.0f}"
        log(
            f"{name:<14} engine {rate:9.0f} run-steps/s ({one} on 1 device), naive "
            f"{naive:6.0f}, x{rate / naive:5.1f}, {achieved:6.1f} GFLOP/s = "
            f"{achieved / peak:4.2f} of peak, compile {compile_s:4.1f} s, "
            f"RSS {entry['peak_rss_mb']:.0f} MB"
        )
    return result


_MEMORY_SCRIPT = """
import resource, jax
from benchmark.engine import TrainConfig, run_keys, train_many
from benchmark.models import ModelConfig
from datagen import get_preset
cfg = TrainConfig(steps=100, batch_size={batch}, eval_every=100, n_test=2000)
train_many(run_keys(0, {runs}), 0.5, 1e-3, model=ModelConfig.of("{model}"),
           spec=get_preset("kdd18"), cfg=cfg)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def memory_scaling(model: str = "mmoe", sizes=(25, 50, 100, 200), batch: int = 128) -> dict:
    """Peak RSS (MB) of a fresh process training S runs, for each S in ``sizes``.

    One process per size, so each reading is that sweep's own peak (``ru_maxrss`` never
    goes down within a process). Each process inherits this one's XLA_FLAGS.
    """
    out = {}
    for runs in sizes:
        script = _MEMORY_SCRIPT.format(batch=batch, runs=runs, model=model)
        res = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"memory probe for S={runs} failed: {res.stderr[-2000:]}")
        out[runs] = float(res.stdout.strip().splitlines()[-1])
    return out


def main(
    quick: bool = False, as_json: bool = False, runs=None, models=None, batch=128, memory=False
) -> None:
    if runs is not None and runs < 1:
        raise ValueError(f"--runs must be a positive integer, got {runs}")
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer, got {batch}")
    if models:
        for m in models:
            ModelConfig.of(m)  # unknown names fail here with the known list

    def log(s):
        print(s, file=sys.stderr if as_json else sys.stdout, flush=True)

    res = measure(quick=quick, runs=runs, models=models, log=log, batch=batch)
    if memory:
        res["memory_mb_by_runs"] = memory_scaling(batch=batch)
        log(
            "peak RSS of a fresh mmoe sweep, by runs S: "
            + ", ".join(f"S={k}: {v:.0f} MB" for k, v in res["memory_mb_by_runs"].items())
        )
    if as_json:
        print(json.dumps(res))
