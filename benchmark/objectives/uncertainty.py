"""Uncertainty weighting: Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR 2018, section 3.2, eq. (7).

Each task k is a Gaussian regression with a trainable noise scale sigma_k; the joint
negative log-likelihood is ``L = sum_k L_k / (2 sigma_k^2) + log sigma_k``. As the paper
recommends (section 3.2, last paragraph), the trainable quantity is the log-variance
``s_k = log sigma_k^2``, so ``L = sum_k 0.5 exp(-s_k) L_k + 0.5 s_k``. The network descends
``sum_k 0.5 exp(-s_k) g_k`` (the loss weights are ``0.5 exp(-s_k)``), and s descends
``dL/ds_k = 0.5 - 0.5 exp(-s_k) L_k`` with its own Adam, both from the same point.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from . import LossWeighting, register


@register(
    "uncertainty",
    description="homoscedastic uncertainty: sum_k L_k / (2 sigma_k^2) + log sigma_k, "
    "trainable log-variances",
    paper="Kendall, Gal & Cipolla, CVPR 2018",
)
@dataclasses.dataclass(frozen=True)
class Uncertainty(LossWeighting):
    """Attributes:
    lr: Adam learning rate of the log-variances (the paper trains them with the network's
      optimiser; 1e-3 is the benchmark's chosen network learning rate).
    init_log_var: the log-variances' initial value (0: sigma = 1).
    """

    lr: float = 1e-3
    init_log_var: float = 0.0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"uncertainty lr must be > 0, got {self.lr!r}")

    def _opt(self):
        return optax.adam(self.lr)

    def init(self, n_tasks):
        s = jnp.full((n_tasks,), self.init_log_var, jnp.float32)
        return {"log_var": s, "opt": self._opt().init(s)}

    def weights(self, losses, state, key):
        s = state["log_var"]
        w = 0.5 * jnp.exp(-s)
        grad_s = 0.5 - w * losses  # d/ds_k of 0.5 exp(-s_k) L_k + 0.5 s_k
        upd, opt = self._opt().update(grad_s, state["opt"], s)
        new = {"log_var": optax.apply_updates(s, upd), "opt": opt}
        return w.astype(losses.dtype), new, {"weights": w.astype(losses.dtype), "log_var": s}
