"""Customized Gate Control (CGC): Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020, section 4.2.
PLE with a single extraction layer."""

from __future__ import annotations

import flax.linen as nn

from . import register
from ._layers import Extraction, Towers


@register(
    "cgc",
    label="CGC",
    order=4,
    description="task-specific plus shared experts, one gate per task over its own and shared",
    paper="Tang et al., RecSys 2020 (CGC)",
)
class CGC(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E_t + E_s).

    Defaults give 2 * 2 + 4 = 8 experts of 16 units, MMoE's expert budget for K = 2.

    Attributes:
      n_tasks: K.
      task_experts: E_t, experts owned by each task.
      shared_experts: E_s, experts shared by every task.
      expert_units: ReLU units per expert.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    task_experts: int = 2
    shared_experts: int = 4
    expert_units: int = 16
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        h, gates = Extraction(
            self.n_tasks,
            self.task_experts,
            self.shared_experts,
            self.expert_units,
            shared_gate=False,
            name="extraction",
        )(x)  # x feeds every task's and the shared experts
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), gates
