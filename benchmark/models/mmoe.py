"""Multi-gate Mixture-of-Experts (MMoE): Ma et al., "Modeling Task Relationships in
Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018, section 4.2."""

from __future__ import annotations

import flax.linen as nn

from . import register
from ._layers import Experts, Gates, Towers, mix


@register(
    "mmoe",
    label="MMoE",
    order=3,
    description="ReLU experts mixed by one softmax gate per task, g^k(x) = softmax(W_gk x)",
    paper="Ma et al., KDD 2018",
    representation="experts",
)
class MMoE(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E).

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
        gates = Gates(self.n_tasks, self.num_experts, name="gates")(x)  # (B, K, E)
        h = mix(gates, experts)  # (B, K, H)
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), gates
