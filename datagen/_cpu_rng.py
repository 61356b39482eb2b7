"""Faster random numbers on CPU, with bit-identical values.

JAX lowers its threefry2x32 generator on CPU as a *rolled* loop: five passes over the
whole array, four rounds each, with every intermediate written back to memory. On every
other backend it uses the *unrolled* lowering, one fused elementwise kernel. Both compute
the same function, so registering the unrolled lowering for CPU as well changes no number;
a test checks this against a process that keeps JAX's default.

Measured on the 2-core CPU machine (README, "Performance"): a (128, 100) normal draw
costs 44 us instead of 78 us per run-step; the whole Shared-Bottom training step at batch
128 is 1.2x faster; compiling the engine for PLE takes 8 s instead of 15 s (every
parameter initialiser draws threefry bits).

The switch is scoped: :func:`ensure`, which the sampler calls, installs it only when JAX's
default backend is the CPU, and it registers the lowering for the ``cpu`` platform only, so
a process on a GPU or TPU keeps JAX's lowering everywhere. Importing ``datagen`` changes
nothing. The switch touches a private JAX registry, so it is guarded: if a JAX version
moves it, :func:`install` leaves JAX's default in place (only speed differs) and says so
once. Set ``MTL_ROLLED_THREEFRY=1`` to keep JAX's default lowering.
"""

from __future__ import annotations

import os
import warnings

_state = {"installed": False, "decided": False}


def ensure() -> bool:
    """:func:`install` if JAX's default backend is the CPU, once per process; on any other
    backend, nothing. Called by the sampler (``datagen.core``) before it draws.

    Returns:
      whether the unrolled lowering is in place.
    """
    if not _state["decided"]:
        import jax

        _state["decided"] = True
        if jax.default_backend() == "cpu":
            install()
    return _state["installed"]


def install() -> bool:
    """Register JAX's unrolled threefry2x32 lowering for CPU. Idempotent.

    Returns:
      whether the unrolled lowering is in place.
    """
    if _state["installed"]:
        return True
    if os.environ.get("MTL_ROLLED_THREEFRY", "") not in ("", "0"):
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_lowering_rule, platform="cpu")
    except (ImportError, AttributeError) as err:  # pragma: no cover - depends on JAX version
        warnings.warn(
            f"could not switch JAX's CPU threefry to its unrolled lowering ({err}); "
            "sampling stays correct but slower",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    _state["installed"] = True
    return True


def installed() -> bool:
    """Whether :func:`install` switched the CPU lowering in this process."""
    return _state["installed"]
