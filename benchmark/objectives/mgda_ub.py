"""MGDA-UB: Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018, section 3.3 (the upper bound) and Algorithm 2.

With the shared parameters producing a representation ``Z = g(x; theta_sh)`` that the
task-specific parameters read, ``||sum_k alpha_k grad_theta_sh L_k||`` is bounded by
``||dZ/dtheta_sh|| ||sum_k alpha_k grad_Z L_k||``; MGDA-UB minimises the second factor,

    alpha = argmin_{alpha in simplex} || sum_k alpha_k grad_Z L_k ||^2,

with MGDA's solver, and updates the shared parameters along ``sum_k alpha_k grad_theta_sh
L_k``, which the chain rule gives as ``dZ/dtheta_sh^T sum_k alpha_k grad_Z L_k``: one
backward pass through the shared part instead of K. Z is the output of the
architecture's registered ``representation`` submodule: Shared-Bottom's bottom layer
(before its ReLU, which is not a submodule; so its gradients carry the ReLU's mask),
MMoE's experts (after their ReLU). Gradients are over the whole batch's Z (the paper's
``Z`` is the batch's representations). Task-specific parameters get ``g_k / K``, as in :mod:`.mgda`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import gram, register, weighted
from ._simplex import min_norm_element
from .mgda import MGDA


@register(
    "mgda_ub",
    description="MGDA's min-norm weights from the gradients on the shared representation "
    "(one backward pass through the shared part)",
    paper="Sener & Koltun, NeurIPS 2018",
)
@dataclasses.dataclass(frozen=True)
class MGDAUB(MGDA):
    """Attributes: as :class:`.mgda.MGDA` (``normalization`` scales each task's gradient
    with respect to Z before the solver; ``iters`` are the Frank-Wolfe steps for K > 2)."""

    @property
    def needs_task_grads(self) -> bool:
        return False

    @property
    def needs_representation(self) -> bool:
        return True

    def step(self, task_grads, losses, state, key, shared_mask):
        """``task_grads``: the K gradients with respect to Z (a pytree, leading ``(K,)``
        axis); returns Z's cotangent ``sum_k c_k grad_Z L_k`` with ``c = alpha / scale``.
        Every entry of Z is shared, so ``shared_mask`` is not used."""
        everything = jax.tree_util.tree_map(lambda _: True, task_grads)
        gg = gram(task_grads, everything)
        s = self.scales(gg, losses)
        alpha = min_norm_element(gg / jnp.outer(s, s), self.iters)
        c = alpha / s
        return weighted(task_grads, c), state, {"weights": c, "alpha": alpha}
