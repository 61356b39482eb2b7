"""Small fixed-iteration solvers on the probability simplex, for the K x K problems of
MGDA and CAGrad (jittable: no data-dependent stopping)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp


def min_norm_2(v1v1, v1v2, v2v2):
    """``gamma`` in [0, 1] minimising ``||gamma v1 + (1 - gamma) v2||^2`` (Sener & Koltun,
    NeurIPS 2018, Algorithm 1), from the three inner products."""
    denom = v1v1 + v2v2 - 2.0 * v1v2
    safe = jnp.where(denom > 0, denom, 1.0)
    gamma = jnp.clip((v2v2 - v1v2) / safe, 0.0, 1.0)
    return jnp.where(denom > 0, gamma, 0.5)


def min_norm_element(gg, iters: int):
    """``alpha`` on the simplex minimising ``alpha^T gg alpha`` (the min-norm point of the
    convex hull of the gradients, Sener & Koltun, section 3.2).

    K = 2: the closed form. K > 2: the best pair's closed form, then ``iters`` Frank-Wolfe
    steps with the exact line search of Algorithm 2 of the paper.
    """
    k = gg.shape[0]
    if k == 1:
        return jnp.ones((1,), gg.dtype)
    best, best_cost = None, None
    for i, j in itertools.combinations(range(k), 2):
        g = min_norm_2(gg[i, i], gg[i, j], gg[j, j])
        alpha = jnp.zeros((k,), gg.dtype).at[i].set(g).at[j].set(1.0 - g)
        cost = alpha @ gg @ alpha
        if best is None:
            best, best_cost = alpha, cost
        else:
            better = cost < best_cost
            best = jnp.where(better, alpha, best)
            best_cost = jnp.where(better, cost, best_cost)
    if k == 2:
        return best

    def fw(_, alpha):
        m_alpha = gg @ alpha
        t = jnp.argmin(m_alpha)
        v1v1 = alpha @ m_alpha
        v1v2 = m_alpha[t]
        v2v2 = gg[t, t]
        g = min_norm_2(v1v1, v1v2, v2v2)  # weight of the current point
        return g * alpha + (1.0 - g) * jax.nn.one_hot(t, k, dtype=gg.dtype)

    return jax.lax.fori_loop(0, iters, fw, best)


def cagrad_weights(gg, c, iters: int):
    """``w`` on the simplex minimising CAGrad's dual objective (Liu et al., NeurIPS 2021,
    eq. (4) and section 3.2):

        F(w) = g_w . g_0 + c ||g_0|| ||g_w||,   g_w = sum_k w_k g_k,  g_0 = mean_k g_k,

    from the Gram matrix ``gg``. Frank-Wolfe from the uniform weights, with the exact line
    search (closed form below), ``iters`` steps. K = 2: exact after one step.

    Line search on ``w + gamma (e_t - w)``: with ``v = g_w + gamma u`` (``u = g_t - g_w``),
    ``dF/dgamma = a + c' (u . v) / ||v||`` with ``a = u . g_0``, ``c' = c ||g_0||``. Writing
    ``v = p + s u / sqrt(A)`` (``p`` the point of the line nearest 0, ``|p| = d``,
    ``A = |u|^2``), ``(u . v)/||v|| = sqrt(A) s / sqrt(d^2 + s^2)``; it equals ``-a / c'`` at
    ``s = tau d / sqrt(1 - tau^2)``, ``tau = -a / (c' sqrt(A))``, or nowhere if
    ``|tau| >= 1`` (then F is monotone on the segment).
    """
    k = gg.shape[0]
    dtype = gg.dtype
    b = gg.mean(axis=1)  # b_i = g_i . g_0
    g0_sq = jnp.maximum(b.mean(), 0.0)
    c_eff = c * jnp.sqrt(g0_sq)
    tiny = jnp.finfo(dtype).tiny

    def grad_f(w):
        mw = gg @ w
        norm = jnp.sqrt(jnp.maximum(w @ mw, 0.0))
        return b + c_eff * mw / jnp.maximum(norm, tiny)

    def fw(_, w):
        t = jnp.argmin(grad_f(w))
        e = jax.nn.one_hot(t, k, dtype=dtype)
        dvec = e - w
        big_a = jnp.maximum(dvec @ gg @ dvec, 0.0)  # |u|^2
        u_v1 = dvec @ gg @ w  # u . g_w
        v1_sq = jnp.maximum(w @ gg @ w, 0.0)
        a = dvec @ b
        safe_a = jnp.where(big_a > 0, big_a, 1.0)
        sqrt_a = jnp.sqrt(safe_a)
        gamma0 = -u_v1 / safe_a
        d_sq = jnp.maximum(v1_sq - u_v1**2 / safe_a, 0.0)
        tau = -a / jnp.maximum(c_eff * sqrt_a, tiny)
        tau_in = jnp.clip(tau, -1.0 + 1e-7, 1.0 - 1e-7)
        s = tau_in * jnp.sqrt(d_sq) / jnp.sqrt(1.0 - tau_in**2)
        gamma = jnp.where(tau >= 1.0, 1.0, jnp.where(tau <= -1.0, 0.0, gamma0 + s / sqrt_a))
        gamma = jnp.where(big_a > 0, jnp.clip(gamma, 0.0, 1.0), 0.0)
        return w + gamma * dvec

    w0 = jnp.full((k,), 1.0 / k, dtype)
    return jax.lax.fori_loop(0, iters, fw, w0)
