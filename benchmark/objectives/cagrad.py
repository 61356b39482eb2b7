"""CAGrad, conflict-averse gradient descent: Liu, Liu, Jin, Stone and Liu, "Conflict-Averse
Gradient Descent for Multi-task Learning", NeurIPS 2021, section 3 (eq. (3)-(4)).

On the shared entries, the update maximises the worst task's improvement within a ball
around the mean gradient ``g_0``: ``max_d min_i g_i . d`` s.t. ``||d - g_0|| <= c ||g_0||``.
Its dual: ``w* = argmin_{w in simplex} g_w . g_0 + c ||g_0|| ||g_w||`` with
``g_w = sum_k w_k g_k``, and then

    d = g_0 + (c ||g_0|| / ||g_w*||) g_w*,

divided by ``1 + c^2`` (the official code's ``rescale=1``, the default). ``c = 0`` gives
``g_0``, the ``equal`` objective. The dual is solved on the ``(K, K)`` Gram matrix by
Frank-Wolfe with an exact line search, a fixed number of steps (the paper's code calls
scipy's SLSQP, which does not jit). Entries reached by one task take ``g_k / K``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from . import Objective, combine, gram, register
from ._simplex import cagrad_weights


@register(
    "cagrad",
    description="the direction within c||g0|| of the mean gradient that most improves "
    "the worst task",
    paper="Liu et al., NeurIPS 2021",
)
@dataclasses.dataclass(frozen=True)
class CAGrad(Objective):
    """Attributes:
    c: the ball's radius relative to ``||g_0||`` (LibMTL's default 0.5; the paper tunes
      it per benchmark).
    rescale: 0 (none), 1 (divide by ``1 + c^2``, default) or 2 (by ``1 + c``).
    iters: Frank-Wolfe steps of the dual solver (K = 2 is exact after one).
    """

    c: float = 0.5
    rescale: int = 1
    iters: int = 50

    def __post_init__(self):
        if not self.c >= 0:
            raise ValueError(f"cagrad c must be >= 0, got {self.c!r}")
        if self.rescale not in (0, 1, 2):
            raise ValueError(f"cagrad rescale must be 0, 1 or 2, got {self.rescale!r}")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"cagrad iters must be a positive integer, got {self.iters!r}")

    def step(self, task_grads, losses, state, key, shared_mask):
        k = losses.shape[0]
        gg = gram(task_grads, shared_mask)
        w = cagrad_weights(gg, self.c, self.iters)
        g0_norm = jnp.sqrt(jnp.maximum(gg.mean(), 0.0))
        gw_norm = jnp.sqrt(jnp.maximum(w @ gg @ w, 0.0))
        lam = self.c * g0_norm / (gw_norm + 1e-8)
        scale = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        c_shared = (jnp.full((k,), 1.0 / k, gg.dtype) + lam * w) / scale
        direction = combine(task_grads, shared_mask, c_shared, jnp.full((k,), 1.0 / k, gg.dtype))
        return direction, state, {"weights": c_shared, "w": w}
