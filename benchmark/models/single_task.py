"""Single-task baseline: an independent Shared-Bottom-sized network per task. It is the
reference of the "MTL gain" in Tang et al., "Progressive Layered Extraction (PLE)",
RecSys 2020, section 5."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import register
from ._layers import Towers


@register(
    "single_task",
    label="Single-task",
    order=0,
    description="an independent network per task, no sharing (baseline for MTL gain)",
    paper="Tang et al., RecSys 2020 (MTL-gain baseline)",
)
class SingleTask(nn.Module):
    """x (B, d) -> preds (B, K), gates None. Task k sees only its own bottom.

    Attributes:
      n_tasks: K.
      bottom_units: width of each task's own ReLU layer (Shared-Bottom's body, per task).
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    bottom_units: int = 113
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        # Laid out (d, K, units), so the K bottoms are one (d, K * units) matmul, forward and
        # backward, with no transposition of the kernel at each step; fan-in d per task.
        init = nn.initializers.lecun_normal(in_axis=0, out_axis=2, batch_axis=(1,))
        w = self.param("bottom_kernel", init, (d, self.n_tasks, self.bottom_units))
        b = self.param("bottom_bias", nn.initializers.zeros, (self.n_tasks, self.bottom_units))
        h = jax.nn.relu(jnp.einsum("bd,dkh->bkh", x, w) + b)
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), None
