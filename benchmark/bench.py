"""``python -m benchmark bench``: the engine against a naive loop and the machine's peak.

Everything but the 1-core probe is measured in one process, at the default profile's batch
of 32 unless ``--batch`` says otherwise, so every ratio comes from the same conditions:

- engine: ``train_many`` over S runs (vmap + scan, sharded over every device), timed
  after compilation, in two data regimes: streaming (a fresh batch every step, what the
  experiments do) and in memory (batches drawn from a fixed training set per run);
- 1 core: the streaming engine again in a fresh process pinned to one core, for the
  scaling across cores;
- naive: the same model trained one run at a time by a Python loop over a jitted step,
  the way a user would write it, in the same data regime;
- peak: float32 matmul GFLOP/s with every core busy (one large matmul per device, all
  devices at once);
- achieved: FLOPs of one compiled training step of the model (XLA cost analysis; data
  generation not counted) x steps / time, and efficiency = achieved / peak;
- overheads: compile time, and the peak resident memory of the process so far.

``python -m benchmark.bench --against REV`` times this engine against git revision REV's
(its engine, generator and models), interleaved in one process; ``--profile-step MODEL``
prints where the time of MODEL's compiled step goes, operation by operation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datagen import _cpu_rng, get_preset, sample, task_weights

from .engine import TrainConfig, default_group, run_keys, trainer
from .models import ModelConfig, names, ordered

PAPER_STEPS = 10_000_000  # the KDD18 figures' x axes run to about 10M steps
PAPER_RUNS = 200 * 3 * 3  # 200 runs x 3 models x 3 correlations
IN_MEMORY_N_TRAIN = 1024  # training-set size per run of the in-memory measurement
# Every timing is the best of this many: the machine's throughput drifts by tens of percent.
REPEATS = 3
# The batch the default profile trains with (benchmark.experiments), measured by default.
DEFAULT_BATCH = 32


def _rss_mb() -> float:
    """Peak resident memory of this process, MB.

    ``VmHWM`` of /proc/self/status where there is one: the high-water mark of this
    process's own memory. ``ru_maxrss`` is the fallback, but on Linux a child started by
    ``subprocess`` inherits its parent's ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_gflops(sizes=(512, 1024, 2048), reps: int = 6) -> float:
    """float32 matmul GFLOP/s with every device busy: the best over ``sizes`` and 3 tries.

    Each device runs a chain of ``reps`` square matmuls of one size, all devices at once.
    The best of several sizes, so the denominator of the efficiency is not understated.
    """
    devices = jax.devices()
    n = len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))

    @jax.jit
    def chain(a):
        def body(x, _):
            return jnp.einsum("bij,bjk->bik", x, a), None

        return jax.lax.scan(body, a, None, length=reps)[0]

    best = 0.0
    for size in sizes:
        a = jax.device_put(jnp.ones((n, size, size), jnp.float32) / size, shard)
        jax.block_until_ready(chain(a))
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


def _naive_steps_per_s(
    model: ModelConfig,
    spec,
    batch: int,
    steps: int,
    n_train: int | None = None,
    repeats: int = REPEATS,
) -> float:
    """One run, a Python loop over a jitted step, the way a user would write it.

    The step samples a fresh batch (``n_train=None``, streaming) or draws one from a
    training set of ``n_train`` points held on the device (in memory).
    """
    net = model.build(2)
    opt = optax.adam(1e-3)
    key = jax.random.key(1)
    w = task_weights(key, spec, 0.5)
    params = net.init(key, jnp.zeros((1, spec.d)))
    state = opt.init(params)
    update = _adam_step(net, opt)
    if n_train is None:

        @jax.jit
        def step(params, state, key):
            return update(params, state, *sample(key, spec, batch, w))

    else:
        x_all, y_all = sample(jax.random.key(2), spec, n_train, w)

        @jax.jit
        def step(params, state, key):
            idx = jax.random.randint(key, (batch,), 0, n_train)
            return update(params, state, x_all[idx], y_all[idx])

    params, state = step(params, state, key)
    jax.block_until_ready(params)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            params, state = step(params, state, jax.random.fold_in(key, i))
        jax.block_until_ready(params)
        best = min(best, time.perf_counter() - t0)
    return steps / best


def _engine(model, spec, cfg, runs, devices, repeats=REPEATS, group="auto", objective="equal"):
    """``(run-steps/s, compile seconds)`` of the compiled trainer of ``runs`` runs.

    ``runs`` must be a multiple of ``devices``. Times the program ``train_many`` runs
    (with ``group`` runs per group): the best of ``repeats`` calls.
    """
    keys = run_keys(0, runs)
    fn = trainer(model, spec, cfg, devices, group, objective)
    p = jnp.full((runs,), 0.9, jnp.float32)
    lr = jnp.full((runs,), 2e-3, jnp.float32)
    t0 = time.perf_counter()
    compiled = fn.lower(keys, p, lr).compile()
    compile_s = time.perf_counter() - t0
    best = math.inf  # the first call may be slower (allocation): the best absorbs it
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(keys, p, lr))
        best = min(best, time.perf_counter() - t0)
    return runs * cfg.steps / best, compile_s


_ONE_CORE_SCRIPT = """
import json, os
os.sched_setaffinity(0, {{{core}}})  # before JAX starts its thread pools
import jax
assert len(os.sched_getaffinity(0)) == 1 and jax.device_count() == 1, "not pinned to 1 core"
from benchmark.bench import _engine
from benchmark.engine import TrainConfig
from benchmark.models import ModelConfig
from datagen import get_preset
rate, _ = _engine(ModelConfig.of("{model}"), get_preset("kdd18"), TrainConfig(**{cfg}), {runs}, 1)
print(json.dumps(rate))
"""


def _child_env(devices: int) -> dict:
    """This process's environment with ``devices`` XLA host devices instead of its own."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def one_core_rate(model: str, cfg: TrainConfig, runs: int) -> float | None:
    """Engine run-steps/s of a fresh process pinned to one core, with one device.

    The 1-core side of the scaling: XLA sizes its thread pools from the CPU affinity, so the
    child really computes on one core. None where CPU affinity cannot be set (not Linux).
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    script = _ONE_CORE_SCRIPT.format(core=core, model=model, cfg=cfg.to_dict(), runs=runs)
    return _child_number(script, _child_env(1), f"1-core probe for {model}")


def _child_number(script: str, env: dict | None, what: str) -> float:
    """Run ``script`` in a fresh Python process; the number on its last stdout line."""
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env
    )
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed: {res.stderr[-2000:]}")
    return float(res.stdout.strip().splitlines()[-1])


def objective_costs(models, objectives, spec, cfg: TrainConfig, runs: int, repeats: int, log=None):
    """The engine's streaming training cost of each objective against ``equal``:
    ``{model: {objective: {"run_steps_per_s", "ratio"}}}``, ratio = equal's rate / its rate.

    The compiled programs of one model are timed in turns, ``repeats`` rounds, best of each:
    the machine's drift hits every objective alike.
    """
    from .objectives import names as objective_names

    log = log or (lambda s: None)
    objectives = ["equal", *(o for o in objectives or objective_names() if o != "equal")]
    n_dev = jax.device_count()
    keys = run_keys(0, runs)
    p = jnp.full((runs,), 0.9, jnp.float32)
    lr = jnp.full((runs,), 2e-3, jnp.float32)
    out = {}
    for name in models:
        usable = [o for o in objectives if _trains(name, o)]
        if len(usable) < len(objectives):
            log(f"{name:<14} cannot train {', '.join(sorted(set(objectives) - set(usable)))}")
        fns = {
            o: trainer(ModelConfig.of(name), spec, cfg, n_dev, "auto", o)
            .lower(keys, p, lr)
            .compile()
            for o in usable
        }
        best = dict.fromkeys(usable, math.inf)
        for _ in range(repeats):
            for o, fn in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(keys, p, lr))
                best[o] = min(best[o], time.perf_counter() - t0)
        rows = out[name] = {
            o: {"run_steps_per_s": runs * cfg.steps / t, "ratio": t / best["equal"]}
            for o, t in best.items()
        }
        log(f"{name:<14} cost against equal: " + ", ".join(
            f"{o} {r['ratio']:.2f}x" for o, r in rows.items()))  # fmt: skip
    return out


def _trains(model: str, objective: str) -> bool:
    """Whether ``model`` can train with ``objective`` (MGDA-UB needs a representation)."""
    from .models import get as get_architecture
    from .objectives import get as get_objective

    return not get_objective(objective).needs_representation or bool(
        get_architecture(model).representation
    )


def group_sweep(models, spec, cfg: TrainConfig, runs: int, groups, log=None) -> dict:
    """Engine run-steps/s for each run-group size: ``{model: {group: rate}}``.

    ``groups`` holds positive integers and None (every run of a device in one group). The
    in-memory regime, so the training step, not data generation, decides.
    """
    log = log or (lambda s: None)
    out = {}
    for name in models:
        rates = out[name] = {}
        for group in groups:
            rate, _ = _engine(ModelConfig.of(name), spec, cfg, runs, jax.device_count(), 2, group)
            rates["all" if group is None else str(group)] = rate
        log(f"{name:<14} by run group: " + ", ".join(f"{g}: {r:.0f}" for g, r in rates.items()))
    return out


def measure(
    quick: bool = False,
    runs: int | None = None,
    models=None,
    log=None,
    batch: int = DEFAULT_BATCH,
    groups=None,
    objectives=None,
) -> dict:
    """Run every measurement and return the JSON-ready result.

    The machine's throughput can drift by tens of percent within seconds (shared hosts), so
    every rate is the best of several timings (``REPEATS``; 2 with --quick), and the peak
    is measured again after each architecture and the best reading kept: efficiencies are
    never flattered by a slow peak.
    """
    log = log or (lambda s: None)
    spec = get_preset("kdd18")
    runs = runs or (64 if quick else 200)
    steps = 200 if quick else 500
    naive_steps = 200 if quick else 500
    models = models or (["shared_bottom", "mmoe"] if quick else ordered(names()))
    cfg = TrainConfig(steps=steps, batch_size=batch, eval_every=steps, n_test=256)
    # In memory: a fixed training set per run, batches drawn from it (TrainConfig.n_train).
    cfg_mem = dataclasses.replace(cfg, n_train=max(IN_MEMORY_N_TRAIN, batch))
    n_dev = jax.device_count()
    runs = -(-runs // n_dev) * n_dev  # whole runs per device
    repeats = 2 if quick else REPEATS
    sizes = (512, 1024) if quick else (512, 1024, 2048)
    peaks = [peak_gflops(sizes)]
    log(f"peak float32 matmul: {peaks[0]:.1f} GFLOP/s on {n_dev} device(s), {os.cpu_count()} cores")
    result = {
        "peak_gflops": None,  # filled in at the end: the best reading
        "peak_gflops_readings": peaks,
        "cores": os.cpu_count(),
        "devices": n_dev,
        "backend": jax.default_backend(),
        "threefry_cpu_lowering": "unrolled" if _cpu_rng.installed() else "rolled (JAX default)",
        "runs": runs,
        "steps": steps,
        "batch_size": cfg.batch_size,
        "in_memory_n_train": cfg_mem.n_train,
        "timing": f"best of {repeats}",
        "group": default_group(),
        "architectures": {},
    }
    for name in models:
        model = ModelConfig.of(name)
        rate, compile_s = _engine(model, spec, cfg, runs, n_dev, repeats)
        naive = _naive_steps_per_s(model, spec, cfg.batch_size, naive_steps, None, repeats)
        flops = _step_flops(model, spec, cfg, runs) / runs  # per run-step, model only
        mem_rate, _ = _engine(model, spec, cfg_mem, runs, n_dev, repeats)
        mem_naive = _naive_steps_per_s(
            model, spec, cfg.batch_size, naive_steps, cfg_mem.n_train, repeats
        )
        # The 1-core process costs a compilation and a slow run: skipped by --quick.
        rate_1 = None if quick else one_core_rate(name, cfg, runs)
        result["architectures"][name] = {
            "engine_run_steps_per_s": rate,
            "engine_samples_per_s": rate * cfg.batch_size,
            "naive_run_steps_per_s": naive,
            "speedup_vs_naive": rate / naive,
            "flops_per_run_step": flops,
            "achieved_gflops": flops * rate / 1e9,
            "engine_run_steps_per_s_1_core": rate_1,
            "scaling_vs_1_core": None if rate_1 is None else rate / rate_1,
            "in_memory": {
                "engine_run_steps_per_s": mem_rate,
                "naive_run_steps_per_s": mem_naive,
                "speedup_vs_naive": mem_rate / mem_naive,
                "achieved_gflops": flops * mem_rate / 1e9,
            },
            "data_generation_share": max(0.0, 1.0 - rate / mem_rate),
            "compile_s": compile_s,
            "peak_rss_mb": _rss_mb(),
            "paper_protocol_hours_extrapolated": PAPER_RUNS * PAPER_STEPS / rate / 3600,
        }
        one = "" if rate_1 is None else f" ({rate_1:.0f} on 1 core, x{rate / rate_1:.2f})"
        log(
            f"{name:<14} stream: engine {rate:6.0f} run-steps/s{one}, naive {naive:5.0f} "
            f"(x{rate / naive:4.1f}), {flops * rate / 1e9:5.1f} GFLOP/s | in memory: engine "
            f"{mem_rate:6.0f}, naive {mem_naive:5.0f} (x{mem_rate / mem_naive:4.1f}), "
            f"{flops * mem_rate / 1e9:5.1f} GFLOP/s | compile {compile_s:4.1f} s, "
            f"RSS {_rss_mb():.0f} MB"
        )
        peaks.append(peak_gflops(sizes))
    if groups:
        sweep_models = [m for m in ("shared_bottom", "mmoe") if m in models] or models[:1]
        result["group_sweep"] = group_sweep(sweep_models, spec, cfg_mem, runs, groups, log)
        result["group_sweep_stream"] = group_sweep(sweep_models, spec, cfg, runs, groups, log)
    if objectives is not None:
        cost_models = [m for m in ("shared_bottom", "mmoe") if m in models] or models[:1]
        result["objective_cost"] = objective_costs(
            cost_models, objectives, spec, cfg, runs, repeats, log
        )
    peak = result["peak_gflops"] = max(peaks)
    log(f"best peak reading {peak:.1f} GFLOP/s (readings: {', '.join(f'{p:.0f}' for p in peaks)})")
    for name, entry in result["architectures"].items():
        entry["efficiency"] = entry["achieved_gflops"] / peak
        entry["in_memory"]["efficiency"] = entry["in_memory"]["achieved_gflops"] / peak
        log(
            f"{name:<14} efficiency: {entry['efficiency']:.2f} streaming, "
            f"{entry['in_memory']['efficiency']:.2f} in memory"
        )
    return result


_MEMORY_SCRIPT = """
from benchmark.bench import _rss_mb
from benchmark.engine import TrainConfig, run_keys, train_many
from benchmark.models import ModelConfig
from datagen import get_preset
cfg = TrainConfig(steps=100, batch_size={batch}, eval_every=100, n_test=2000)
train_many(run_keys(0, {runs}), 0.5, 1e-3, model=ModelConfig.of("{model}"),
           task=get_preset("kdd18"), cfg=cfg)
print(_rss_mb())
"""


def memory_scaling(
    model: str = "mmoe", sizes=(25, 50, 100, 200), batch: int = DEFAULT_BATCH
) -> dict:
    """Peak RSS (MB) of a fresh process training S runs, for each S in ``sizes``.

    One process per size, so each reading is that sweep's own peak (a high-water mark
    never goes down within a process). Each process inherits this one's XLA_FLAGS.
    """
    out = {}
    for runs in sizes:
        script = _MEMORY_SCRIPT.format(batch=batch, runs=runs, model=model)
        out[runs] = _child_number(script, None, f"memory probe for S={runs}")
    return out


def parse_groups(texts) -> list:
    """``--groups`` values: positive integers, or ``all`` (None: one group per device)."""
    out = []
    for t in texts or ():
        if t == "all":
            out.append(None)
        elif t.isdigit() and int(t) > 0:
            out.append(int(t))
        else:
            raise ValueError(f"--groups takes positive integers or 'all', got {t!r}")
    return out


def main(
    quick: bool = False,
    as_json: bool = False,
    runs=None,
    models=None,
    batch=DEFAULT_BATCH,
    memory=False,
    groups=None,
    objectives=None,
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

    groups = parse_groups(groups)
    if objectives:
        from .objectives import get as get_objective

        for o in objectives:
            get_objective(o)  # unknown names fail here with the known list
    res = measure(
        quick=quick,
        runs=runs,
        models=models,
        log=log,
        batch=batch,
        groups=groups,
        objectives=objectives,
    )
    if memory:
        res["memory_mb_by_runs"] = memory_scaling(batch=batch)
        log(
            "peak RSS of a fresh mmoe sweep, by runs S: "
            + ", ".join(f"S={k}: {v:.0f} MB" for k, v in res["memory_mb_by_runs"].items())
        )
    if as_json:
        print(json.dumps(res))


# ----------------------------------------------------------------------------- engine vs rev


def _load_revision(rev: str):
    """The engine of git revision ``rev``, with that revision's generator and models.

    ``datagen/core.py``, ``benchmark/models/`` and ``benchmark/engine.py`` of ``rev`` are
    loaded under private module names, the engine's imports pointed at the revision's
    generator and models.
    """
    import importlib.util
    import pathlib
    import tarfile
    import tempfile

    root = pathlib.Path(__file__).resolve().parents[1]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="engine_rev_"))
    tag = "_rev_" + "".join(c if c.isalnum() else "_" for c in rev)
    archive = tmp / "rev.tar"
    subprocess.run(
        ["git", "archive", "-o", str(archive), rev, "datagen/core.py", "benchmark/models",
         "benchmark/engine.py"],
        cwd=root, check=True,
    )  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")

    def load(name, path, package=False):
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[str(path.parent)] if package else None
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    load(f"{tag}_core", tmp / "datagen" / "core.py")
    load(f"{tag}_models", tmp / "benchmark" / "models" / "__init__.py", package=True)
    engine = tmp / "benchmark" / "engine.py"
    text = engine.read_text().replace("from datagen import", f"from {tag}_core import")
    engine.write_text(text.replace("from .models import", f"from {tag}_models import"))
    return load(f"{tag}_engine", engine), sys.modules[f"{tag}_models"]


def compare_engines(
    rev: str,
    models=None,
    runs: int = 200,
    steps: int = 500,
    batch: int = DEFAULT_BATCH,
    repeats: int = 7,
    log=None,
) -> dict:
    """Run-steps/s of this engine and of revision ``rev``'s, timed interleaved.

    Streaming, ``runs`` runs of ``steps`` steps, sharded over every device as
    ``train_many`` does. Both programs of an architecture are compiled first, then timed
    one after the other ``repeats`` times; each rate is the best of its timings, by wall
    time and by the process's CPU time (the latter is less sensitive to other processes
    sharing the cores).
    """
    from . import engine as new_engine

    log = log or (lambda s: None)
    old_engine, old_models = _load_revision(rev)
    spec = get_preset("kdd18")
    # Default: every architecture that both revisions have.
    models = models or [m for m in ordered(names()) if m in old_models.names()]
    n_dev = jax.device_count()
    runs = -(-runs // n_dev) * n_dev
    keys = run_keys(0, runs)
    p = jnp.full((runs,), 0.9, jnp.float32)
    lr = jnp.full((runs,), 2e-3, jnp.float32)
    out = {"rev": rev, "runs": runs, "steps": steps, "batch_size": batch, "devices": n_dev,
           "timing": f"best of {repeats}, interleaved", "architectures": {}}  # fmt: skip
    for name in models:
        progs = {}
        pairs = (("previous", old_engine, old_models), ("this", new_engine, None))
        for tag, eng, mods in pairs:
            cfg = eng.TrainConfig(steps=steps, batch_size=batch, eval_every=steps, n_test=256)
            model = (mods.ModelConfig if mods else ModelConfig).of(name)
            fn = eng.trainer(model, spec, cfg, n_dev, "auto")
            progs[tag] = fn.lower(keys, p, lr).compile()
            jax.block_until_ready(progs[tag](keys, p, lr))
        wall = dict.fromkeys(progs, math.inf)
        cpu = dict.fromkeys(progs, math.inf)
        for _ in range(repeats):
            for tag, prog in progs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(prog(keys, p, lr))
                wall[tag] = min(wall[tag], time.perf_counter() - t0)
                cpu[tag] = min(cpu[tag], time.process_time() - c0)
        work = runs * steps
        entry = out["architectures"][name] = {
            f"{tag}_run_steps_per_s": work / wall[tag] for tag in progs
        }
        entry.update({f"{tag}_run_steps_per_cpu_s": work / cpu[tag] for tag in progs})
        entry["speedup_wall"] = wall["previous"] / wall["this"]
        entry["speedup_cpu"] = cpu["previous"] / cpu["this"]
        log(
            f"{name:<14} previous {work / wall['previous']:7.0f}, this {work / wall['this']:7.0f} "
            f"run-steps/s: x{entry['speedup_wall']:.2f} (by CPU time x{entry['speedup_cpu']:.2f})"
        )
    return out


def profile_step(
    model: str,
    runs: int = 10,
    steps: int = 200,
    batch: int = DEFAULT_BATCH,
    objective: str = "equal",
):
    """Where a streaming step's time goes: XLA:CPU's per-operation times, from a trace.

    Traces one call of the compiled trainer of ``runs`` runs (one group) for ``steps``
    steps on one device and sums the duration of each operation of the compiled program
    (a fusion, a dot, ...) over the call. Returns ``(total_ms, [(ms, calls, name, hlo)])``,
    largest first; ``hlo`` is the operation's line of the compiled HLO, shortened.
    """
    import collections
    import glob
    import gzip
    import re
    import tempfile

    cfg = TrainConfig(steps=steps, batch_size=batch, eval_every=steps, n_test=256)
    keys = run_keys(0, runs)
    p = jnp.full((runs,), 0.9, jnp.float32)
    lr = jnp.full((runs,), 2e-3, jnp.float32)
    fn = trainer(ModelConfig.of(model), get_preset("kdd18"), cfg, 1, runs, objective)
    compiled = fn.lower(keys, p, lr).compile()
    jax.block_until_ready(compiled(keys, p, lr))
    folder = tempfile.mkdtemp(prefix="step_trace_")
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(keys, p, lr))
        total_ms = (time.perf_counter() - t0) * 1e3
    trace = glob.glob(folder + "/**/*.trace.json.gz", recursive=True)[0]
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    spent, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            spent[e["name"]] += e.get("dur", 0) / 1e3
            calls[e["name"]] += 1
    hlo = compiled.as_text()
    rows = []
    for name, ms in spent.most_common():
        line = re.search(r"\n\s+%" + re.escape(name) + r" = ([^\n]*)", hlo)
        if line:  # an operation of the program, not a runtime or Python event
            text = re.sub(r",? (metadata|backend_config|calls)=.*", "", line.group(1))
            rows.append((ms, calls[name], name, text[:160]))
    return total_ms, rows


_COMPARE_SCRIPT = """
import json, sys
from benchmark.bench import compare_engines
log = lambda s: print(s, file=sys.stderr, flush=True)
print(json.dumps(compare_engines({rev!r}, {models!r}, {runs}, {steps}, {batch}, {repeats}, log)))
"""


def _compare_main(argv=None) -> None:
    """``python -m benchmark.bench --against REV``: this engine against revision REV's.

    Runs in a child process with one XLA host device per core, as ``python -m benchmark``.
    ``--profile-step MODEL`` prints :func:`profile_step` instead.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmark.bench",
        description="Time this engine against a git revision's, interleaved in one process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--against", help="git revision of the other engine")
    parser.add_argument(
        "--profile-step", metavar="MODEL", help="per-operation times of MODEL's step instead"
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="default: every one both revisions have"
    )
    parser.add_argument(
        "--objective", default="equal", help="with --profile-step: the training objective"
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.profile_step:
        total, rows = profile_step(args.profile_step, batch=args.batch, objective=args.objective)
        what = f"{args.profile_step} ({args.objective})"
        print(f"{what}: one call, 10 runs x 200 steps on 1 device: {total:.1f} ms")
        for ms, n, name, text in rows[:25]:
            print(f"{ms:8.1f} ms {100 * ms / total:5.1f}% {n:5d}x  {name}: {text}")
        return
    if not args.against:
        parser.error("give --against REV or --profile-step MODEL")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    script = _COMPARE_SCRIPT.format(
        rev=args.against,
        models=args.models,
        runs=args.runs,
        steps=args.steps,
        batch=args.batch,
        repeats=args.repeats,
    )
    env = os.environ if "host_platform_device_count" in os.environ.get("XLA_FLAGS", "") else None
    res = subprocess.run(
        [sys.executable, "-c", script],
        env=env or _child_env(cores or 1),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    if args.json:
        with open(args.json, "w") as f:
            f.write(res.stdout)


if __name__ == "__main__":
    _compare_main()
