"""Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022, section 3 (Theorem 3.2) and section 4.

The update is the Nash bargaining solution ``d = sum_k alpha_k g_k`` (on the shared
entries), where ``alpha > 0`` solves ``G^T G alpha = 1 / alpha`` elementwise (G the K
shared gradients as columns). That equation is the stationarity condition of the
strictly convex (for independent gradients) and self-concordant

    f(alpha) = 1/2 alpha^T (G^T G) alpha - sum_k log alpha_k,     alpha > 0,

so ``iters`` damped Newton steps (``alpha <- alpha - H^-1 grad / (1 + lambda)``, lambda the
Newton decrement; they stay in alpha > 0 and converge quadratically near the solution),
warm-started from the previous step's alpha as the official code warm-starts its solver,
solve it to float precision inside the jitted step. The paper's code instead runs a
sequence of convex approximations through cvxpy/ECOS (20 iterations), which cannot run
inside ``jit``; it reaches the same fixed point.

As in the official code, alpha weights each task's whole loss (task-specific entries get
``alpha_k g_k`` too), the Gram matrix is normalised by its Frobenius norm for the solver
(alpha is rescaled back to the paper's equation), and the shared part of the direction
is clipped to norm ``max_norm`` (official default 1.0; 0 disables). At the solution
``||sum_k alpha_k g_k||^2 = sum_k alpha_k (G^T G alpha)_k = K``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import Objective, combine, gram, register


def solve_alpha(m, alpha0, iters: int):
    """``alpha > 0`` with ``m alpha = 1 / alpha``: damped Newton from ``alpha0``."""

    def newton(_, a):
        grad = m @ a - 1.0 / a
        hess = m + jnp.diag(1.0 / a**2)
        step = jnp.linalg.solve(hess, grad)
        dec = jnp.sqrt(jnp.maximum(grad @ step, 0.0))  # Newton decrement
        new = a - step / (1.0 + dec)
        return jnp.where(jnp.all(jnp.isfinite(new)) & jnp.all(new > 0), new, a)

    return jax.lax.fori_loop(0, iters, newton, alpha0)


@register(
    "nash_mtl",
    description="the Nash bargaining solution: d = sum_k alpha_k g_k with G^T G alpha = 1/alpha",
    paper="Navon et al., ICML 2022",
)
@dataclasses.dataclass(frozen=True)
class NashMTL(Objective):
    """Attributes:
    iters: damped Newton steps per training step (the official solver: up to 20).
    max_norm: clip the shared part of the direction to this norm (official: 1.0; 0: off).
    """

    iters: int = 20
    max_norm: float = 1.0

    def __post_init__(self):
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"nash_mtl iters must be a positive integer, got {self.iters!r}")
        if not self.max_norm >= 0:
            raise ValueError(f"nash_mtl max_norm must be >= 0, got {self.max_norm!r}")

    def init(self, n_tasks):
        # alpha of the normalised Gram matrix, the solver's warm start
        return {"alpha": jnp.ones((n_tasks,), jnp.float32)}

    def step(self, task_grads, losses, state, key, shared_mask):
        gg = gram(task_grads, shared_mask).astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(gg**2))
        safe = jnp.where(norm > 0, norm, 1.0)
        a_hat = solve_alpha(gg / safe, state["alpha"], self.iters)
        alpha = a_hat / jnp.sqrt(safe)  # solves gg alpha = 1 / alpha
        shared_norm = jnp.sqrt(jnp.maximum(alpha @ gg @ alpha, 0.0))
        clip = 1.0
        if self.max_norm > 0:
            clip = jnp.minimum(1.0, self.max_norm / jnp.maximum(shared_norm, 1e-12))
        dtype = losses.dtype
        c_shared = (alpha * clip).astype(dtype)
        direction = combine(task_grads, shared_mask, c_shared, alpha.astype(dtype))
        return direction, {"alpha": a_hat}, {"weights": c_shared, "alpha": alpha}
