"""GradNorm: Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, section 3 and Algorithm 1.

Trainable loss weights ``w_k`` (initially 1) scale the tasks' losses, ``L = sum_k w_k L_k``.
With ``G_k = ||w_k g_k||`` the norm of task k's weighted gradient on the shared entries,
``G_bar`` their mean, ``Lt_k = L_k(t) / L_k(0)`` the inverse training rate and
``r_k = Lt_k / mean(Lt)``, the weights descend

    L_grad = sum_k | G_k - G_bar * r_k^alpha |        (the target treated as a constant)

whose gradient is ``dL_grad/dw_k = sign(G_k - target_k) ||g_k||``; after each update the
weights are renormalised to ``sum_k w_k = K``. The network's direction uses the weights
before the update: ``(1/K) sum_k w_k g_k`` (the mean convention of the package).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from . import Objective, gram, register, weighted

MIN_WEIGHT = 1e-6  # weights are kept positive before the renormalisation


@register(
    "gradnorm",
    description="loss weights trained so each task's shared-gradient norm tracks its "
    "relative training rate^alpha",
    paper="Chen et al., ICML 2018",
)
@dataclasses.dataclass(frozen=True)
class GradNorm(Objective):
    """Attributes:
    alpha: the restoring force's strength (the paper tunes it per data set; 1.5 is
      LibMTL's default).
    lr: Adam learning rate of the weights (the paper trains them with the network's
      optimiser; 1e-3 is the benchmark's chosen network learning rate).
    """

    alpha: float = 1.5
    lr: float = 1e-3

    def __post_init__(self):
        if not self.alpha >= 0 or not self.lr > 0:
            raise ValueError(f"gradnorm needs alpha >= 0 and lr > 0, got {self.alpha}, {self.lr}")

    def _opt(self):
        return optax.adam(self.lr)

    def init(self, n_tasks):
        w = jnp.ones((n_tasks,), jnp.float32)
        return {
            "weights": w,
            "opt": self._opt().init(w),
            "initial_losses": jnp.ones((n_tasks,), jnp.float32),
            "count": jnp.zeros((), jnp.int32),
        }

    def step(self, task_grads, losses, state, key, shared_mask):
        k = losses.shape[0]
        w = state["weights"]
        losses32 = losses.astype(jnp.float32)
        l0 = jnp.where(state["count"] == 0, losses32, state["initial_losses"])
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram(task_grads, shared_mask)), 0.0))
        norms = norms.astype(jnp.float32)
        g_w = w * norms  # G_k
        ratio = losses32 / l0  # inverse training rate
        r = ratio / jnp.mean(ratio)
        target = jnp.mean(g_w) * r**self.alpha
        grad_w = jnp.sign(g_w - target) * norms
        upd, opt = self._opt().update(grad_w, state["opt"], w)
        new_w = jnp.maximum(optax.apply_updates(w, upd), MIN_WEIGHT)
        new_w = k * new_w / jnp.sum(new_w)
        coef = (w / k).astype(losses.dtype)
        direction = weighted(task_grads, coef)
        new_state = {
            "weights": new_w,
            "opt": opt,
            "initial_losses": l0,
            "count": state["count"] + 1,
        }
        info = {"weights": coef, "loss_weights": w, "grad_norm_loss": jnp.abs(g_w - target).sum()}
        return direction, new_state, info
