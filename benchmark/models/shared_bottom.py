"""Shared-Bottom: hard parameter sharing (Caruana, 1997), the baseline of Ma et al.,
"Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018, sections 3.3 and 5.1."""

from __future__ import annotations

import flax.linen as nn
import jax

from . import register
from ._layers import Towers


@register(
    "shared_bottom",
    label="Shared-Bottom",
    order=1,
    description="one shared ReLU layer, a tower per task (hard parameter sharing)",
    paper="Caruana 1997; as configured in Ma et al., KDD 2018",
    representation="bottom",
)
class SharedBottom(nn.Module):
    """x (B, d) -> preds (B, K), gates None.

    Attributes:
      n_tasks: K.
      bottom_units: width of the shared layer; 113 matches MMoE's parameter count at d = 100
        (KDD18 section 5.1), 16 is the Figure 3 setting.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    bottom_units: int = 113
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        h = jax.nn.relu(nn.Dense(self.bottom_units, name="bottom")(x))
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), None
