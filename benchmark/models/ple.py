"""Progressive Layered Extraction (PLE): Tang et al., "Progressive Layered Extraction (PLE): A
Novel Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
section 4.3. Stacked CGC layers; every layer but the last also has a shared gate whose
mixture of all experts feeds the next layer's shared experts."""

from __future__ import annotations

import flax.linen as nn

from . import register
from ._layers import Extraction, Towers


@register(
    "ple",
    label="PLE",
    order=5,
    description="stacked CGC extraction layers with a shared gate between layers",
    paper="Tang et al., RecSys 2020",
)
class PLE(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E_t + E_s) of the last layer.

    Attributes:
      n_tasks: K.
      levels: number of extraction layers (1 is CGC).
      task_experts: E_t, experts owned by each task, per layer.
      shared_experts: E_s, shared experts, per layer.
      expert_units: ReLU units per expert.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    levels: int = 2
    task_experts: int = 2
    shared_experts: int = 4
    expert_units: int = 16
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        h = x  # the first layer's experts all read x; later ones read (B, K + 1, H)
        gates = None
        for level in range(self.levels):
            h, gates = Extraction(
                self.n_tasks,
                self.task_experts,
                self.shared_experts,
                self.expert_units,
                shared_gate=level < self.levels - 1,
                name=f"extraction_{level}",
            )(h)
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), gates
