"""MGDA: Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018, section 3 (Algorithm 2, the Frank-Wolfe solver).

The update on the shared entries is the minimum-norm point of the convex hull of the
tasks' gradients, ``sum_k alpha_k g_k`` with

    alpha = argmin_{alpha in simplex} || sum_k alpha_k g_k ||^2,

a common descent direction for every task (or 0 at a Pareto-stationary point). Each
task-specific entry takes its task's gradient (here ``g_k / K``, the mean convention).
K = 2 has a closed form; K > 2 starts from the best pair and takes ``iters`` Frank-Wolfe
steps with exact line search (fixed, so it jits).

This is MGDA on the shared *parameters*, the exact problem; :mod:`.mgda_ub` solves the
upper bound of section 3.3 on the gradients with respect to the shared representation.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from . import Objective, combine, gram, register
from ._simplex import min_norm_element

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register(
    "mgda",
    description="the min-norm point of the convex hull of the tasks' shared gradients",
    paper="Sener & Koltun, NeurIPS 2018",
)
@dataclasses.dataclass(frozen=True)
class MGDA(Objective):
    """Attributes:
    normalization: how each task's gradient is scaled before the solver (section 4 of
      the paper's code: ``l2`` by its norm, ``loss`` by its loss, ``loss+`` by both);
      ``none`` (LibMTL's default) leaves them.
    iters: Frank-Wolfe iterations for K > 2 (the official code stops at 250 or earlier).
    """

    normalization: str = "none"
    iters: int = 50

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"{self.name} normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {self.normalization!r}"
            )
        if not isinstance(self.iters, int) or self.iters < 0:
            raise ValueError(f"{self.name} iters must be an integer >= 0, got {self.iters!r}")

    def scales(self, gg, losses):
        """``(K,)`` the factor each task's gradient is divided by."""
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gg), 0.0))
        scale = {
            "none": jnp.ones_like(norms),
            "l2": norms,
            "loss": losses.astype(gg.dtype),
            "loss+": losses.astype(gg.dtype) * norms,
        }[self.normalization]
        return jnp.where(scale > 0, scale, 1.0)

    def step(self, task_grads, losses, state, key, shared_mask):
        k = losses.shape[0]
        gg = gram(task_grads, shared_mask)
        s = self.scales(gg, losses)
        alpha = min_norm_element(gg / jnp.outer(s, s), self.iters)
        c_shared = alpha / s
        direction = combine(task_grads, shared_mask, c_shared, jnp.full((k,), 1.0 / k, gg.dtype))
        return direction, state, {"weights": c_shared, "alpha": alpha}
