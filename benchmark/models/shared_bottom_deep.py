"""Depth-matched Shared-Bottom: Shared-Bottom (Caruana, 1997; the baseline of Ma et al., KDD
2018, section 5.1) whose shared bottom has two hidden ReLU layers instead of one. A control
for PLE (Tang et al., RecSys 2020), whose experts sit in two stacked extraction layers: it has
PLE's depth and, within 15%, PLE's parameter count, but no gates."""

from __future__ import annotations

import flax.linen as nn
import jax

from . import register
from ._layers import Towers


@register(
    "shared_bottom_deep",
    label="Shared-Bottom (2 layers)",
    order=14,
    description="Shared-Bottom with a two-layer ReLU bottom; PLE's depth and size, no gates",
    paper="Caruana 1997; depth control for Tang et al., RecSys 2020",
    representation="bottom2",
)
class SharedBottomDeep(nn.Module):
    """x (B, d) -> preds (B, K), gates None.

    h1 = relu(x W1 + b1) (B, bottom_units); h2 = relu(h1 W2 + b2) (B, bottom2_units); every
    task tower reads h2.

    Attributes:
      n_tasks: K.
      bottom_units: width of the first shared layer.
      bottom2_units: width of the second shared layer. 86 and 86 give 17578 parameters at
        d = 100, K = 2, against PLE's 17586.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    bottom_units: int = 86
    bottom2_units: int = 86
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        h = jax.nn.relu(nn.Dense(self.bottom_units, name="bottom")(x))
        h = jax.nn.relu(nn.Dense(self.bottom2_units, name="bottom2")(h))
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), None
