"""The cost of each objective's training step against the engine's equal-weight step.

``python -m benchmark.objectives._cost [--models shared_bottom mmoe] [--batch 32]
[--runs 10] [--steps 200] [--json]`` trains, for every architecture and objective, ``runs``
runs vmapped for ``steps`` Adam steps in a ``lax.scan`` (a fresh batch of the default
preset every step, as the engine streams its data), jitted, and reports the time per
run-step after compilation (best of ``--repeats``) and its ratio to ``engine``: the
engine's own step, ``jax.grad`` of the mean of the task MSEs. ``equal`` through the
objectives' one-backward-pass form should cost the same as ``engine``; objectives that
need the K per-task gradients pay K backward passes plus their K x K solver.

Not an architecture or objective module (it starts with ``_``), so it registers nothing.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datagen import _cpu_rng, get_preset, preset_names, sample, task_weights

from ..models import ModelConfig
from . import direction, get, names, per_task_mse, shared_mask_at_init


def _trainer(model: str, objective: str | None, *, batch: int, steps: int, n_tasks: int = 2):
    """``keys (R,) -> scalar`` training R runs; ``objective`` None is the engine's step."""
    spec = get_preset(preset_names()[0])  # the default preset
    net = ModelConfig.of(model).build(n_tasks)
    obj = get(objective) if objective else None
    mask = shared_mask_at_init(net, spec.d) if obj else None
    loss_fn = per_task_mse(net)
    opt = optax.adam(1e-3)

    def run(key):
        k_w, k_train, k_init, k_obj = jax.random.split(key, 4)
        w = task_weights(k_w, spec, 0.5, n_tasks)
        x0, _ = sample(k_init, spec, 1, w)
        params = net.init(k_init, x0)
        state = obj.init(n_tasks) if obj else ()

        def body(carry, i):
            params, opt_state, state = carry
            x, y = sample(jax.random.fold_in(k_train, i), spec, batch, w)
            if obj is None:
                grads = jax.grad(lambda p: jnp.mean(loss_fn(p, x, y)))(params)
            else:
                k = jax.random.fold_in(k_obj, i)
                grads, _, state, _ = direction(obj, loss_fn, params, x, y, state, k, mask)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if obj is not None and obj.needs_new_losses:
                state = obj.after_step(state, loss_fn(params, x, y))
            return (params, opt_state, state), None

        carry = (params, opt.init(params), state)
        (params, _, _), _ = jax.lax.scan(body, carry, jnp.arange(steps))
        return sum(jnp.sum(p) for p in jax.tree_util.tree_leaves(params))

    return jax.jit(jax.vmap(run))


def measure(models, objectives, *, batch=32, runs=10, steps=200, repeats=3) -> dict:
    """``{model: {variant: {"us_per_run_step", "ratio"}}}``; variant ``engine`` is the
    engine's equal-weight step, the others the objectives through :func:`direction`."""
    _cpu_rng.install()
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(runs))
    out = {}
    for model in models:
        rows = {}
        for variant in ["engine", *objectives]:
            fn = _trainer(model, None if variant == "engine" else variant, batch=batch, steps=steps)
            jax.block_until_ready(fn(keys))  # compile
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(keys))
                best = min(best, time.perf_counter() - t0)
            rows[variant] = {"us_per_run_step": 1e6 * best / (runs * steps)}
        base = rows["engine"]["us_per_run_step"]
        for row in rows.values():
            row["ratio"] = row["us_per_run_step"] / base
        out[model] = rows
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmark.objectives._cost")
    p.add_argument("--models", nargs="*", default=["shared_bottom", "mmoe"])
    p.add_argument("--objectives", nargs="*", default=None, help="default: every one")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    res = measure(
        a.models,
        a.objectives or names(),
        batch=a.batch,
        runs=a.runs,
        steps=a.steps,
        repeats=a.repeats,
    )
    if a.json:
        print(json.dumps(res))
        return
    print(f"batch {a.batch}, {a.runs} runs vmapped, {a.steps} steps; {jax.devices()[0]}")
    for model, rows in res.items():
        print(model)
        for v, r in rows.items():
            print(f"  {v:<12} {r['us_per_run_step']:8.1f} us/run-step  {r['ratio']:5.2f}x")


if __name__ == "__main__":
    main()
