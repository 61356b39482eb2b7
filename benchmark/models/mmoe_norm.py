"""MMoE with HoME's expert normalisation and Swish experts: Wang et al. (Kuaishou), "HoME:
Hierarchy of Multi-Gate Experts for Multi-Task Learning at Kuaishou", arXiv 2408.05430
(2024), section 4.1 ("Expert Normalization & Swish Mechanism"), on MMoE (Ma et al., KDD 2018).

Each expert is Swish(BatchNorm(W x)): batch normalisation puts every expert's outputs on the
same scale, so that no gate can be drawn to one expert by its magnitude alone (HoME's "expert
collapse"), and Swish replaces ReLU, whose dead units the paper finds in collapsed experts.

The normalisation uses the statistics of the batch it is given, in training and at
evaluation alike (the engine evaluates the whole test set in one batch): there are no running
averages, so the model has no mutable state and is a pure function of the batch. The rest of
HoME (its expert hierarchy, hierarchy masks and feature/self gates) is left out.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import register
from ._layers import Gates, Towers, mix

EPS = 1e-5  # added to the batch variance


@register(
    "mmoe_norm",
    label="HoME-style MMoE",
    order=13,
    description="MMoE whose experts are Swish(BatchNorm(W x)), batch statistics only",
    paper="Wang et al. (Kuaishou), arXiv 2408.05430, 2024 (HoME)",
)
class MMoENorm(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E).

    Expert e, unit j: u = x W[:, e, j]; n = (u - mean_B u) / sqrt(var_B u + eps);
    f_e,j = swish(scale[e, j] n + shift[e, j]) (mean and variance over the batch), giving
    experts of shape (B, E, H); the gates and towers are MMoE's.

    The expert layer has no bias: the batch mean removes it, and ``shift`` takes its place.

    Attributes:
      n_tasks: K.
      num_experts: E.
      expert_units: Swish units per expert.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    num_experts: int = 8
    expert_units: int = 16
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        e, h = self.num_experts, self.expert_units
        u = nn.Dense(e * h, use_bias=False, name="experts")(x).reshape(x.shape[0], e, h)
        mean = u.mean(axis=0)
        var = jnp.square(u - mean).mean(axis=0)
        scale = self.param("norm_scale", nn.initializers.ones, (e, h))
        shift = self.param("norm_shift", nn.initializers.zeros, (e, h))
        experts = jax.nn.silu(scale * (u - mean) / jnp.sqrt(var + EPS) + shift)  # (B, E, H)
        self.sow("intermediates", "expert_outputs", experts)  # read by the engine only
        gates = Gates(self.n_tasks, e, name="gates")(x)  # (B, K, E)
        return Towers(self.n_tasks, self.tower_units, name="towers")(mix(gates, experts)), gates
