"""DSelect-k: Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts
with Applications to Multi-Task Learning", NeurIPS 2021, section 3 (the smooth-step function,
the single-expert selectors built on a binary encoding, and their softmax-weighted sum), in
its per-example ("example-conditioned") form, with MMoE's experts and towers around it.

Each task's gate is a convex combination of k single-expert selectors. Selector i reads m =
log2(E) smooth-step activations S(z_i1), ..., S(z_im) and gives expert e the weight
prod_j (S(z_ij) if bit j of e is 1 else 1 - S(z_ij)); once every |z_ij| >= gamma / 2 the
selector is one-hot, so the task's gate has at most k non-zero weights.

Left out: the paper's entropy regulariser on the selectors (section 3.3). The reference Keras
layer (google-research ``dselect_k_moe``) makes it optional and off by default
(``entropy_reg=None``), which is what this model trains as; an architecture here returns only
``(preds, gates)`` and the training loss is the engine's, so there is no way for it into the
loss. The paper's other regulariser, for E not a power of
2, is replaced by requiring a power of 2 (every binary code is then an expert).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import register
from ._layers import Experts, Towers, mix


def smooth_step(t, gamma: float):
    """The cubic smooth-step of the paper's eq. (3): 0 below -gamma/2, 1 above gamma/2."""
    t = jnp.clip(t, -gamma / 2, gamma / 2)
    return -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5


def binary_codes(num_experts: int) -> np.ndarray:
    """``(E, m)`` 0/1 matrix, m = ceil(log2 E): row e is e in binary, most significant first."""
    m = math.ceil(math.log2(num_experts))
    codes = [[(e >> (m - 1 - j)) & 1 for j in range(m)] for e in range(num_experts)]
    return np.array(codes, dtype=np.int32).reshape(num_experts, m)


def _uniform(scale: float):
    """Initialiser drawing from U(-scale, scale)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


@register(
    "dselect_k",
    label="DSelect-k",
    order=10,
    description="MMoE's experts, each task gated by k smooth-step binary selectors (k-sparse)",
    paper="Hazimeh et al., NeurIPS 2021",
    revision=1,  # 1: the selector weights' bias drawn as the reference's, not zeros
    representation="experts",
)
class DSelectK(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, E).

    Per task t, with m = log2(E): selector logits z = x W_z^t + b_z^t of shape (B, k, m),
    selector-weight logits w = x W_w^t + b_w^t of shape (B, k); the gate is
    sum_i softmax(w)_i r_i with r_i (B, E) the i-th selector's weights over the experts.

    Attributes:
      n_tasks: K.
      num_experts: E, a power of 2.
      k: number of single-expert selectors per task: at most k experts once saturated.
      expert_units: ReLU units per expert.
      tower_units: hidden units of each task tower.
      gamma: width of the smooth-step's cubic region.
    """

    n_tasks: int = 2
    num_experts: int = 8
    k: int = 2
    expert_units: int = 16
    tower_units: int = 8
    gamma: float = 1.0

    def __post_init__(self):
        e = self.num_experts
        if isinstance(e, int) and e >= 1 and e & (e - 1):
            raise ValueError(f"dselect_k.num_experts must be a power of 2, got {e}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        e, kk = self.num_experts, self.k
        codes = jnp.asarray(binary_codes(e), jnp.float32)  # (E, m)
        m = codes.shape[1]
        d, t = x.shape[-1], self.n_tasks
        # The reference initialisation: z near 0, so every selector starts near uniform;
        # the selector weights' kernel and bias from Keras's RandomUniform, U(-0.05, 0.05).
        z_init, w_init = _uniform(self.gamma / 100), _uniform(0.05)
        wz = self.param("z_kernel", z_init, (t, d, kk * m))
        bz = self.param("z_bias", z_init, (t, kk * m))
        ww = self.param("w_kernel", w_init, (t, d, kk))
        bw = self.param("w_bias", w_init, (t, kk))
        z = (jnp.einsum("bd,tdf->btf", x, wz) + bz).reshape(x.shape[0], t, kk, m)
        s = smooth_step(z, self.gamma)[..., None, :]  # (B, K, k, 1, m)
        # Selector i over expert e: prod_j of S(z_ij) where bit j of e is 1, else 1 - S(z_ij).
        selectors = jnp.prod(codes * s + (1.0 - codes) * (1.0 - s), axis=-1)  # (B, K, k, E)
        alpha = jax.nn.softmax(jnp.einsum("bd,tdi->bti", x, ww) + bw, axis=-1)  # (B, K, k)
        gates = jnp.einsum("bti,btie->bte", alpha, selectors)  # (B, K, E)
        experts = Experts(e, self.expert_units, name="experts")(x)  # (B, E, H)
        return Towers(t, self.tower_units, name="towers")(mix(gates, experts)), gates
