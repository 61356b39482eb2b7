"""How fast the engine trains: the measurements behind ``python -m benchmark bench``.

Each function measures one thing and returns numbers; the ``bench`` subcommand of
:mod:`benchmark.cli` chooses what to measure and prints it. Units: a *rate* is
run-steps per second of wall time (runs x steps / s); FLOPs come from XLA's cost
analysis of a compiled step; memory is in bytes unless a name says MB. Every rate is the
best of several calls of a program compiled beforehand.

- :func:`engine_rate`: the engine's compiled trainer (:func:`benchmark.engine.trainer`,
  the program ``train_many`` runs) over S runs, sharded over every device.
- :func:`naive_rate`: one run at a time, a Python loop over a jitted Adam step.
- :func:`data_share`: bench's own loop (a ``vmap`` over runs of a ``scan`` over steps),
  with a batch sampled at every step and with a batch fed as input.
- :func:`peak_gflops`, :func:`step_flops`: the machine's float32 matmul peak and the
  FLOPs of one training step.
- :func:`one_core_rate`, :func:`memory_by_runs`: ``python -m benchmark bench`` in a
  child process pinned to one core, or in one child per sweep size.
- :func:`compare`: ``python -m benchmark bench`` here and in a ``git worktree`` checkout
  of another revision, alternately.
- :func:`profile_step`: where a compiled step's time goes, operation by operation.
- :func:`task_scaling`: the engine's streaming rate as the number of tasks K grows.

Before a program of R runs is allocated, its memory is estimated (:func:`run_bytes`,
then XLA's buffer sizes of the compiled program) and a sweep that would not fit is
refused with a one-line ``ValueError`` naming the flag and its allowed range
(:func:`check_fits`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datagen import TaskSpec, get_preset, sample, task_weights

from ._host import cores
from .engine import TrainConfig, default_group, run_keys, trainer
from .models import ModelConfig
from .objectives import task_mse

PAPER_STEPS = 10_000_000  # the KDD18 figures' x axes run to about 10M steps
PAPER_RUNS = 200 * 3 * 3  # 200 runs x 3 models x 3 correlations
# Every timing is the best of this many (2 with --quick): a shared machine's throughput
# drifts by tens of percent.
REPEATS = 3
# The batch the default profile trains with (benchmark.protocol), measured by default.
DEFAULT_BATCH = 32
# The finite training set timed beside streaming (TrainConfig.n_train).
FINITE_N_TRAIN = 10_000_000
# Runs per device of bench's own loop (data_share, step_flops): the engine's CPU group.
LOOP_RUNS_PER_DEVICE = 10
# Held-out samples per run of every program bench times (TrainConfig.n_test).
N_TEST = 256
# Run indices are int32 (engine.run_keys): the most runs one sweep can name.
RUN_INDEX_MAX = 2**31 - 1
CORRELATION, LEARNING_RATE = 0.9, 2e-3  # every timed run's p and lr


def bench_config(steps: int, batch: int, n_train: int | None = None) -> TrainConfig:
    """The training configuration every engine program of bench uses: ``steps`` steps of
    ``batch`` samples, one evaluation at the end, :data:`N_TEST` held-out samples."""
    return TrainConfig(
        steps=steps, batch_size=batch, eval_every=steps, n_test=N_TEST, n_train=n_train
    )


# ----------------------------------------------------------------------------- memory


def peak_rss_mb() -> float:
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


def available_bytes() -> int | None:
    """Memory this process can still take, bytes, or None where it cannot be read.

    ``MemAvailable`` of /proc/meminfo, lowered to what the process's cgroup (v2) still
    allows where it sets a limit; ``sysconf``'s available pages elsewhere.
    """
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int(used)))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(
    need: int,
    *,
    flag: str,
    value: int,
    lo: int,
    what: str,
    cap: int | None = None,
    available: int | None = None,
) -> None:
    """Refuse a measurement whose memory would not fit: a one-line ``ValueError``.

    ``need`` bytes are what ``what`` (a noun phrase) takes with ``flag`` at ``value``;
    the memory is taken to grow in proportion to the flag's value, so the allowed range is
    ``[lo, hi]`` with ``hi = value x available / need`` (at most ``cap``). ``available``:
    bytes, default :func:`available_bytes` (no check where that is unknown).
    """
    available = available_bytes() if available is None else available
    over_cap = cap is not None and value > cap
    if not over_cap and (available is None or need <= available):
        return
    hi = cap if available is None else int(value * available / max(need, 1))
    hi = min(hi, cap) if cap is not None else hi
    size = f"{what}: about {_gib(need)}" + (
        f", with {_gib(available)} available" if available is not None else ""
    )
    if hi < lo:
        raise ValueError(f"{flag} {value}: {size}; not even {flag} {lo} fits on this machine")
    raise ValueError(f"{flag} must be in [{lo}, {hi}] on this machine, got {value}: {size}")


def _nbytes(tree) -> int:
    return sum(v.size * v.dtype.itemsize for v in jax.tree_util.tree_leaves(tree))


def _abstract_args(runs: int):
    """The shapes of a trainer's ``(keys, p, lr)`` for ``runs`` runs, without their memory."""
    key = jax.ShapeDtypeStruct((runs,), jax.random.key(0).dtype)
    scalar = jax.ShapeDtypeStruct((runs,), jnp.float32)
    return key, scalar, scalar


def _args(runs: int):
    """A trainer's ``(keys, p, lr)``: ``(runs,)`` keys, correlations and learning rates."""
    p = jnp.full((runs,), CORRELATION, jnp.float32)
    return run_keys(0, runs), p, jnp.full((runs,), LEARNING_RATE, jnp.float32)


def run_bytes(model: ModelConfig, task: TaskSpec, cfg: TrainConfig, devices: int) -> int:
    """Bytes one run holds for the whole call of the engine's trainer: its key,
    correlation and learning rate, and its results.

    From ``jax.eval_shape`` of the trainer at one run per device (traced, not compiled);
    a sweep of R runs holds at least R times this, whatever its run groups.
    """
    args = _abstract_args(devices)
    out = jax.eval_shape(trainer(model, task, cfg, devices), *args)
    return -(-(_nbytes(args) + _nbytes(out)) // devices)


def check_runs(model: ModelConfig, task: TaskSpec, cfg: TrainConfig, runs: int, devices: int):
    """Refuse ``runs`` runs (``--runs``) whose keys, settings and results alone would not
    fit in memory, before anything of that size is traced, compiled or allocated."""
    need = runs * run_bytes(model, task, cfg, devices)
    what = f"the keys, settings and results of {runs} runs of {model.name}"
    check_fits(need, flag="--runs", value=runs, lo=1, what=what, cap=RUN_INDEX_MAX)


def program_bytes(compiled, devices: int) -> int:
    """Bytes a compiled program takes on the host: its arguments, results and temporary
    buffers (XLA's buffer assignment, per device) times the ``devices`` it runs on."""
    stats = compiled.memory_analysis()
    if stats is None:
        return 0
    per_device = (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    )
    return per_device * devices


# ----------------------------------------------------------------------------- timing


def compile_engine(
    model: ModelConfig,
    task: TaskSpec,
    cfg: TrainConfig,
    runs: int,
    devices: int,
    group="auto",
    objective: str = "equal",
    *,
    flag: str = "--runs",
    what: str = "",
):
    """The engine's trainer of ``runs`` runs over ``devices`` devices, compiled from shapes.

    Returns ``(compiled, compile seconds)``. Refuses (:func:`check_fits`, naming ``flag``:
    ``--runs``, or ``--n-train`` for a finite training set) a program whose buffers would
    not fit in memory, before any of them is allocated.
    """
    fn = trainer(model, task, cfg, devices, group, objective)
    t0 = time.perf_counter()
    compiled = fn.lower(*_abstract_args(runs)).compile()
    compile_s = time.perf_counter() - t0
    value, lo = (cfg.n_train, cfg.batch_size) if flag == "--n-train" else (runs, 1)
    what = what or f"the engine's program for {runs} runs of {model.name}"
    check_fits(program_bytes(compiled, devices), flag=flag, value=value, lo=lo, what=what)
    return compiled, compile_s


def best_time(fn, args, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls ``fn(*args)``, each waited for."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def engine_rate(
    model: ModelConfig,
    task: TaskSpec,
    cfg: TrainConfig,
    runs: int,
    devices: int,
    repeats: int = REPEATS,
    group="auto",
    objective: str = "equal",
    *,
    flag: str = "--runs",
    what: str = "",
) -> tuple[float, float]:
    """``(run-steps/s, compile seconds)`` of the engine's trainer of ``runs`` runs.

    ``runs`` must be a multiple of ``devices``; each device trains its runs in groups of
    ``group`` (:func:`benchmark.engine.trainer`). The rate is ``runs x cfg.steps`` over the
    best of ``repeats`` calls; the first call may be slower (allocation), the best absorbs
    it. ``flag`` and ``what``: see :func:`compile_engine`.
    """
    compiled, compile_s = compile_engine(
        model, task, cfg, runs, devices, group, objective, flag=flag, what=what
    )
    return runs * cfg.steps / best_time(compiled, _args(runs), repeats), compile_s


def peak_gflops(sizes=(512, 1024, 2048), reps: int = 6) -> float:
    """float32 matmul GFLOP/s with every device busy: the best over ``sizes`` and 3 tries.

    Each device runs a chain of ``reps`` square ``(size, size)`` matmuls, all devices at
    once. The best of several sizes, so that an efficiency's denominator is not understated.
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
    """``(params, state, x, y) -> (params, state)``: one Adam step on the mean squared error
    of ``x`` (B, d) against ``y`` (B, K)."""

    def step(params, state, x, y):
        def loss(p):
            return jnp.mean(task_mse(net.apply(p, x)[0], y))

        g = jax.grad(loss)(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    return step


def _init(net, opt, key, task: TaskSpec):
    """A run's ``(params, Adam state, task weights (d, K))`` from its key."""
    k_w, k_init = jax.random.split(key)
    w = task_weights(k_w, task, CORRELATION)
    params = net.init(k_init, jnp.zeros((1, task.d), jnp.float32))
    return params, opt.init(params), w


def step_flops(model: ModelConfig, task: TaskSpec, batch: int, n_tasks: int = 2) -> float:
    """FLOPs of one training step of one run, from XLA's cost analysis: the model's forward
    and backward pass on a ``(batch, d)`` batch and an Adam update; data generation is not
    counted. Measured on :data:`LOOP_RUNS_PER_DEVICE` vmapped runs, divided by their number.
    """
    runs = LOOP_RUNS_PER_DEVICE
    net, opt = model.build(n_tasks), optax.adam(LEARNING_RATE)
    params, state, w = _init(net, opt, jax.random.key(0), task)
    x, y = sample(jax.random.key(1), task, batch, w)

    def tile(v):
        return jnp.broadcast_to(v, (runs,) + jnp.shape(v))

    args = [jax.tree_util.tree_map(tile, t) for t in (params, state, x, y)]
    compiled = jax.jit(jax.vmap(_adam_step(net, opt))).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) / runs


def naive_rate(
    model: ModelConfig, task: TaskSpec, batch: int, steps: int, repeats: int = REPEATS
) -> float:
    """Steps/s of one run trained by a Python loop over a jitted step, the way a user would
    write it: each step samples a fresh ``(batch, d)`` batch and takes one Adam step."""
    net, opt = model.build(2), optax.adam(LEARNING_RATE)
    key = jax.random.key(1)
    params, state, w = _init(net, opt, key, task)
    update = _adam_step(net, opt)

    @jax.jit
    def step(params, state, key):
        return update(params, state, *sample(key, task, batch, w))

    jax.block_until_ready(step(params, state, key))

    def loop():
        p, s = params, state
        for i in range(steps):
            p, s = step(p, s, jax.random.fold_in(key, i))
        return p

    return steps / best_time(loop, (), repeats)


def _own_loop(model: ModelConfig, task: TaskSpec, batch: int, steps: int, fed: bool):
    """Bench's own training loop, jitted: ``(keys (R,), x (R, B, d), y (R, B, K)) -> (R,)``.

    Each run trains ``steps`` Adam steps in a ``scan``; the runs are vmapped, and sharded
    over every device. ``fed``: every step trains on the run's ``(x, y)``, given as input;
    else every step samples a fresh batch (``x`` and ``y`` are unused). Returns the sum of
    each run's final parameters, so that nothing is left out of the program.
    """
    net, opt = model.build(2), optax.adam(LEARNING_RATE)
    update = _adam_step(net, opt)

    def run(key, x, y):
        params, state, w = _init(net, opt, key, task)

        def body(carry, i):
            xb, yb = (x, y) if fed else sample(jax.random.fold_in(key, i), task, batch, w)
            return update(*carry, xb, yb), None

        (params, _), _ = jax.lax.scan(body, (params, state), jnp.arange(steps))
        return sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(params))

    batched = jax.vmap(run)
    devices = jax.devices()
    if len(devices) == 1:
        return jax.jit(batched)
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))
    spec = jax.sharding.PartitionSpec("runs")
    return jax.jit(jax.shard_map(batched, mesh=mesh, in_specs=spec, out_specs=spec))


def data_share(
    model: ModelConfig, task: TaskSpec, batch: int, steps: int, repeats: int = REPEATS
) -> dict:
    """The share of a streaming step spent generating its data, in bench's own loop.

    The same loop (:func:`_own_loop`, :data:`LOOP_RUNS_PER_DEVICE` runs per device, the
    engine's layout) is compiled twice: sampling a ``(batch, d)`` batch at every step
    (``sampled``) and training on a batch fed as input (``fed``); the two are timed in
    turns. Returns run-steps/s of each and ``share = 1 - sampled / fed``.
    """
    runs = LOOP_RUNS_PER_DEVICE * jax.device_count()
    keys = run_keys(1, runs)
    w = task_weights(jax.random.key(2), task, CORRELATION)
    x, y = sample(jax.random.key(3), task, runs * batch, w)
    args = (keys, x.reshape(runs, batch, -1), y.reshape(runs, batch, -1))
    progs = {
        name: _own_loop(model, task, batch, steps, fed).lower(*args).compile()
        for name, fed in (("sampled", False), ("fed", True))
    }
    best = dict.fromkeys(progs, math.inf)
    for _ in range(repeats):
        for name, prog in progs.items():
            best[name] = min(best[name], best_time(prog, args, 1))
    rates = {name: runs * steps / t for name, t in best.items()}
    return {
        "sampled_run_steps_per_s": rates["sampled"],
        "fed_run_steps_per_s": rates["fed"],
        "share": max(0.0, 1.0 - rates["sampled"] / rates["fed"]),
    }


# ----------------------------------------------------------------------------- children


def _child_env(devices: int) -> dict:
    """This process's environment with ``devices`` XLA host devices instead of its own."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def project_dir() -> Path:
    """The folder that holds this ``benchmark`` package: where a child process started with
    ``python -m benchmark`` imports this very code."""
    return Path(__file__).resolve().parents[1]


def run_bench(
    flags: list[str],
    cwd: Path,
    *,
    env: dict | None = None,
    label: str = "bench",
    log=None,
) -> dict:
    """``python -m benchmark bench --json FLAGS`` in a child process; its JSON result.

    The child is this interpreter, started in ``cwd``, so that it imports the
    ``benchmark`` and ``datagen`` packages found there. Its log lines (stderr) go to
    ``log``, prefixed with ``[label]``; a child that fails raises a one-line ValueError
    with its last line.
    """
    cmd = [sys.executable, "-m", "benchmark", "bench", "--json", *flags]
    last = ""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for line in proc.stderr:  # each line logged once the next one comes
                if line.strip():
                    if last and log:
                        log(f"[{label}] {last}")
                    last = line.rstrip("\n")
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stderr.close()
        if code != 0:
            shown = " ".join(["python -m benchmark bench", *flags])
            last = last.removeprefix("error: ")
            raise ValueError(f"{label}: `{shown}` failed (exit status {code}): {last}")
        if last and log:
            log(f"[{label}] {last}")
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.strip()]
    return json.loads(lines[-1])


def _size_flags(model: str, runs: int, steps: int, batch: int) -> list[str]:
    return ["--engine-only", "--models", model, "--runs", str(runs), "--steps", str(steps),
            "--batch", str(batch)]  # fmt: skip


def one_core_rate(model: str, runs: int, steps: int, batch: int) -> float | None:
    """Engine run-steps/s of a child process pinned to one core, with one XLA device.

    The 1-core side of the scaling: the child is pinned from its start (XLA sizes its
    thread pools from the CPU affinity), so it really computes on one core. It runs
    ``bench --engine-only`` for ``model``: ``runs`` runs of ``steps`` steps of ``batch``.
    None where CPU affinity cannot be set (not Linux).
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    mask = os.sched_getaffinity(0)
    # A child inherits the CPU affinity of the thread that starts it: this thread's is
    # narrowed to one core while the child runs (JAX's own threads keep theirs).
    os.sched_setaffinity(0, {min(mask)})
    try:
        res = run_bench(
            _size_flags(model, runs, steps, batch),
            project_dir(),
            env=_child_env(1),
            label=f"1-core probe for {model}",
        )
    finally:
        os.sched_setaffinity(0, mask)
    if res["cores"] != 1 or res["devices"] != 1:
        found = f"{res['cores']} cores and {res['devices']} devices"
        raise RuntimeError(f"the 1-core probe for {model} ran on {found}")
    return res["architectures"][model]["engine_run_steps_per_s"]


def memory_by_runs(
    model: str = "mmoe", sizes=(25, 50, 100, 200), steps: int = 100, batch: int = DEFAULT_BATCH
) -> dict:
    """Peak RSS (MB) of a fresh process timing the engine on S runs, for each S in ``sizes``.

    One child process (``bench --engine-only``) per size, so that each reading is that
    sweep's own high-water mark; each child inherits this process's XLA_FLAGS.
    """
    out = {}
    for runs in sizes:
        flags = _size_flags(model, runs, steps, batch)
        res = run_bench(flags, project_dir(), label=f"memory probe for S={runs}")
        out[runs] = res["architectures"][model]["peak_rss_mb"]
    return out


@contextlib.contextmanager
def checkout(rev: str):
    """A ``git worktree`` checkout of revision ``rev`` of this project, in a temporary
    folder: ``(folder, commit)``. The worktree is removed afterwards, also on error."""
    repo = project_dir()

    def git(*args, cwd=repo):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ValueError(f"--against needs a git checkout of the project; {repo} is not one")
    repo = Path(top.stdout.strip())
    found = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise ValueError(f"--against: {rev!r} is not a git revision of {repo}")
    commit = found.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_against_") as tmp:
        folder = Path(tmp) / "checkout"
        added = git("worktree", "add", "--detach", str(folder), commit, cwd=repo)
        if added.returncode != 0:
            lines = added.stderr.strip().splitlines() or ["no message"]
            raise ValueError(f"--against: git worktree add failed: {lines[-1]}")
        try:
            yield folder, commit
        finally:
            if git("worktree", "remove", "--force", str(folder), cwd=repo).returncode != 0:
                git("worktree", "prune", cwd=repo)


def compare(rev: str, flags: list[str], rounds: int = 2, log=None) -> dict:
    """The engine's streaming rate here against git revision ``rev``'s.

    ``python -m benchmark bench --json FLAGS`` runs in a child process in this project's
    folder and in a ``git worktree`` checkout of ``rev`` (:func:`checkout`), alternately,
    ``rounds`` times each; each side's rate of an architecture is its best. FLAGS must be
    flags that ``rev``'s bench knows. Returns, per architecture both report,
    ``{"this_run_steps_per_s", "rev_run_steps_per_s", "speedup"}`` (this / rev).
    """
    log = log or (lambda s: None)
    best: dict[str, dict[str, float]] = {"this": {}, "rev": {}}
    with checkout(rev) as (folder, commit):
        for _ in range(rounds):
            for side, cwd, label in (("this", project_dir(), "this"), ("rev", folder, rev)):
                res = run_bench(flags, cwd, label=label, log=log)
                for name, entry in res["architectures"].items():
                    rate = entry["engine_run_steps_per_s"]
                    best[side][name] = max(best[side].get(name, 0.0), rate)
    out = {"against": rev, "commit": commit, "flags": flags, "rounds": rounds}
    archs = out["architectures"] = {}
    for name, this in best["this"].items():
        if name in best["rev"]:
            other = best["rev"][name]
            archs[name] = {
                "this_run_steps_per_s": this,
                "rev_run_steps_per_s": other,
                "speedup": this / other,
            }
            log(f"{name:<14} {rev} {other:8.0f}, this {this:8.0f} run-steps/s: "
                f"x{this / other:.2f}")  # fmt: skip
    return out


# ----------------------------------------------------------------------------- sweeps


def trains(model: str, objective: str, cfg: TrainConfig | None = None) -> bool:
    """Whether ``model`` can train with ``objective`` (:func:`engine.check`: MGDA-UB needs
    a registered shared representation)."""
    from .engine import check

    try:
        check(ModelConfig.of(model), cfg or TrainConfig(), objective)
    except ValueError:
        return False
    return True


def objective_costs(models, objectives, task, cfg: TrainConfig, runs: int, repeats: int, log=None):
    """The engine's streaming training cost of each objective against ``equal``:
    ``{model: {objective: {"run_steps_per_s", "ratio"}}}``, ratio = equal's rate / its rate.

    The compiled programs of one model are timed in turns, ``repeats`` rounds, best of each:
    the machine's drift hits every objective alike.
    """
    from .objectives import names as objective_names

    log = log or (lambda s: None)
    objectives = ["equal", *(o for o in objectives or objective_names() if o != "equal")]
    n_dev = jax.device_count()
    args = _args(runs)
    out = {}
    for name in models:
        usable = [o for o in objectives if trains(name, o)]
        if len(usable) < len(objectives):
            log(f"{name:<14} cannot train {', '.join(sorted(set(objectives) - set(usable)))}")
        model = ModelConfig.of(name)
        fns = {o: compile_engine(model, task, cfg, runs, n_dev, "auto", o)[0] for o in usable}
        best = dict.fromkeys(usable, math.inf)
        for _ in range(repeats):
            for o, fn in fns.items():
                best[o] = min(best[o], best_time(fn, args, 1))
        rows = out[name] = {
            o: {"run_steps_per_s": runs * cfg.steps / t, "ratio": t / best["equal"]}
            for o, t in best.items()
        }
        log(f"{name:<14} cost against equal: " + ", ".join(
            f"{o} {r['ratio']:.2f}x" for o, r in rows.items()))  # fmt: skip
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


def group_sweep(models, task, cfg: TrainConfig, runs: int, groups, log=None) -> dict:
    """The engine's streaming run-steps/s for each run-group size: ``{model: {group: rate}}``.

    ``groups`` holds positive integers and None (all of a device's runs in one group,
    reported as ``"all"``); best of 2 calls each.
    """
    log = log or (lambda s: None)
    n_dev = jax.device_count()
    out = {}
    for name in models:
        rates = out[name] = {}
        for group in groups:
            what = f"the engine's program for {runs} runs of {name} in groups of {group or 'all'}"
            rate, _ = engine_rate(ModelConfig.of(name), task, cfg, runs, n_dev, 2, group, what=what)
            rates["all" if group is None else str(group)] = rate
        log(f"{name:<14} by run group: " + ", ".join(f"{g}: {r:.0f}" for g, r in rates.items()))
    return out


# The architectures of the many-task study (and PLE): their cost per run-step against K.
TASK_MODELS = ("single_task", "shared_bottom", "mmoe", "dselect_k", "cgc", "ple", "adatt")
TASK_STEPS = 200  # steps per run of the K-scaling programs


def task_scaling(models, task, cfg: TrainConfig, runs: int, ks, log=None) -> dict:
    """The engine's streaming run-steps/s with K tasks, on one device: ``{model: {K:
    rate}}``, each the best of 2 calls of ``runs`` runs of ``cfg.steps`` steps. K = 2 is
    what every other experiment trains, so ``rate[2] / rate[K]`` is the cost of K tasks.

    One device, because a program with 8 or more tasks sharded over two XLA *host*
    devices can stall in XLA's CPU runtime (every thread waiting, no progress); on one
    device it never has (docs/performance.md).
    """
    log = log or (lambda s: None)
    out = {}
    for name in models:
        rates, model = out.setdefault(name, {}), ModelConfig.of(name)
        for k in ks:
            kcfg = dataclasses.replace(cfg, n_tasks=k)
            what = f"the engine's program for {runs} runs of {name} with {k} tasks"
            rates[str(k)], _ = engine_rate(model, task, kcfg, runs, 1, 2, what=what)
        log(f"{name:<14} by tasks K (1 device): "
            + ", ".join(f"{k}: {r:.0f}" for k, r in rates.items()))  # fmt: skip
    return out


def measure(
    models,
    *,
    runs: int,
    steps: int,
    batch: int = DEFAULT_BATCH,
    n_train: int = FINITE_N_TRAIN,
    quick: bool = False,
    engine_only: bool = False,
    groups=(),
    objectives=None,
    tasks=(),
    log=None,
) -> dict:
    """Every measurement of ``models`` (architecture names); the JSON-ready result.

    For each architecture, in one process: the engine's streaming program over ``runs``
    runs (rounded up to whole runs per device) of ``steps`` steps of ``batch`` samples,
    then, unless ``engine_only``: the engine with a finite training set of ``n_train``
    samples, the naive loop, the step's FLOPs, the data share of bench's own loop and,
    unless ``quick``, the 1-core probe (a child process). The matmul peak is read after
    each architecture and the best reading kept: efficiencies are never flattered by a
    slow reading. Every rate is the best of :data:`REPEATS` timings (2 with ``quick``).
    ``groups`` (see :func:`parse_groups`) adds :func:`group_sweep`, ``objectives`` (a
    list, empty for every registered one) :func:`objective_costs`, for Shared-Bottom and
    MMoE where measured (else the first architecture). ``tasks`` (numbers of tasks K)
    adds :func:`task_scaling` for the architectures of :data:`TASK_MODELS` measured.
    """
    log = log or (lambda s: None)
    task = get_preset("kdd18")
    cfg = bench_config(steps, batch)
    cfg_finite = bench_config(steps, batch, n_train)
    n_dev = jax.device_count()
    runs = -(-runs // n_dev) * n_dev  # whole runs per device
    repeats = 2 if quick else REPEATS
    sizes = (512, 1024) if quick else (512, 1024, 2048)
    peaks: list[float] = []
    result = {
        "peak_gflops": None,  # filled in at the end: the best reading
        "peak_gflops_readings": peaks,
        "cores": cores(),
        "devices": n_dev,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "runs": runs,
        "steps": steps,
        "batch_size": batch,
        "n_test": N_TEST,
        "finite_set_n_train": None if engine_only else n_train,
        "timing": f"best of {repeats}",
        "group": default_group(),
        "architectures": {},
    }
    for name in models:
        model = ModelConfig.of(name)
        check_runs(model, task, cfg, runs, n_dev)
        rate, compile_s = engine_rate(model, task, cfg, runs, n_dev, repeats)
        entry = result["architectures"][name] = {
            "engine_run_steps_per_s": rate,
            "engine_samples_per_s": rate * batch,
            "compile_s": compile_s,
            "peak_rss_mb": peak_rss_mb(),
        }
        if engine_only:
            log(f"{name:<14} engine {rate:7.0f} run-steps/s | compile {compile_s:4.1f} s")
            continue
        what = f"the engine's program for {runs} runs of {name} with {n_train} training samples"
        finite, _ = engine_rate(
            model, task, cfg_finite, runs, n_dev, repeats, flag="--n-train", what=what
        )
        naive = naive_rate(model, task, batch, steps, repeats)
        flops = step_flops(model, task, batch)
        share = data_share(model, task, batch, steps, repeats)
        # The 1-core process costs a compilation and a slow run: skipped by --quick.
        rate_1 = None if quick else one_core_rate(name, runs, steps, batch)
        entry.update(
            {
                "naive_run_steps_per_s": naive,
                "speedup_vs_naive": rate / naive,
                "flops_per_run_step": flops,
                "achieved_gflops": flops * rate / 1e9,
                "engine_run_steps_per_s_1_core": rate_1,
                "scaling_vs_1_core": None if rate_1 is None else rate / rate_1,
                "finite_set": {
                    "n_train": n_train,
                    "engine_run_steps_per_s": finite,
                    "ratio_to_streaming": finite / rate,
                },
                "data_share": {
                    **share,
                    "fed_achieved_gflops": flops * share["fed_run_steps_per_s"] / 1e9,
                },
                "peak_rss_mb": peak_rss_mb(),
                "paper_protocol_hours_extrapolated": PAPER_RUNS * PAPER_STEPS / rate / 3600,
            }
        )
        one = "" if rate_1 is None else f" ({rate_1:.0f} on 1 core, x{rate / rate_1:.2f})"
        log(
            f"{name:<14} engine {rate:7.0f} run-steps/s{one}, naive {naive:5.0f} "
            f"(x{rate / naive:4.1f}), {flops * rate / 1e9:5.1f} GFLOP/s | finite set "
            f"x{finite / rate:.2f} | data share {share['share']:.2f} | compile "
            f"{compile_s:4.1f} s, RSS {peak_rss_mb():.0f} MB"
        )
        peaks.append(peak_gflops(sizes))
    sweep_models = [m for m in ("shared_bottom", "mmoe") if m in models] or list(models)[:1]
    if groups:
        result["group_sweep"] = group_sweep(sweep_models, task, cfg, runs, groups, log)
    if objectives is not None:
        result["objective_cost"] = objective_costs(
            sweep_models, objectives, task, cfg, runs, repeats, log
        )
    if tasks:
        scaled = [m for m in models if m in TASK_MODELS] or list(models)[:1]
        short = bench_config(min(steps, TASK_STEPS), batch)  # K = 16 is up to 9x slower
        result["task_scaling"] = task_scaling(scaled, task, short, runs, tasks, log)
    if peaks:
        peak = result["peak_gflops"] = max(peaks)
        readings = ", ".join(f"{p:.0f}" for p in peaks)
        log(f"best peak reading {peak:.1f} GFLOP/s (readings: {readings})")
        for name, entry in result["architectures"].items():
            fed = entry["data_share"]
            entry["efficiency"] = entry["achieved_gflops"] / peak
            fed["fed_efficiency"] = fed["fed_achieved_gflops"] / peak
            log(f"{name:<14} efficiency: {entry['efficiency']:.2f} streaming, "
                f"{fed['fed_efficiency']:.2f} on a fed batch")  # fmt: skip
    return result


# ----------------------------------------------------------------------------- profile


def profile_step(
    model: str,
    runs: int = LOOP_RUNS_PER_DEVICE,
    steps: int = 200,
    batch: int = DEFAULT_BATCH,
    objective: str = "equal",
):
    """Where a streaming step's time goes: XLA's per-operation times, from a trace.

    Traces one call of the engine's compiled trainer of ``runs`` runs (one group) for
    ``steps`` steps on one device and sums the duration of each operation of the compiled
    program (a fusion, a dot, ...) over the call. Returns ``(total_ms, [(ms, calls, name,
    hlo)])``, largest first; ``hlo`` is the operation's line of the compiled HLO, shortened.
    """
    cfg = bench_config(steps, batch)
    args = _args(runs)
    task = get_preset("kdd18")
    compiled, _ = compile_engine(ModelConfig.of(model), task, cfg, runs, 1, runs, objective)
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory(prefix="step_trace_") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            total_ms = (time.perf_counter() - t0) * 1e3
        trace = next(Path(folder).rglob("*.trace.json.gz"))
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


__all__ = [
    "DEFAULT_BATCH",
    "FINITE_N_TRAIN",
    "available_bytes",
    "bench_config",
    "check_fits",
    "check_runs",
    "compare",
    "data_share",
    "engine_rate",
    "measure",
    "memory_by_runs",
    "naive_rate",
    "one_core_rate",
    "peak_gflops",
    "profile_step",
    "run_bench",
    "step_flops",
]
