"""Cross-stitch networks: Misra et al., "Cross-stitch Networks for Multi-task Learning",
CVPR 2016, section 3 (eq. 1): one network column per task, and a learned cross-stitch unit
that replaces each column's activations by a linear combination of every column's, here
after the columns' single ReLU layer and before the task towers.

Left out: the paper's larger learning rate for the cross-stitch units (it scales their
gradients by 10^3); every parameter here gets the engine's one learning rate. The paper
stitches after several layers of a deep network; this one has one hidden layer per column.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import register
from ._layers import Towers


def _stitch_init(diagonal: float):
    """``diagonal`` on the diagonal and (1 - diagonal) / (K - 1) elsewhere: every row sums
    to 1, as in the paper's (alpha_S, alpha_D) = (0.9, 0.1) for two tasks."""

    def init(key, shape, dtype=jnp.float32):
        k = shape[0]
        off = (1.0 - diagonal) / max(k - 1, 1)
        return jnp.full(shape, off, dtype) + (diagonal - off) * jnp.eye(k, dtype=dtype)

    return init


@register(
    "cross_stitch",
    label="Cross-stitch",
    order=11,
    description="a ReLU column per task, mixed by a learned K x K cross-stitch unit",
    paper="Misra et al., CVPR 2016",
)
class CrossStitch(nn.Module):
    """x (B, d) -> preds (B, K), gates None.

    Column k: h_k = relu(x W_k + b_k), (B, H). Cross-stitch unit alpha (K, K):
    h~_k = sum_j alpha[k, j] h_j, (B, K, H); task k's tower reads h~_k.

    Attributes:
      n_tasks: K.
      column_units: H, width of each task's column; 68 puts the total at 14862 parameters
        for d = 100, K = 2, against MMoE's 14818.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    column_units: int = 68
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        d, k, h = x.shape[-1], self.n_tasks, self.column_units
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        w = self.param("column_kernel", init, (k, d, h))
        b = self.param("column_bias", nn.initializers.zeros, (k, h))
        columns = jax.nn.relu(jnp.einsum("bd,kdh->bkh", x, w) + b)  # (B, K, H)
        alpha = self.param("stitch", _stitch_init(0.9), (k, k))
        stitched = jnp.einsum("kj,bjh->bkh", alpha, columns)  # (B, K, H)
        return Towers(k, self.tower_units, name="towers")(stitched), None
