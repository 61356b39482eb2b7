"""One-gate Mixture-of-Experts (OMoE): Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018, section 4.2 (equation 5)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from . import register
from ._layers import Experts, Gates, Towers, mix


@register(
    "omoe",
    label="OMoE",
    order=2,
    description="ReLU experts mixed by ONE softmax gate shared by all tasks",
    paper="Ma et al., KDD 2018 (OMoE baseline)",
)
class OMoE(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E) (identical rows: one shared gate).

    Attributes:
      n_tasks: K.
      num_experts: E.
      expert_units: ReLU units per expert.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    num_experts: int = 8
    expert_units: int = 16
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        experts = Experts(self.num_experts, self.expert_units, name="experts")(x)
        gate = Gates(1, self.num_experts, name="gate")(x)  # (B, 1, E)
        h = mix(gate, experts)[:, 0]  # (B, H)
        gates = jnp.broadcast_to(gate, (x.shape[0], self.n_tasks, self.num_experts))
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), gates
