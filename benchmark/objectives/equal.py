"""Equal weighting: the mean of the K task losses, the engine's default objective.

The baseline of every loss-balancing paper; as configured in Ma et al., KDD 2018 (the
MMoE paper trains on the sum of the task losses; the mean differs by the constant K,
which Adam does not see).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from . import LossWeighting, register


@register(
    "equal",
    description="the mean of the K task MSEs (today's default)",
    paper="Ma et al., KDD 2018 (equal weights)",
)
@dataclasses.dataclass(frozen=True)
class Equal(LossWeighting):
    """``L = (1/K) sum_k L_k``; no state, no hyper-parameters."""

    xla_cpu_defaults = True  # the stored equal-weight results were compiled with them

    def weights(self, losses, state, key):
        k = losses.shape[0]
        w = jnp.full((k,), 1.0 / k, losses.dtype)
        return w, state, {"weights": w}
