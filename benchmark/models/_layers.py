"""Building blocks shared by the architectures (not an architecture: no registration)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Experts(nn.Module):
    """``num_experts`` single-layer ReLU experts, computed as one fused matmul.

    Input ``(B, d)``, output ``(B, num_experts, units)``. The output is also sown as
    ``intermediates/expert_outputs`` (a no-op unless that collection is mutable), which the
    engine reads for its expert-collapse measure.
    """

    num_experts: int
    units: int

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.num_experts * self.units, name="dense")(x)
        out = jax.nn.relu(h).reshape(x.shape[:-1] + (self.num_experts, self.units))
        self.sow("intermediates", "expert_outputs", out)
        return out


class Gates(nn.Module):
    """``num_gates`` softmax gates over ``num_experts``, ``g(x) = softmax(W x)`` (no bias).

    Input ``(B, d)``, output ``(B, num_gates, num_experts)``; each row sums to 1.
    """

    num_gates: int
    num_experts: int

    @nn.compact
    def __call__(self, x):
        logits = nn.Dense(self.num_gates * self.num_experts, use_bias=False, name="dense")(x)
        logits = logits.reshape(x.shape[:-1] + (self.num_gates, self.num_experts))
        return jax.nn.softmax(logits, axis=-1)


def mix(gates, experts):
    """Gate-weighted sum of experts: ``(B, G, E)`` x ``(B, E, H)`` -> ``(B, G, H)``."""
    return jnp.einsum("bge,beh->bgh", gates, experts)


class Towers(nn.Module):
    """One tower per task: a ReLU hidden layer of ``units`` then a scalar output.

    Input ``(B, K, H)`` (task k's tower reads row k) or ``(B, H)`` (every tower reads the
    same features); output ``(B, K)``.
    """

    n_tasks: int
    units: int = 8

    @nn.compact
    def __call__(self, h):
        h_in = h.shape[-1]
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        w1 = self.param("hidden_kernel", init, (self.n_tasks, h_in, self.units))
        b1 = self.param("hidden_bias", nn.initializers.zeros, (self.n_tasks, self.units))
        w2 = self.param("out_kernel", init, (self.n_tasks, self.units, 1))
        b2 = self.param("out_bias", nn.initializers.zeros, (self.n_tasks,))
        spec = "bh,khu->bku" if h.ndim == 2 else "bkh,khu->bku"
        t = jax.nn.relu(jnp.einsum(spec, h, w1) + b1)
        return jnp.einsum("bku,ku->bk", t, w2[..., 0]) + b2


class Extraction(nn.Module):
    """One extraction layer of PLE (a CGC block): task-specific plus shared experts.

    Input ``(B, K + 1, D)``: row k < K feeds task k's experts and gate, row K feeds the
    shared experts (and the shared gate); or ``(B, D)``, one input that feeds every row
    (the first layer), contracted once with no copy per row. Output
    ``(outputs, task_gates)`` with outputs of shape ``(B, K + 1, H)`` when ``shared_gate``
    (row K mixes every expert for the next layer) or ``(B, K, H)`` otherwise, and
    ``task_gates`` of shape ``(B, K, E_t + E_s)``: task k's weights over its own E_t
    experts followed by the E_s shared ones.
    """

    n_tasks: int
    task_experts: int
    shared_experts: int
    units: int
    shared_gate: bool

    @nn.compact
    def __call__(self, inputs):
        k, et, es, h = self.n_tasks, self.task_experts, self.shared_experts, self.units
        b, d = inputs.shape[0], inputs.shape[-1]
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        if inputs.ndim == 2:  # one input for every row
            task_in, shared_in, spec = inputs, inputs, "bd,kdf->bkf"
        else:
            task_in, shared_in, spec = inputs[:, :k], inputs[:, k], "bkd,kdf->bkf"
        wt = self.param("task_expert_kernel", init, (k, d, et * h))
        bt = self.param("task_expert_bias", nn.initializers.zeros, (k, et * h))
        task_exp = jax.nn.relu(jnp.einsum(spec, task_in, wt) + bt).reshape(b, k, et, h)
        shared_exp = Experts(es, h, name="shared_experts")(shared_in)  # (B, Es, H)
        wg = self.param("task_gate_kernel", init, (k, d, et + es))
        gates = jax.nn.softmax(jnp.einsum(spec, task_in, wg), axis=-1)
        candidates = jnp.concatenate(
            [task_exp, jnp.broadcast_to(shared_exp[:, None], (b, k, es, h))], axis=2
        )  # (B, K, Et + Es, H)
        out = jnp.einsum("bke,bkeh->bkh", gates, candidates)
        if self.shared_gate:
            every = jnp.concatenate([task_exp.reshape(b, k * et, h), shared_exp], axis=1)
            g_shared = Gates(1, k * et + es, name="shared_gate")(shared_in)  # (B, 1, E_all)
            out = jnp.concatenate([out, mix(g_shared, every)], axis=1)
        return out, gates
