"""AdaTT: Li et al., "AdaTT: Adaptive Task-to-Task Fusion Network for Multitask Learning in
Recommendations", KDD 2023, section 3 (the variant with shared experts). Every task owns a
group of experts and one group is shared. Task t's fusion unit adds two terms: a softmax gate
over ALL experts (every task's and the shared ones; "AllExpert-GF") and a learned linear
combination of task t's own experts ("NativeExpert-LF", the residual). With more than one
fusion level, every level but the last also has a fusion unit for the shared group, and each
group's experts read its own fusion unit's output from the level below.

Choices: the gates have no bias, like this benchmark's MMoE gate, softmax(W x) (the reference
code's gates have one); a group with a single expert adds it with weight 1 instead of a
learned weight, as the reference code does when every group has one expert.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import register
from ._layers import Experts, Towers


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class FusionLevel(nn.Module):
    """One AdaTT level. Input ``(B, K + 1, D)``: row t < K feeds task t's experts and fusion
    unit, row K the shared experts (and the shared fusion unit). Output ``(outputs, gates)``:
    outputs ``(B, K + 1, H)`` when ``shared_unit`` (row K fuses for the next level's shared
    experts) or ``(B, K, H)``; gates ``(B, K, K * E_t + E_s)``, task t's weights over every
    expert, ordered task 0's E_t, ..., task K-1's E_t, then the E_s shared ones.
    """

    n_tasks: int
    task_experts: int
    shared_experts: int
    units: int
    shared_unit: bool

    @nn.compact
    def __call__(self, inputs):
        k, et, es, h = self.n_tasks, self.task_experts, self.shared_experts, self.units
        b, d = inputs.shape[0], inputs.shape[-1]
        n_all = k * et + es
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        wt = self.param("task_expert_kernel", init, (k, d, et * h))
        bt = self.param("task_expert_bias", nn.initializers.zeros, (k, et * h))
        own = jax.nn.relu(jnp.einsum("bkd,kdf->bkf", inputs[:, :k], wt) + bt)
        own = own.reshape(b, k, et, h)  # task t's own experts
        shared = Experts(es, h, name="shared_experts")(inputs[:, k])  # (B, Es, H)
        every = jnp.concatenate([own.reshape(b, k * et, h), shared], axis=1)  # (B, E_all, H)
        units = k + 1 if self.shared_unit else k
        wg = self.param("gate_kernel", init, (units, d, n_all))
        gates = jax.nn.softmax(jnp.einsum("bud,ude->bue", inputs[:, :units], wg), axis=-1)
        fused = jnp.einsum("bue,beh->buh", gates, every)  # AllExpert-GF
        # NativeExpert-LF: each unit's linear combination of its own group.
        if et > 1:
            vt = self.param("task_residual", _uniform(math.sqrt(1.0 / et)), (k, et))
            res = jnp.einsum("ke,bkeh->bkh", vt, own)
        else:
            res = own[:, :, 0]
        if self.shared_unit:
            if es > 1:
                vs = self.param("shared_residual", _uniform(math.sqrt(1.0 / es)), (es,))
                res_s = jnp.einsum("e,beh->bh", vs, shared)
            else:
                res_s = shared[:, 0]
            res = jnp.concatenate([res, res_s[:, None]], axis=1)
        return fused + res, gates[:, :k]


@register(
    "adatt",
    label="AdaTT",
    order=12,
    description="task and shared experts; per task a gate over all experts plus its own residual",
    paper="Li et al., KDD 2023",
)
class AdaTT(nn.Module):
    """x (B, d) -> preds (B, K), gates (B, K, K * E_t + E_s) of the last level.

    Per level, task t: f_t = sum_e softmax(W_t x_t)_e E_e(x_e) + sum_{j < E_t} v_tj E_tj(x_t),
    with E_tj task t's own experts. Defaults give 2 * 2 + 4 = 8 experts of 16 units for
    K = 2, MMoE's and CGC's expert budget.

    Attributes:
      n_tasks: K.
      levels: number of fusion levels.
      task_experts: E_t, experts owned by each task, per level.
      shared_experts: E_s, shared experts, per level.
      expert_units: ReLU units per expert.
      tower_units: hidden units of each task tower.
    """

    n_tasks: int = 2
    levels: int = 1
    task_experts: int = 2
    shared_experts: int = 4
    expert_units: int = 16
    tower_units: int = 8

    @nn.compact
    def __call__(self, x):
        h = jnp.broadcast_to(x[:, None], (x.shape[0], self.n_tasks + 1, x.shape[-1]))
        gates = None
        for level in range(self.levels):
            h, gates = FusionLevel(
                self.n_tasks,
                self.task_experts,
                self.shared_experts,
                self.expert_units,
                shared_unit=level < self.levels - 1,
                name=f"fusion_{level}",
            )(h)
        return Towers(self.n_tasks, self.tower_units, name="towers")(h), gates
