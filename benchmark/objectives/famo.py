"""FAMO, fast adaptive multitask optimisation: Liu, Feng, Stone and Liu, "FAMO: Fast
Adaptive Multitask Optimization", NeurIPS 2023, Algorithm 1 (section 3).

FAMO keeps logits ``xi`` (K,), ``z = softmax(xi)``, and descends the weighted log-losses
``sum_k z_k log(L_k - L_k*)``; normalised by ``c = (sum_k z_k / L_k)^-1`` its gradient is
``sum_k w_k g_k`` with ``w_k = c z_k / L_k``, weights on the simplex, so FAMO only weights
the losses (one backward pass). The losses' lower bounds ``L_k*`` are 0 (MSE). After the
parameter update, with ``delta_k = log L_k(theta_t) - log L_k(theta_{t+1})`` (the decrease
of each log-loss), the logits take one step of Adam on ``grad_xi(z . delta) + gamma xi``
(``J_softmax^T delta`` with L2 decay gamma), as the paper's and the official code's
``torch.optim.Adam([xi], lr=beta, weight_decay=gamma)``.

``same_batch=True`` (the official code): ``L(theta_{t+1})`` is recomputed on the batch of
step t after the update, so the caller calls :meth:`after_step` (one extra forward pass).
``same_batch=False``: the update is delayed by one step and uses the losses of the next
batch at ``theta_{t+1}``, which the next step computes anyway (no extra pass; a noisier
``delta``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from . import LossWeighting, register

EPS = 1e-8  # as the official code: log(L - L* + 1e-8)


@register(
    "famo",
    description="logits xi, weights softmax(xi)_k / L_k normalised; xi follows the "
    "decrease of each log-loss",
    paper="Liu et al., NeurIPS 2023",
)
@dataclasses.dataclass(frozen=True)
class FAMO(LossWeighting):
    """Attributes:
    beta: Adam learning rate of the logits (paper and LibMTL: 0.025).
    gamma: L2 decay of the logits (LibMTL's default 1e-3; the paper tunes it per data
      set).
    same_batch: recompute the losses of the same batch after the update (True, the
      official code) or use the next step's losses (False; no extra forward pass).
    """

    beta: float = 0.025
    gamma: float = 1e-3
    same_batch: bool = True

    def __post_init__(self):
        if not self.beta > 0 or not self.gamma >= 0:
            raise ValueError(f"famo needs beta > 0 and gamma >= 0, got {self.beta}, {self.gamma}")

    @property
    def needs_new_losses(self) -> bool:
        return self.same_batch

    def _opt(self):
        return optax.chain(optax.add_decayed_weights(self.gamma), optax.adam(self.beta))

    def init(self, n_tasks):
        xi = jnp.zeros((n_tasks,), jnp.float32)
        return {
            "logits": xi,
            "opt": self._opt().init(xi),
            "prev_losses": jnp.ones((n_tasks,), jnp.float32),
            "has_prev": jnp.array(False),
        }

    def _update_logits(self, state, new_losses):
        xi = state["logits"]
        delta = jnp.log(state["prev_losses"] + EPS) - jnp.log(new_losses + EPS)
        z = jax.nn.softmax(xi)
        grad = z * (delta - jnp.dot(z, delta))  # J_softmax(xi)^T delta
        upd, opt = self._opt().update(grad, state["opt"], xi)
        new = dict(state, logits=optax.apply_updates(xi, upd), opt=opt)
        # Only once there is a previous loss (the delayed form's first step has none).
        return jax.tree_util.tree_map(lambda a, b: jnp.where(state["has_prev"], a, b), new, state)

    def weights(self, losses, state, key):
        losses32 = losses.astype(jnp.float32)
        if not self.same_batch:
            state = self._update_logits(state, losses32)
        z = jax.nn.softmax(state["logits"])
        inv = z / (losses32 + EPS)
        w = inv / inv.sum()
        state = dict(state, prev_losses=losses32, has_prev=jnp.array(True))
        w = w.astype(losses.dtype)
        return w, state, {"weights": w, "z": z}

    def after_step(self, state, new_losses):
        if not self.same_batch:
            return state
        return self._update_logits(state, new_losses.astype(jnp.float32))
