"""The training engine: one pure function trains one run; ``jit(vmap(...))`` trains many.

A run is a seed: from its key come the task weights (u vectors), the test set, the
training data and the model initialisation. The correlation ``p`` and the learning rate
are traced inputs, so sweeping them never recompiles. Runs are sharded over every device
of this process (``jax.local_devices()``: every device, unless ``jax.distributed`` joined
several processes); a run's numbers depend on how many devices there are only at float
rounding. On each device the runs train in groups of ``group`` (a ``vmap``), one group
after the other (``lax.map``): on a CPU a small group keeps its parameters and optimiser
state in cache.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from datagen import TaskSpec, draw_indices, points, sample, task_weights, validate_correlation

from . import objectives
from .models import ModelConfig
from .models import get as get_arch
from .models import names as arch_names

__all__ = [
    "TrainConfig",
    "Schedule",
    "train_run",
    "train_many",
    "trainer",
    "select_lr",
    "check",
    "early_stopped",
    "run_data",
    "RunKeys",
    "run_keys",
    "default_group",
    "LR_GRID",
    "NUMERICS_VERSION",
]

# Bumped by every change that alters a run's numbers for the same spec and key (a new
# sampler, a new parameter layout, a new step): it is part of every run spec's hash, so
# stored results of an older version are never taken for new ones.
#   1: threefry draws per batch, flax parameter layout of benchmark/models, optax.adam.
#   2: Gaussians by one-output Box-Muller over threefry2x32 blocks (datagen.core._normal),
#      not erfinv; the label noise is summed with the sinusoids; Adam folds its bias
#      corrections into two scalars (optax.adam's formula, rounded differently); the
#      single-task bottoms are laid out (d, K, units); CGC/PLE's first layer contracts x
#      once instead of a copy per task (same parameters, other float rounding).
NUMERICS_VERSION = 2

LR_GRID = (1e-4, 1e-3, 1e-2)
# Runs vmapped together on a CPU device. Measured with ``python -m benchmark bench --groups``
# (README, "Performance"): 2-10 runs per device keep a group's parameters, Adam moments and
# activations in the core's cache, and are 1.2-1.45x faster than 100 at once.
CPU_GROUP = 10
# On a CPU, a trainer of this many tasks or more runs on one XLA host device by default:
# sharded over two host devices, K = 16 programs stall (every thread of the process waits
# and none computes, in XLA's CPU runtime, at random steps; docs/performance.md).
CPU_SHARD_MAX_TASKS = 8


SCHEDULES = ("constant", "wsd", "cosine")
MAX_TRAIN = 2**31 - 1  # the largest training set: its indices are int32 draws


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The learning rate's shape over training; the (traced) peak learning rate scales it.

    Attributes:
      kind: ``constant``; ``wsd`` (warmup-stable-decay: constant, then a linear decay to 0
        over the last ``decay`` fraction of the steps); or ``cosine`` (a cosine decay to 0
        over all steps after the warmup).
      warmup: fraction of the steps of linear warmup from 0 (every kind).
      decay: ``wsd`` only: the fraction of the steps of the final linear decay.
    """

    kind: str = "wsd"
    warmup: float = 0.0
    decay: float = 0.2

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule kind must be one of: {', '.join(SCHEDULES)}; "
                             f"got {self.kind!r}")  # fmt: skip
        for name in ("warmup", "decay"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"schedule {name} must be a fraction in [0, 1], got {v!r}")
        if self.warmup + (self.decay if self.kind == "wsd" else 0.0) > 1.0:
            raise ValueError("schedule warmup + decay must be at most 1")

    def factor(self, step, total: int):
        """Multiplier of the peak learning rate at ``step`` (0-based) of ``total`` steps."""
        step = jnp.asarray(step, jnp.float32)
        warm = self.warmup * total
        up = jnp.minimum(1.0, (step + 1.0) / warm) if warm > 0 else 1.0
        if self.kind == "constant":
            return up * jnp.ones_like(step)
        if self.kind == "wsd":
            span = self.decay * total
            down = jnp.clip((total - step) / span, 0.0, 1.0) if span > 0 else 1.0
            return up * down
        frac = jnp.clip((step - warm) / max(total - warm, 1.0), 0.0, 1.0)
        return up * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How every run of a sweep trains.

    Attributes:
      steps: Adam steps per run; a multiple of ``eval_every``.
      batch_size: samples per step.
      eval_every: steps between two test evaluations.
      n_test: held-out samples per run, drawn with the run's task weights.
      n_train: size of a fixed training set per run, from 1 to 2**31 - 1, or None for an
        endless stream of fresh samples at every step (the paper's "repeat until enough
        data"). Each step draws its batch uniformly *with replacement* from the set, whose
        points are regenerated from their index (:func:`run_data`): any size costs what
        the stream costs.
      n_val: size of a held-out validation set per run (0: none). The validation MSE is
        recorded at every evaluation, and each task's test MSE at its lowest validation
        MSE is kept (early stopping, :func:`early_stopped`). 0 is left out of
        :meth:`to_dict`, so specs without one hash as before.
      n_tasks: K.
      schedule: the learning rate's shape over training (:class:`Schedule`), or None for
        a constant learning rate. None is left out of :meth:`to_dict`, so specs without a
        schedule hash as they did before schedules existed.
    """

    steps: int = 30_000
    batch_size: int = 128
    eval_every: int = 1_000
    n_test: int = 2_000
    n_train: int | None = None
    n_tasks: int = 2
    schedule: Schedule | None = None
    n_val: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "n_test", "n_tasks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.steps % self.eval_every:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})"
            )
        if not isinstance(self.n_val, int) or isinstance(self.n_val, bool) or self.n_val < 0:
            raise ValueError(f"n_val must be an integer >= 0, got {self.n_val!r}")
        if self.n_train is not None:
            if not isinstance(self.n_train, int) or not 1 <= self.n_train <= MAX_TRAIN:
                raise ValueError(
                    f"n_train must be an integer in [1, {MAX_TRAIN}] or None (the stream), "
                    f"got {self.n_train!r}"
                )
            if self.batch_size > self.n_train:
                raise ValueError(
                    f"batch_size ({self.batch_size}) must be <= n_train ({self.n_train})"
                )

    @property
    def n_evals(self) -> int:
        """Number of evaluations, the initial one (step 0) included."""
        return self.steps // self.eval_every + 1

    def eval_steps(self) -> np.ndarray:
        """Steps at which the test MSE is recorded, shape (n_evals,)."""
        return np.arange(self.n_evals) * self.eval_every

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if self.schedule is None:
            out.pop("schedule")
        if not self.n_val:
            out.pop("n_val")
        return out


def _gate_stats(gates, n_tasks: int) -> dict:
    """Per-task statistics of gate weights ``(N, K, E)``; zeros of width 0 if ungated."""
    if gates is None:
        empty = jnp.zeros((n_tasks, 0))
        nan = jnp.full((n_tasks,), jnp.nan)
        return {
            "gate_mean": empty,
            "gate_entropy": nan,
            "gate_polarization": nan,
            "expert_utilization": nan,
        }
    eps = 1e-12
    mean = gates.mean(0)  # (K, E)
    entropy = -(gates * jnp.log(gates + eps)).sum(-1).mean(0)  # (K,)
    n_experts = gates.shape[-1]
    return {
        # Average weight each task gives each expert.
        "gate_mean": mean,
        # Mean per-sample entropy (nats): 0 = one expert per sample, log E = uniform.
        "gate_entropy": entropy,
        # Mean per-sample largest weight: 1 = fully polarised (hard routing).
        "gate_polarization": gates.max(-1).mean(0),
        # Effective number of experts a task uses, exp(entropy of its mean weights), / E.
        "expert_utilization": jnp.exp(-(mean * jnp.log(mean + eps)).sum(-1)) / n_experts,
    }


ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults


def _adam_init(params):
    """Adam's state: the step count and the two moments, zeros like ``params``."""
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return jnp.zeros([], jnp.int32), zeros, zeros


def _adam_update(params, state, grads, rate):
    """One Adam step (Kingma & Ba, Algorithm 1; optax.adam's formula and defaults).

    ``params - rate(t) * m_hat / (sqrt(v_hat) + eps)``, with the bias corrections folded
    into two scalars: one division and one square root per parameter, where optax.adam
    divides three times. ``rate(count)`` is the learning rate of the 0-based step.
    """
    count, mu, nu = state
    t = (count + 1).astype(jnp.float32)
    step = rate(count) / (1.0 - ADAM_B1**t)
    nu_scale = 1.0 / (1.0 - ADAM_B2**t)

    def leaf(p, g, m, v):
        m = (1.0 - ADAM_B1) * g + ADAM_B1 * m
        v = (1.0 - ADAM_B2) * (g * g) + ADAM_B2 * v
        return p - step * m / (jnp.sqrt(v * nu_scale) + ADAM_EPS), m, v

    leaves, tree = jax.tree_util.tree_flatten(params)
    others = (tree.flatten_up_to(x) for x in (grads, mu, nu))
    new = [leaf(*a) for a in zip(leaves, *others, strict=True)]
    params, mu, nu = (tree.unflatten(part) for part in zip(*new, strict=True))
    return params, (count + 1, mu, nu)


def _grad_cosine(net, params, x, y, mask, n_tasks: int):
    """The tasks' gradient cosine on the shared parameters (mean over task pairs; NaN if
    nothing is shared), on the points ``x (n, d)``, ``y (n, K)``."""
    _, grads = objectives.task_grads(objectives.per_task_mse(net), params, x, y)
    g = objectives.gram(grads, mask)  # (K, K)
    norm = jnp.sqrt(jnp.maximum(jnp.diag(g), 1e-30))
    cos = g / (norm[:, None] * norm[None, :])
    iu = jnp.triu_indices(n_tasks, 1)
    shared = any(bool(np.any(m)) for m in jax.tree_util.tree_leaves(mask))
    return jnp.mean(cos[iu]) if shared and n_tasks > 1 else jnp.float32(jnp.nan)


def _expert_cosine(net, params, x) -> jax.Array:
    """Mean pairwise cosine between the experts' outputs on ``x`` (each expert's (B, H)
    output flattened), over every expert group a model sows as ``expert_outputs``; NaN for
    a model with none. 1 means every expert computes the same function (collapse)."""
    _, state = net.apply(params, x, mutable=["intermediates"])
    found = [
        v
        for path, v in jax.tree_util.tree_leaves_with_path(state)
        if "expert_outputs" in jax.tree_util.keystr(path)
    ]
    if not found:
        return jnp.float32(jnp.nan)
    sims = []
    for e in found:  # (B, E, H)
        v = jnp.moveaxis(e, 1, 0).reshape(e.shape[1], -1)  # (E, B*H)
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        c = v @ v.T
        iu = jnp.triu_indices(e.shape[1], 1)
        sims.append(jnp.mean(c[iu]))
    return jnp.mean(jnp.stack(sims))


DIAGNOSTIC_POINTS = 256  # test points the gradient cosine is measured on, at each evaluation


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """A run's independent PRNG streams, each drawn from the run's key.

    The first four are ``jax.random.split(key, 4)``; the others ``fold_in(key, i)`` with an
    index of their own, so adding a stream never moves an existing one.
    """

    weights: jax.Array  # the task weights (u vectors)
    test: jax.Array  # the held-out test set
    train: jax.Array  # the training stream, or the training set's sequence of points
    init: jax.Array  # the parameter initialisation
    objective: jax.Array  # the objective's randomness (PCGrad's order, RLW's weights)
    val: jax.Array  # the validation set

    @classmethod
    def of(cls, key) -> RunKeys:
        k_w, k_test, k_train, k_init = jax.random.split(key, 4)
        fold = functools.partial(jax.random.fold_in, key)
        return cls(k_w, k_test, k_train, k_init, fold(5), fold(7))


@dataclasses.dataclass(frozen=True)
class Data:
    """A run's data: a training batch per step, and its held-out sets.

    Attributes:
      batch: ``batch(step) -> (x (B, d), y (B, K))``: the stream's fresh points, or
        ``B`` points drawn with replacement from the training set's ``n_train``.
      x_test, y_test: ``(n_test, d)``, ``(n_test, K)``.
      x_val, y_val: ``(n_val, d)``, ``(n_val, K)``; None when ``n_val`` is 0.
    """

    batch: Callable
    x_test: jax.Array
    y_test: jax.Array
    x_val: jax.Array | None
    y_val: jax.Array | None


def run_data(keys: RunKeys, task: TaskSpec, cfg: TrainConfig, w) -> Data:
    """The data of a run with task weights ``w (d, K)`` (see :class:`Data`).

    A finite training set is the points ``0 .. n_train - 1`` of the sequence that the
    run's ``train`` key defines (:func:`datagen.sample_at`): each step draws ``B`` indices
    uniformly with replacement and regenerates those points, so a set of any size costs
    what the stream costs and is held by no array.
    """
    x_test, y_test = sample(keys.test, task, cfg.n_test, w)
    x_val = y_val = None
    if cfg.n_val:
        x_val, y_val = sample(keys.val, task, cfg.n_val, w)
    if cfg.n_train is None:

        def batch(step):
            return sample(jax.random.fold_in(keys.train, step), task, cfg.batch_size, w)

    else:
        at = points(keys.train, task, w)

        def batch(step):
            k = jax.random.fold_in(keys.train, step)
            return at(draw_indices(k, cfg.batch_size, cfg.n_train))

    return Data(batch, x_test, y_test, x_val, y_val)


def _learning_rate(lr, cfg: TrainConfig) -> Callable:
    """``rate(count)``: the learning rate of the 0-based step ``count``."""
    if cfg.schedule is None:
        return lambda count: lr
    return lambda count: lr * cfg.schedule.factor(count, cfg.steps)


def _step_fn(net, model: ModelConfig, obj, batch, rate, mask, k_obj) -> Callable:
    """One training step, ``step((params, opt_state, obj_state), i) -> (carry, None)``:
    the objective's direction on batch ``i`` (:func:`objectives.direction`, one path per
    kind of objective), then Adam."""
    loss_k = objectives.per_task_mse(net)
    rep_fn = None
    if obj.needs_representation:
        rep_fn = objectives.representation_losses(net, get_arch(model.name).representation)

    def step(carry, i):
        params, opt_state, st = carry
        x, y = batch(i)
        g, _, st, _ = objectives.direction(
            obj, loss_k, params, x, y, st, jax.random.fold_in(k_obj, i), mask, rep_fn
        )
        params, opt_state = _adam_update(params, opt_state, g, rate)
        if obj.needs_new_losses:
            st = obj.after_step(st, loss_k(params, x, y))
        return (params, opt_state, st), None

    return step


def _evaluator(net, data: Data, mask, n_tasks: int) -> Callable:
    """``evaluate(params) -> (test (K,), val (K,), grad_cosine ())``: the test MSE per
    task, the validation MSE per task (NaN without a validation set), and the tasks'
    gradient cosine on the first :data:`DIAGNOSTIC_POINTS` test points."""
    x_diag, y_diag = data.x_test[:DIAGNOSTIC_POINTS], data.y_test[:DIAGNOSTIC_POINTS]

    def mse(params, x, y):
        preds, _ = net.apply(params, x)
        return objectives.task_mse(preds, y)

    def evaluate(params):
        test = mse(params, data.x_test, data.y_test)
        if data.x_val is None:
            val = jnp.full((n_tasks,), jnp.nan, test.dtype)
        else:
            val = mse(params, data.x_val, data.y_val)
        return test, val, _grad_cosine(net, params, x_diag, y_diag, mask, n_tasks)

    return evaluate


def early_stopped(curves, val_curves):
    """Per task, the test MSE at the evaluation of lowest validation MSE: ``(best (K,),
    best_eval (K,) int32)``, the evaluation's index; from ``curves`` and ``val_curves``
    ``(n_evals, K)``. The first evaluation wins ties; NaN (and index -1) without a
    validation set."""
    has_val = jnp.all(jnp.isfinite(val_curves), axis=0)  # (K,)
    safe = jnp.where(jnp.isfinite(val_curves), val_curves, jnp.inf)
    idx = jnp.argmin(safe, axis=0)  # (K,)
    best = jnp.take_along_axis(curves, idx[None], axis=0)[0]
    return jnp.where(has_val, best, jnp.nan), jnp.where(has_val, idx, -1).astype(jnp.int32)


def train_run(
    key, p, lr, *, model: ModelConfig, task: TaskSpec, cfg: TrainConfig, objective: str = "equal"
) -> dict:
    """Train one run. Pure: the same (key, p, lr) gives the same numbers.

    Args:
      key: the run's PRNG key (its streams: :class:`RunKeys`).
      p: task-weight cosine (traced): a scalar, or a ``(K, K)`` cosine matrix.
      lr: scalar Adam learning rate (traced).
      model: architecture and sizes.
      task: generator constants (a :class:`datagen.TaskSpec`).
      cfg: training configuration.
      objective: a registered training objective (:mod:`benchmark.objectives`), by name
        (its paper defaults) or as an instance (``objectives.get(name, **hyper)``);
        ``equal`` is the mean of the task MSEs.
    Returns:
      dict of arrays: ``curves`` (n_evals, K) test MSE per task; ``final`` (K,) test MSE at
      the end; ``val_curves`` (n_evals, K) validation MSE (NaN without a validation set);
      ``best`` (K,) the early-stopped test MSE and ``best_eval`` (K,) its evaluation
      (:func:`early_stopped`); ``diverged`` () bool; ``grad_cosine`` (n_evals,) the tasks'
      gradient cosine on the shared parameters at each evaluation (on the first 256 test
      points); ``expert_cosine`` () the experts' output similarity at the end;
      ``gate_mean`` (K, E); ``gate_entropy``, ``gate_polarization``,
      ``expert_utilization`` (K,).
    """
    keys = RunKeys.of(key)
    net = model.build(cfg.n_tasks)
    data = run_data(keys, task, cfg, task_weights(keys.weights, task, p, cfg.n_tasks))
    params = net.init(keys.init, data.x_test[:1])
    obj = objectives.resolve(objective)
    mask = objectives.shared_mask_at_init(net, task.d)  # concrete: the architecture's
    step = _step_fn(net, model, obj, data.batch, _learning_rate(lr, cfg), mask, keys.objective)
    evaluate = _evaluator(net, data, mask, cfg.n_tasks)

    def block(carry, b):
        carry, _ = jax.lax.scan(step, carry, b * cfg.eval_every + jnp.arange(cfg.eval_every))
        return carry, evaluate(carry[0])

    initial = evaluate(params)
    carry = (params, _adam_init(params), obj.init(cfg.n_tasks))
    (params, _, _), evals = jax.lax.scan(block, carry, jnp.arange(cfg.n_evals - 1))
    curves, val_curves, cos = (
        jnp.concatenate([a[None], b], axis=0) for a, b in zip(initial, evals, strict=True)
    )
    final = curves[-1]
    _, gates = net.apply(params, data.x_test)
    out = {"curves": curves, "final": final, "val_curves": val_curves}
    out["best"], out["best_eval"] = early_stopped(curves, val_curves)
    out["grad_cosine"] = cos
    out["expert_cosine"] = _expert_cosine(net, params, data.x_test)
    out["diverged"] = ~(jnp.all(jnp.isfinite(curves)) & jnp.all(jnp.isfinite(final)))
    out.update(_gate_stats(gates, cfg.n_tasks))
    return out


def default_devices(n_tasks: int, available: int, backend: str) -> int:
    """Devices :func:`train_many` shards runs over when the caller names none: all of them,
    but one on a CPU for ``n_tasks >= CPU_SHARD_MAX_TASKS`` (a workaround of the XLA
    stall; a speed setting, the numbers are the same up to float rounding)."""
    if backend == "cpu" and n_tasks >= CPU_SHARD_MAX_TASKS:
        return 1
    return available


def default_group() -> int | None:
    """Runs per group: ``CPU_GROUP`` on a CPU, None (every run of a device at once) elsewhere.

    An accelerator wants all its runs in flight together; a CPU core wants a group whose
    working set fits its cache.
    """
    return CPU_GROUP if jax.default_backend() == "cpu" else None


def _pad_runs(arrays, pad: int) -> list:
    """Each ``(R, ...)`` array with ``pad`` copies of its run 0 appended (outputs dropped later)."""
    return [jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a for a in arrays]


def _grouped(fn, group: int | None):
    """``fn`` vmapped over ``(R,)`` runs, computed ``group`` runs at a time.

    ``R`` runs become ``ceil(R / group)`` groups of equal size (the last padded with copies of
    run 0, whose outputs are dropped); ``lax.map`` trains the groups one after the other.
    """
    batched = jax.vmap(fn)

    def run(keys, p, lr):
        n = keys.shape[0]
        if group is None or group >= n:
            return batched(keys, p, lr)
        n_groups = -(-n // group)
        size = -(-n // n_groups)  # the most even split into n_groups groups
        pad = n_groups * size - n
        args = [a.reshape((n_groups, size) + a.shape[1:]) for a in _pad_runs((keys, p, lr), pad)]
        out = jax.lax.map(lambda a: batched(*a), tuple(args))
        return jax.tree_util.tree_map(
            lambda v: v.reshape((n_groups * size,) + v.shape[2:])[:n], out
        )

    return run


def trainer(
    model: ModelConfig,
    task: TaskSpec,
    cfg: TrainConfig,
    n_devices: int,
    group: int | str | None = "auto",
    objective: str = "equal",
):
    """The jitted trainer of ``(R,)`` runs for one (model, spec, config, objective), sharded
    over runs.

    Each device trains its ``R / n_devices`` runs in groups of ``group`` (``"auto"``:
    :func:`default_group`); ``R`` must be a multiple of ``n_devices``.
    """
    group = default_group() if group == "auto" else group
    return _compiled_for(model, task, cfg, n_devices, group, objective)


def check(model: ModelConfig, cfg: TrainConfig, objective="equal"):
    """Validate that ``model`` trains ``cfg.n_tasks`` tasks under ``objective``, the one
    compatibility check of the project (the run spec, ``train_many`` and ``bench`` call it).

    Builds the network once: a ValueError names a bad architecture name or size, an
    unknown objective, or an objective that needs a registered shared representation
    (MGDA-UB) on an architecture without one (or whose registered submodule does not
    exist: checked by tracing shapes only). Returns the resolved objective.
    """
    net = model.build(cfg.n_tasks)  # validates the name and sizes
    obj = objectives.resolve(objective)  # unknown names fail here
    if not obj.needs_representation:
        return obj
    rep = get_arch(model.name).representation
    if not rep:
        having = [n for n in arch_names() if get_arch(n).representation]
        raise ValueError(
            f"objective {obj.name} needs an architecture with a registered shared "
            f"representation ({', '.join(having)}); {model.name} has none"
        )
    x = jnp.zeros((2, 4), jnp.float32)
    y = jnp.zeros((2, cfg.n_tasks), jnp.float32)

    def losses():
        params = net.init(jax.random.key(0), x)
        return objectives.representation_losses(net, rep)(params, x, y, None)

    try:
        jax.eval_shape(losses)
    except ValueError as e:
        raise ValueError(f"architecture {model.name}: representation={rep!r}: {e}") from None
    return obj


@functools.lru_cache(maxsize=64)
def _compiled_for(model, task, cfg, n_devices: int, group: int | None, objective: str = "equal"):
    run = functools.partial(train_run, model=model, task=task, cfg=cfg, objective=objective)
    fn = _grouped(run, group)
    options = _compiler_options(objectives.resolve(objective))
    if n_devices == 1:
        return jax.jit(fn, compiler_options=options)
    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("runs",))
    spec_runs = PartitionSpec("runs")
    # Every run is independent: each device computes its own runs, no communication.
    return jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=spec_runs, out_specs=spec_runs, check_vma=False),
        compiler_options=options,
    )


def _compiler_options(obj) -> dict | None:
    """XLA options of a trainer for objective ``obj``: None (XLA's defaults) off a CPU and
    where ``obj.xla_cpu_defaults``.

    On a CPU, the objectives' per-task-gradient helpers (``gram``, ``combine``: K x n
    multiply-reductions per leaf) run slower as YNNPACK reduce fusions than as XLA's own
    loops (docs/objectives.md, "Cost"), so their trainers keep XLA's YNNPACK fusions to
    single dots (its default list less the reductions). An objective that declares
    ``xla_cpu_defaults`` (equal weights) keeps the defaults: its numbers stay those of
    every stored result.
    """
    if obj.xla_cpu_defaults or jax.default_backend() != "cpu":
        return None
    return _ynn_dots_only()


@functools.cache
def _ynn_dots_only() -> dict | None:
    """The option, where this XLA has it (an experimental flag): else XLA's defaults."""
    options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    try:
        jax.jit(jnp.sin, compiler_options=options).lower(jnp.zeros(2)).compile()
    except Exception:  # an XLA without the flag: its defaults (slower)
        return None
    return options


def run_keys(seed: int, n_runs: int, start: int = 0):
    """Keys of runs ``start .. start + n_runs - 1`` of stream ``seed``: ``fold_in(key(seed), i)``.

    Folding in the run index (rather than splitting) makes run i's key independent of how
    many runs are drawn, so shards and resumed pieces reproduce the same runs.
    """
    root = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(start, start + n_runs))


def train_many(
    keys,
    p,
    lr,
    *,
    model: ModelConfig,
    task: TaskSpec,
    cfg: TrainConfig,
    devices: int | None = None,
    group: int | str | None = "auto",
    objective: str = "equal",
) -> dict:
    """Train ``R`` independent runs at once.

    Args:
      keys: ``(R,)`` PRNG keys, one per run (see :func:`run_keys`).
      p: task-weight cosines: a scalar ``p`` in [-1, 1] or ``(R,)`` of them (every pair of
        tasks has cosine ``p``), or a ``(K, K)`` cosine matrix or ``(R, K, K)`` of them.
      lr: scalar or ``(R,)`` learning rates > 0.
      model, task, cfg: as in :func:`train_run`.
      devices: how many of this process's devices (``jax.local_devices()``) to shard the
        runs over (default: :func:`default_devices`: all, but one on a CPU for K >= 8).
        Under ``jax.distributed`` each process trains its own runs on its own devices; see
        the README, "Scaling out".
      group: runs a device trains together (vmapped); its groups train one after the
        other. ``"auto"``: :func:`default_group`; None trains all of a device's runs at once.
        A speed setting: a run's numbers do not depend on it beyond float rounding.
    Returns:
      dict of numpy arrays, each with a leading run axis ``R`` (see :func:`train_run`),
      plus ``wall_s``: the wall time of the whole call, in seconds.
    """
    n_runs = int(keys.shape[0])
    if n_runs < 1:
        raise ValueError("need at least one run key")
    p = np.asarray(p, np.float32)
    matrix = p.ndim >= 2  # a (K, K) cosine matrix, or one per run (R, K, K)
    p = np.broadcast_to(p, (n_runs,) + (p.shape[-2:] if matrix else ()))
    lr = np.broadcast_to(np.asarray(lr, np.float32), (n_runs,))
    for value in np.unique(p.reshape(n_runs, -1), axis=0):
        corr = value.reshape(p.shape[1:]) if matrix else float(value[0])
        validate_correlation(corr, n_tasks=cfg.n_tasks, d=task.d)
    if not np.all(np.isfinite(lr) & (lr > 0)):
        raise ValueError(f"learning rate lr must be a finite number > 0, got {np.unique(lr)}")
    check(model, cfg, objective)  # the name, the sizes and the objective, before tracing
    if devices is not None and (not isinstance(devices, int) or devices < 1):
        raise ValueError(f"devices must be a positive integer or None, got {devices!r}")
    if group not in (None, "auto") and (not isinstance(group, int) or group < 1):
        raise ValueError(f"group must be a positive integer, None or 'auto', got {group!r}")
    available = jax.local_device_count()
    n_dev = min(
        devices or default_devices(cfg.n_tasks, available, jax.default_backend()), available
    )
    keys, p, lr = _pad_runs((keys, jnp.asarray(p), jnp.asarray(lr)), (-n_runs) % n_dev)
    fn = trainer(model, task, cfg, n_dev, group, objective)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(keys, p, lr))
    wall = time.perf_counter() - t0
    result = {k: np.asarray(v)[:n_runs] for k, v in out.items()}
    result["wall_s"] = wall
    return result


def select_lr(
    p: float,
    *,
    model: ModelConfig,
    task: TaskSpec,
    cfg: TrainConfig,
    grid=LR_GRID,
    n_runs: int = 4,
    seed: int = 10_007,
    objective="equal",
) -> tuple[float, dict]:
    """Pick the learning rate of ``grid`` with the lowest mean validation loss (KDD18 5.1).

    ``n_runs`` runs per grid value train on keys from a stream (``seed``) disjoint from the
    reported runs, so their held-out set is a validation set. The grid is vmapped: one call.
    Diverged runs follow the project's one rule: excluded from the mean, and counted; the
    rate with the fewest diverged runs wins, then the lowest mean.

    Returns:
      ``(best_lr, {lr: mean validation MSE over its non-diverged runs and the tasks})``;
      +inf for a rate whose runs all diverged.
    """
    grid = tuple(float(v) for v in grid)
    keys = run_keys(seed, n_runs)
    all_keys = jnp.concatenate([keys] * len(grid))
    lrs = np.repeat(np.asarray(grid, np.float32), n_runs)
    out = train_many(all_keys, p, lrs, model=model, task=task, cfg=cfg, objective=objective)
    ok = ~out["diverged"].reshape(len(grid), n_runs)  # (grid, runs)
    final = out["final"].reshape(len(grid), n_runs, -1)
    scores, n_diverged = {}, {}
    for i, lr in enumerate(grid):
        kept = final[i][ok[i]]
        scores[lr] = float(kept.mean()) if kept.size else math.inf
        n_diverged[lr] = int((~ok[i]).sum())
    best = min(grid, key=lambda k: (n_diverged[k], scores[k]))
    return best, scores
