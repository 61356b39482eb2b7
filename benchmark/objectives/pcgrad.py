"""PCGrad, projecting conflicting gradients: Yu, Kumar, Gupta, Levine, Hausman and Finn,
"Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1.

On the shared entries, every task's gradient ``g_i`` is projected in turn, in a random
order of the other tasks j, onto the normal plane of each ``g_j`` it conflicts with:

    g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2  g_j      if g_i^PC . g_j < 0

(projections against the *original* ``g_j``), and the update is ``sum_i g_i^PC``, here
divided by K (the package's mean convention), so that PCGrad is ``equal`` exactly when no
pair conflicts. Entries reached by one task only keep that task's gradient (``g_k / K``).

Every ``g_i^PC`` is a combination ``sum_j A_ij g_j`` of the original gradients, so the
surgery runs on the ``(K, K)`` Gram matrix and the coefficients A: the cost beyond the K
gradients is K x K arithmetic, and the direction is one combination of the gradients.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import Objective, combine, gram, register


@register(
    "pcgrad",
    description="project each task's gradient off the gradients it conflicts with, in a "
    "random order",
    paper="Yu et al., NeurIPS 2020",
)
@dataclasses.dataclass(frozen=True)
class PCGrad(Objective):
    """No hyper-parameters; the task orders come from the step's key (:meth:`orders`)."""

    @staticmethod
    def orders(key, n_tasks: int):
        """``(K, K-1)``: row i, the random order in which task i visits the other tasks."""

        if n_tasks == 1:
            return jnp.zeros((1, 0), jnp.int32)

        def row(i):
            perm = jax.random.permutation(jax.random.fold_in(key, i), n_tasks - 1)
            return jnp.where(perm >= i, perm + 1, perm)  # skip i itself

        return jnp.stack([row(i) for i in range(n_tasks)])

    @staticmethod
    def coefficients(gg, orders):
        """``A (K, K)``: ``g_i^PC = sum_j A_ij g_j`` from the Gram matrix ``gg``."""
        k = gg.shape[0]
        a = jnp.eye(k, dtype=gg.dtype)
        rows = []
        for i in range(k):
            ai = a[i]
            for p in range(k - 1):
                j = orders[i, p]
                dot = ai @ gg[:, j]  # g_i^PC . g_j
                sq = gg[j, j]
                scale = jnp.where((dot < 0) & (sq > 0), dot / jnp.where(sq > 0, sq, 1.0), 0.0)
                ai = ai - scale * jax.nn.one_hot(j, k, dtype=gg.dtype)
            rows.append(ai)
        return jnp.stack(rows)

    def step(self, task_grads, losses, state, key, shared_mask):
        k = losses.shape[0]
        gg = gram(task_grads, shared_mask)
        a = self.coefficients(gg, self.orders(key, k))
        c_shared = a.sum(axis=0) / k
        c_own = jnp.full((k,), 1.0 / k, gg.dtype)
        direction = combine(task_grads, shared_mask, c_shared, c_own)
        return direction, state, {"weights": c_shared}
