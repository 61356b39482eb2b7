"""Random loss weighting (RLW): Lin, Ye, Xu, Shi and Zhang, "Reasonable Effectiveness of
Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022, section 3.

At every step the loss weights are drawn afresh, ``lambda = softmax(z)`` with
``z ~ N(0, I_K)`` (the paper's normal-distribution variant, its default), and the model
descends ``sum_k lambda_k L_k``. No state.
"""

from __future__ import annotations

import dataclasses

import jax

from . import LossWeighting, register


@register(
    "rlw",
    description="random loss weights softmax(z), z ~ N(0, I), drawn at every step",
    paper="Lin et al., TMLR 2022",
)
@dataclasses.dataclass(frozen=True)
class RLW(LossWeighting):
    """``w = softmax(z)``, ``z ~ N(0, I_K)`` from the step's key; no hyper-parameters."""

    def weights(self, losses, state, key):
        z = jax.random.normal(key, losses.shape, losses.dtype)
        w = jax.nn.softmax(z)
        return w, state, {"weights": w}
