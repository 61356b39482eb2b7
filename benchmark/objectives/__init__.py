"""Registry of training objectives (loss balancing and gradient surgery), looked up by name.

The twin of :mod:`benchmark.models`: every module in this package whose name does not
start with ``_`` is imported on first use and registers its objective with
:func:`register`. Adding an objective means adding one file here; nothing else changes.

An objective turns the K tasks' gradients into one update direction for Adam. It is a
frozen dataclass (its fields are the hyper-parameters, with the paper's defaults; it is
hashable, so it can key a compiled function) with three pure methods::

    obj = objectives.get("pcgrad")                    # or get("gradnorm", alpha=0.12)
    state = obj.init(n_tasks)                         # a pytree, carried in the scan
    direction, state, info = obj.step(task_grads, losses, state, key, shared_mask)
    state = obj.after_step(state, new_losses)         # only if obj.needs_new_losses

- ``task_grads``: the params pytree with a leading ``(K,)`` axis on every leaf, task k's
  gradient of its own loss (:func:`task_grads`);
- ``losses``: ``(K,)`` the tasks' training losses on this batch;
- ``key``: a PRNG key for this step (PCGrad's task order, RLW's weights);
- ``shared_mask``: the params pytree of concrete booleans, True where more than one task's
  loss flows (:func:`shared_mask`), computed once outside ``jit``;
- ``direction``: a params pytree (the gradient Adam receives); ``info["weights"]``: ``(K,)``
  coefficients such that the direction on the shared entries is ``sum_k weights[k] g_k``.

An objective with ``needs_representation`` (MGDA-UB) works on the gradients with respect
to the architecture's shared representation Z instead (:func:`representation_losses`):
its ``step`` receives the K gradients of the task losses with respect to Z, and its
``direction`` is the cotangent that Z passes back to the shared parameters.

Everything is pure JAX on fixed shapes, so it runs inside ``lax.scan`` and ``jit`` and
under ``vmap`` over runs. Objectives that only weight the losses subclass
:class:`LossWeighting`: their ``weights(losses, state, key)`` gives the K coefficients
before any gradient is taken, so a caller can take one backward pass through
``sum_k w_k L_k`` (a ``jax.vjp`` with cotangent ``w``) instead of K.

Conventions: the ``equal`` objective is the mean of the K task losses, so its direction is
``mean_k g_k``; methods whose paper update is a *sum* over tasks (PCGrad, CAGrad's
``g_0``, GradNorm's ``sum_k w_k L_k``) are divided by K, so that every method reduces to
``equal`` exactly where it does nothing (no conflict, equal weights). Adam is invariant to
a constant scale of its gradient (up to its epsilon), so this changes no method. Entries
of the parameters that only one task's loss reaches get ``g_k / K`` from the gradient
surgery methods (PCGrad, MGDA, CAGrad), as in their papers, where task-specific
parameters take their task's own gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._plugins import import_all

__all__ = [
    "Objective",
    "LossWeighting",
    "register",
    "names",
    "resolve",
    "get",
    "describe",
    "task_grads",
    "task_mse",
    "per_task_mse",
    "representation_losses",
    "shared_mask",
    "shared_mask_at_init",
    "gram",
    "combine",
    "weighted",
    "direction",
]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Objective:
    """Base class of every objective; subclasses are frozen dataclasses.

    Class attributes set by :func:`register`: ``name``, ``description``, ``paper``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # Whether its trainer compiles with XLA's default CPU fusions; False keeps YNNPACK's
    # fusions to single dots, faster for the per-task-gradient helpers (the engine's
    # ``_compiler_options``). Part of how the stored numbers were made.
    xla_cpu_defaults: ClassVar[bool] = False

    @property
    def needs_task_grads(self) -> bool:
        """Whether :meth:`step` needs the K per-task gradients (False: see LossWeighting)."""
        return True

    @property
    def needs_representation(self) -> bool:
        """Whether :meth:`step` takes the K gradients with respect to the shared
        representation Z (:func:`representation_losses`) and returns Z's cotangent."""
        return False

    @property
    def needs_new_losses(self) -> bool:
        """Whether the caller must call :meth:`after_step` with the losses of the *same*
        batch at the updated parameters (one extra forward pass per step)."""
        return False

    def init(self, n_tasks: int) -> PyTree:
        """The objective's state before the first step (a pytree of arrays; may be empty)."""
        return {}

    def step(self, task_grads, losses, state, key, shared_mask):
        """``(direction, new_state, info)``; see the module docstring."""
        raise NotImplementedError

    def after_step(self, state, new_losses):
        """The state after the parameter update, given ``(K,)`` losses at the new params."""
        return state

    def hyper(self) -> dict:
        """The hyper-parameters and their values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def label(self) -> str:
        """``name``, or ``name(k=v, ...)`` with the hyper-parameters that differ from the
        paper defaults: what figures and tables group cells by."""
        defaults = type(self)().hyper()
        changed = [f"{k}={v}" for k, v in self.hyper().items() if defaults[k] != v]
        return f"{self.name}({', '.join(changed)})" if changed else self.name


@dataclasses.dataclass(frozen=True)
class LossWeighting(Objective):
    """An objective whose direction is ``sum_k w_k g_k`` on every entry, with weights that
    depend on the losses and the state only (not on the gradients)."""

    @property
    def needs_task_grads(self) -> bool:
        return False

    def weights(self, losses, state, key):
        """``(w (K,), new_state, info)``: the loss weights of this step."""
        raise NotImplementedError

    def step(self, task_grads, losses, state, key, shared_mask):
        w, state, info = self.weights(losses, state, key)
        return weighted(task_grads, w), state, info


_REGISTRY: dict[str, type[Objective]] = {}


def register(name: str, *, description: str, paper: str) -> Callable[[type], type]:
    """Class decorator: add an :class:`Objective` dataclass to the registry under ``name``."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"objective {name!r} must subclass benchmark.objectives.Objective")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"objective {name!r} is registered twice")
        cls.name, cls.description, cls.paper = name, description, paper
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    import_all(__name__, __path__)


def names() -> list[str]:
    """Every registered objective name, ``equal`` first, then alphabetical."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (n != "equal", n))


def get(name: str, **hyper) -> Objective:
    """The objective ``name`` with its paper defaults, changed by ``hyper``.

    Raises ValueError on an unknown name (listing the known ones) or hyper-parameter.
    """
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; known objectives: {', '.join(names())}")
    cls = _REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(hyper) - set(fields))
    if unknown:
        raise ValueError(
            f"objective {name} has no hyper-parameter {', '.join(unknown)}; "
            f"it has: {', '.join(sorted(fields)) or 'none'}"
        )
    return cls(**{k: _as_field_type(name, fields[k], v) for k, v in hyper.items()})


def _as_field_type(objective: str, field: dataclasses.Field, value):
    """``value`` as its field's default's type (``c=1`` for a float field is 1.0, a numpy
    scalar a Python one), so equal settings hash alike; a ValueError names a bad value."""
    default = field.default
    if isinstance(value, np.generic):
        value = value.item()
    kind = type(default)
    if kind is bool or kind not in (int, float) or isinstance(value, bool):
        return value
    if kind is int and not float(value).is_integer():
        raise ValueError(f"objective {objective}: {field.name} must be an integer, got {value!r}")
    return kind(value)


def resolve(objective: str | Objective) -> Objective:
    """An objective by name (its paper defaults) or an instance (``get(name, **hyper)``)."""
    if isinstance(objective, Objective):
        if _REGISTRY.get(objective.name) is not type(objective):
            raise ValueError(f"objective {objective!r} is not a registered objective")
        return objective
    if not isinstance(objective, str):
        raise ValueError(
            f"objective must be a name ({', '.join(names())}) or objectives.get(name, ...); "
            f"got {objective!r}"
        )
    return get(objective)


def describe() -> dict:
    """``{name: {"description", "paper", "hyper": {field: default}}}`` for listings."""
    out = {}
    for n in names():
        obj = get(n)
        out[n] = {"description": obj.description, "paper": obj.paper, "hyper": obj.hyper()}
    return out


# ---------------------------------------------------------------------------------------
# Helpers shared by the objectives and the engine.


def task_mse(preds, y) -> jax.Array:
    """Each task's mean squared error, ``(K,)``, of predictions ``preds`` against labels
    ``y``, both ``(B, K)``: the one definition of the loss, used for training, the
    objectives, evaluation and ``bench``."""
    return jnp.mean((preds - y) ** 2, axis=0)


def per_task_mse(net) -> Callable:
    """``loss_fn(params, x, y) -> (K,)``: each task's :func:`task_mse` on a batch.

    Its mean over the tasks is the equal-weight loss.
    """

    def loss_fn(params, x, y):
        preds, _ = net.apply(params, x)
        return task_mse(preds, y)

    return loss_fn


def representation_losses(net, module: str) -> Callable:
    """``fn(params, x, y, delta) -> (losses (K,), z)``: each task's MSE, with the output
    ``z`` of ``net``'s direct submodule ``module`` (the shared representation Z, e.g. an
    ``(B, H)`` bottom or ``(B, E, H)`` experts) replaced by ``stop_gradient(z) + delta``.

    So the losses' gradient with respect to ``delta`` (shaped like ``z``) is their
    gradient with respect to Z, and reaches only the parameters after Z; a cotangent for
    the returned ``z`` reaches the parameters before it. ``delta=None`` adds nothing (for
    shapes). The submodule is found with ``flax.linen.intercept_methods``: the model's
    code is unchanged. Raises ValueError when ``net`` has no such submodule.
    """
    import flax.linen as nn

    def fn(params, x, y, delta):
        found = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__" or context.module.path != (module,):
                return out
            found.append(out)
            z = jax.lax.stop_gradient(out)
            return z if delta is None else z + delta

        with nn.intercept_methods(interceptor):
            preds, _ = net.apply(params, x)
        if len(found) != 1:
            raise ValueError(
                f"{type(net).__name__} has no submodule {module!r} called once: it cannot be "
                "the shared representation"
            )
        return task_mse(preds, y), found[0]

    return fn


def task_grads(loss_fn: Callable, params, x, y):
    """``(losses (K,), grads)``: every task's loss and its gradient.

    ``loss_fn(params, x, y)`` returns the ``(K,)`` per-task losses; ``grads`` is the params
    pytree with a leading ``(K,)`` axis, row k the gradient of loss k (reverse mode: one
    forward pass, K backward passes, vmapped; the same as ``jax.jacrev``).
    """
    losses, vjp = jax.vjp(lambda p: loss_fn(p, x, y), params)
    (grads,) = jax.vmap(vjp)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    return losses, grads


def _is_tracer(tree) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(tree))


def shared_mask(net, params, x, y=None) -> PyTree:
    """Which parameter entries are shared: a params pytree of numpy bool arrays.

    The rule: an entry is shared if more than one task's gradient is non-zero on it, for
    the given (random) parameters and batch. Entries reached by exactly one task are that
    task's own (towers, a task's gate); entries no task reaches at these parameters count
    as not shared (with a random initialisation and a batch of a few hundred random inputs
    there are none in the registered architectures). The mask is per *entry*, not per
    leaf, because one leaf may hold every task's copy of a layer (``Towers`` stores the K
    towers in one ``(K, ...)`` array; ``Gates`` one column block per task).

    Must be called on concrete values, once, outside ``jit`` and ``vmap`` (it runs eagerly,
    under ``jax.ensure_compile_time_eval``, so it may be called while tracing as long as its
    inputs are concrete: a fixed init key and numpy inputs). ``y`` defaults to zeros.
    """
    if _is_tracer((params, x, y)):
        raise ValueError(
            "shared_mask needs concrete params and inputs: compute it once outside jit/vmap "
            "(for example from net.init(jax.random.key(0), x) and numpy inputs)"
        )
    with jax.ensure_compile_time_eval():
        x = jnp.asarray(x)
        preds, _ = net.apply(params, x[:1])
        if y is None:
            y = jnp.zeros((x.shape[0], preds.shape[-1]), preds.dtype)
        _, grads = jax.jit(task_grads, static_argnums=0)(per_task_mse(net), params, x, y)
        return jax.tree_util.tree_map(
            lambda g: np.asarray((np.asarray(g) != 0).sum(axis=0) > 1), grads
        )


def shared_mask_at_init(net, d: int, *, seed: int = 0, batch: int = 256) -> PyTree:
    """:func:`shared_mask` at ``net.init(jax.random.key(seed), .)`` on ``batch`` standard
    normal inputs of dimension ``d`` (numpy, seeded): depends on the architecture only.

    Everything is created and computed eagerly (``jax.ensure_compile_time_eval``), so this
    may be called anywhere, inside a traced function included.
    """
    x = np.random.default_rng(seed).normal(size=(batch, d)).astype(np.float32)
    with jax.ensure_compile_time_eval():
        params = net.init(jax.random.key(seed), x[:1])
        return shared_mask(net, params, x)


def _mask_like(m, g):
    """A mask leaf (a bool or a bool array) as a float array broadcastable to ``g[0]``."""
    return jnp.asarray(m).astype(g.dtype)


def _uniform(m) -> bool | None:
    """True if a concrete mask leaf is all shared, False if none is, else None (mixed, or
    traced): the helpers then skip the mask's multiply or select on the whole leaf."""
    if isinstance(m, jax.core.Tracer):
        return None
    a = np.asarray(m)
    return True if a.all() else False if not a.any() else None


def _mix(coef, g):
    """``sum_k coef[k] g[k]`` as an elementwise multiply and a reduction over K: one fused
    loop on a CPU, where a dot over a K of 2 or 3 runs slowly and transposes ``g``."""
    return jnp.sum(coef.reshape((-1,) + (1,) * (g.ndim - 1)) * g, axis=0)


def gram(task_grads, shared_mask) -> jax.Array:
    """``(K, K)`` inner products of the tasks' gradients on the shared entries.

    One multiply and sum per pair ``i <= j`` and leaf: the ``(K, K, n)`` product
    ``g[:, None] * g[None]`` is never formed, and the symmetric half is not computed
    twice. On a CPU, XLA still writes each pair's ``(n,)`` product out before summing it
    (a long reduction becomes a reduce-window; docs/objectives.md, "Cost").
    """
    leaves = jax.tree_util.tree_leaves(task_grads)
    masks = jax.tree_util.tree_leaves(shared_mask)
    if len(leaves) != len(masks):
        raise ValueError("shared_mask must have the structure of the parameters")
    k = leaves[0].shape[0]
    flats = []
    for g, m in zip(leaves, masks, strict=True):
        kind = _uniform(m)
        if kind is not False:
            flats.append((g if kind else g * _mask_like(m, g)).reshape(k, -1))
    if not flats:
        return jnp.zeros((k, k), leaves[0].dtype)
    rows = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            rows[i][j] = rows[j][i] = sum(jnp.sum(f[i] * f[j]) for f in flats)
    return jnp.stack([jnp.stack(row) for row in rows])


def combine(task_grads, shared_mask, c_shared, c_own) -> PyTree:
    """``sum_k c_shared[k] g_k`` on the shared entries, ``sum_k c_own[k] g_k`` elsewhere."""

    def leaf(g, m):
        kind = _uniform(m)
        if kind is not None:
            return _mix(c_shared if kind else c_own, g)
        return jnp.where(_mask_like(m, g) > 0, _mix(c_shared, g), _mix(c_own, g))

    return jax.tree_util.tree_map(leaf, task_grads, shared_mask)


def weighted(task_grads, coef) -> PyTree:
    """``sum_k coef[k] g_k`` on every entry."""
    return jax.tree_util.tree_map(lambda g: _mix(coef, g), task_grads)


def direction(
    obj: Objective, loss_fn: Callable, params, x, y, state, key, shared_mask, rep_fn=None
):
    """One step's ``(direction, losses, new_state, info)`` for any objective.

    A :class:`LossWeighting` objective takes one forward and one backward pass (a
    ``jax.vjp`` with the weights as cotangent); one with ``needs_representation`` takes
    one forward pass, K backward passes from the losses to Z (cheap: the heads only) and
    one full backward pass (``rep_fn``: :func:`representation_losses`); any other takes K
    backward passes (:func:`task_grads`). The caller feeds ``direction`` to its optimiser
    and, if ``obj.needs_new_losses``, then calls ``obj.after_step(state, loss_fn(new_params,
    x, y))``.
    """
    if obj.needs_representation:
        if rep_fn is None:
            raise ValueError(f"objective {obj.name} needs the architecture's representation")
        return _direction_via_representation(obj, rep_fn, params, x, y, state, key)
    if obj.needs_task_grads:
        losses, grads = task_grads(loss_fn, params, x, y)
        out, state, info = obj.step(grads, losses, state, key, shared_mask)
        return out, losses, state, info
    losses, vjp = jax.vjp(lambda p: loss_fn(p, x, y), params)
    w, state, info = obj.weights(losses, state, key)
    (out,) = vjp(w.astype(losses.dtype))
    return out, losses, state, info


def _direction_via_representation(obj: Objective, rep_fn: Callable, params, x, y, state, key):
    """The parameters after Z get the mean of the tasks' gradients (the package's
    convention for a task's own entries); those before Z get Z's cotangent from
    ``obj.step``, ``dZ/dtheta^T c``, in the same backward pass."""
    z_shape = jax.eval_shape(lambda p: rep_fn(p, x, y, None)[1], params)
    delta = jnp.zeros(z_shape.shape, z_shape.dtype)
    (losses, z), vjp = jax.vjp(lambda p, d: rep_fn(p, x, y, d), params, delta)
    k = losses.shape[0]
    no_z = jnp.zeros_like(z)
    # K backward passes to Z only: their parameter gradients are dead code for XLA.
    rep_grads = jax.vmap(lambda e: vjp((e, no_z))[1])(jnp.eye(k, dtype=losses.dtype))
    cotangent, state, info = obj.step(rep_grads, losses, state, key, None)
    out, _ = vjp((jnp.full((k,), 1.0 / k, losses.dtype), cotangent.astype(z.dtype)))
    return out, losses, state, info
