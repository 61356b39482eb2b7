"""The KDD18 task generator (Ma et al., KDD 2018, section 3.2), generalised to K tasks.

Every function here is pure JAX and works under ``jit`` and ``vmap``. A run's data is a
function of a ``jax.random`` key and a :class:`TaskSpec`; the correlation (a scalar ``p``
for two tasks, or a ``(K, K)`` cosine matrix) may be a traced value.

Construction, for task weights with target cosine matrix ``R`` (``R = [[1, p], [p, 1]]``
for the paper's pair of tasks)::

    U  = K orthonormal columns in R^d             (d, K)
    W  = c * U @ L.T,   L = cholesky(R)           (d, K),   cos(w_i, w_j) = R_ij
    x  ~ N(0, I_d)                                (n, d)
    z  = x @ W                                    (n, K)
    y  = z + sum_i sin(alpha_i * z + beta_i) + noise_std * eps

For K = 2, ``L = [[1, 0], [p, sqrt(1 - p^2)]]`` and ``W`` is exactly the paper's
``w1 = c u1``, ``w2 = c (p u1 + sqrt(1 - p^2) u2)``.

Since every column of ``W`` has norm ``c``, each ``z_k`` is exactly ``N(0, c^2)`` whatever
``d`` and ``R``; so the label moments, the label correlation and the standardisation
constants have closed forms (:func:`label_moments`, :func:`label_correlation`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import _cpu_rng

try:  # the threefry2x32 block function: two 32-bit words per counter
    from jax._src.random.threefry2x32 import threefry2x32_p as _threefry2x32_p
except ImportError:  # pragma: no cover - depends on the JAX version
    _threefry2x32_p = None

__all__ = [
    "TaskSpec",
    "cosine_matrix",
    "cluster_cosines",
    "validate_correlation",
    "psd_cholesky",
    "orthonormal_basis",
    "task_weights",
    "labels",
    "sample",
    "sample_at",
    "points",
    "draw_indices",
    "label_moments",
    "label_correlation",
]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Constants of one generator; everything a run's data depends on besides its key.

    Attributes:
      d: input dimension (the paper uses 100).
      c: norm of every task weight vector ``w_k``.
      alpha: sinusoid frequencies ``alpha_i``, ``m = len(alpha)`` terms, shared by all tasks.
      beta: sinusoid phases ``beta_i``, same length as ``alpha``.
      noise_std: standard deviation of the i.i.d. Gaussian label noise.
      standardize: if True, labels are centred and divided by their exact (closed-form)
        standard deviation, a constant of the spec, so an MSE reads as a fraction of
        label variance.
      name: a label for reports (the preset name).
    """

    d: int = 100
    c: float = 1.0
    alpha: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()
    noise_std: float = 0.1
    standardize: bool = True
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "alpha", tuple(float(a) for a in self.alpha))
        object.__setattr__(self, "beta", tuple(float(b) for b in self.beta))
        if not isinstance(self.d, int | np.integer) or self.d < 1:
            raise ValueError(f"d must be a positive integer, got {self.d!r}")
        if not (math.isfinite(self.c) and self.c > 0):
            raise ValueError(f"c must be a finite number > 0, got {self.c!r}")
        if len(self.alpha) != len(self.beta):
            raise ValueError(
                f"alpha and beta must have the same length m, got {len(self.alpha)} and "
                f"{len(self.beta)}"
            )
        if not all(math.isfinite(v) for v in self.alpha + self.beta):
            raise ValueError("alpha and beta must be finite numbers")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std!r}")
        # Plain Python numbers, so to_dict() is JSON-ready even for numpy inputs.
        object.__setattr__(self, "d", int(self.d))
        object.__setattr__(self, "c", float(self.c))
        object.__setattr__(self, "noise_std", float(self.noise_std))

    @property
    def m(self) -> int:
        """Number of sinusoid terms."""
        return len(self.alpha)

    def replace(self, **changes) -> TaskSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        out = dataclasses.asdict(self)
        out["alpha"] = list(self.alpha)
        out["beta"] = list(self.beta)
        return out


# ----------------------------------------------------------------------------- correlation


def cosine_matrix(p, n_tasks: int = 2):
    """The ``(K, K)`` target cosine matrix for a scalar ``p`` (every pair has cosine ``p``).

    Args:
      p: scalar, possibly traced.
      n_tasks: K.
    Returns:
      ``(K, K)`` array with unit diagonal and ``p`` elsewhere.
    """
    eye = jnp.eye(n_tasks)
    return eye + (1.0 - eye) * jnp.asarray(p, jnp.float32)


def validate_correlation(corr, n_tasks: int | None = None, d: int | None = None) -> np.ndarray:
    """Check a correlation on the host and return it as a ``(K, K)`` float64 matrix.

    ``corr`` is a scalar ``p`` in [-1, 1] (two tasks, or ``n_tasks`` tasks that all share the
    cosine ``p``) or a ``(K, K)`` matrix that is symmetric, has a unit diagonal and is
    positive semidefinite. Raises ``ValueError`` naming the parameter and its allowed range.
    """
    arr = np.asarray(corr, dtype=np.float64)
    if arr.ndim == 0:
        p = float(arr)
        if not (math.isfinite(p) and -1.0 <= p <= 1.0):
            raise ValueError(f"correlation p must lie in [-1, 1], got {p!r}")
        k = 2 if n_tasks is None else n_tasks
        arr = np.full((k, k), p)
        np.fill_diagonal(arr, 1.0)
    elif arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"correlation matrix R must be square (K, K), got shape {arr.shape}")
    k = arr.shape[0]
    if n_tasks is not None and k != n_tasks:
        raise ValueError(f"correlation matrix R is {k}x{k} but n_tasks is {n_tasks}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("correlation matrix R must be finite")
    if not np.allclose(arr, arr.T, atol=1e-8):
        raise ValueError("correlation matrix R must be symmetric")
    if not np.allclose(np.diag(arr), 1.0, atol=1e-8):
        raise ValueError("correlation matrix R must have a unit diagonal (every cos(w_k, w_k) = 1)")
    if np.any(np.abs(arr) > 1.0 + 1e-12):
        raise ValueError("correlation matrix R entries must lie in [-1, 1]")
    min_eig = float(np.linalg.eigvalsh(arr).min())
    if min_eig < -1e-8:
        raise ValueError(
            f"correlation matrix R must be positive semidefinite (smallest eigenvalue >= 0), "
            f"got smallest eigenvalue {min_eig:.3g}"
        )
    if d is not None and d < k:
        raise ValueError(f"input dimension d must be >= the number of tasks K={k}, got d={d}")
    return arr


def cluster_cosines(n_tasks: int, n_clusters: int, p_in: float, p_out: float = 0.0) -> np.ndarray:
    """The ``(K, K)`` cosine matrix of K tasks in C clusters: cosine ``p_in`` between two
    tasks of one cluster, ``p_out`` between clusters, 1 on the diagonal.

    Task k belongs to cluster ``k * C // K``: contiguous blocks whose sizes differ by at
    most one (K = 16, C = 4: tasks 0-3, 4-7, 8-11, 12-15).

    Args:
      n_tasks: K >= 2.
      n_clusters: C, 1 <= C <= K.
      p_in, p_out: cosines in [-1, 1] with ``p_out <= p_in``.
    Returns:
      ``(K, K)`` float64 matrix, positive semidefinite (checked: a ValueError names the
      parameters otherwise), ready for ``task_weights`` and ``validate_correlation``.
    """
    for name, v in (("n_tasks", n_tasks), ("n_clusters", n_clusters)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n_tasks < 2:
        raise ValueError(f"n_tasks must be >= 2, got {n_tasks}")
    if not 1 <= n_clusters <= n_tasks:
        raise ValueError(f"n_clusters must lie in [1, n_tasks = {n_tasks}], got {n_clusters}")
    for name, v in (("p_in", p_in), ("p_out", p_out)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and -1 <= v <= 1):
            raise ValueError(f"{name} must lie in [-1, 1], got {v!r}")
    if p_out > p_in:
        raise ValueError(f"p_out must be <= p_in, got p_out = {p_out} > p_in = {p_in}")
    cluster = np.arange(n_tasks) * n_clusters // n_tasks
    r = np.where(cluster[:, None] == cluster[None, :], float(p_in), float(p_out))
    np.fill_diagonal(r, 1.0)
    low = float(np.linalg.eigvalsh(r).min())
    if low < -1e-9:
        raise ValueError(
            f"cosines p_in = {p_in}, p_out = {p_out} with {n_tasks} tasks in {n_clusters} "
            f"clusters are not positive semidefinite (smallest eigenvalue {low:.3g})"
        )
    return r


def psd_cholesky(r):
    """Lower-triangular ``L`` with ``L @ L.T = R`` for a PSD ``R``, singular ones included.

    An unrolled Cholesky (K is small) that clamps tiny negative pivots to zero and zeroes a
    column whose pivot vanishes, so ``p = 1`` gives ``w1 = w2`` instead of NaN. For
    ``R = [[1, p], [p, 1]]`` it returns ``[[1, 0], [p, sqrt(1 - p^2)]]``, the paper's formula.

    Args:
      r: ``(K, K)`` symmetric PSD matrix with unit diagonal, possibly traced.
    Returns:
      ``(K, K)`` lower-triangular matrix.
    """
    r = jnp.asarray(r, jnp.float32)
    k = r.shape[0]
    cols = []
    for j in range(k):
        prev = jnp.stack(cols, axis=1) if cols else jnp.zeros((k, 0), r.dtype)
        s = r[:, j] - prev @ prev[j]
        pivot = jnp.sqrt(jnp.maximum(s[j], 0.0))
        safe = jnp.where(pivot > 1e-6, pivot, 1.0)
        col = jnp.where(pivot > 1e-6, s / safe, 0.0)
        col = jnp.where(jnp.arange(k) < j, 0.0, col).at[j].set(pivot)
        cols.append(col)
    return jnp.stack(cols, axis=1)


# ----------------------------------------------------------------------------- sampling


def orthonormal_basis(key, d: int, n_tasks: int):
    """K Haar-random orthonormal columns in R^d: QR of a Gaussian matrix, signs fixed.

    Returns:
      ``(d, K)`` array ``U`` with ``U.T @ U = I_K``.
    """
    g = jax.random.normal(key, (d, n_tasks), jnp.float32)
    q, r = jnp.linalg.qr(g)
    return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)


def task_weights(key, spec: TaskSpec, corr, n_tasks: int = 2):
    """Task weight vectors with exact pairwise cosines.

    Args:
      key: PRNG key for the orthonormal basis.
      spec: generator constants.
      corr: scalar ``p`` (possibly traced) or a ``(K, K)`` cosine matrix.
      n_tasks: K when ``corr`` is a scalar.
    Returns:
      ``(d, K)`` array ``W`` with ``|w_k| = c`` and ``cos(w_i, w_j) = R_ij``.
    """
    _cpu_rng.ensure()  # the unrolled threefry lowering, on a CPU backend only
    corr = jnp.asarray(corr, jnp.float32)
    r = cosine_matrix(corr, n_tasks) if corr.ndim == 0 else corr
    u = orthonormal_basis(key, spec.d, r.shape[0])
    return spec.c * u @ psd_cholesky(r).T


def labels(key, x, w, spec: TaskSpec):
    """Labels ``y_k = w_k.x + sum_i sin(alpha_i w_k.x + beta_i) + noise`` (standardised if asked).

    Args:
      key: PRNG key for the noise.
      x: ``(n, d)`` inputs.
      w: ``(d, K)`` task weights.
      spec: generator constants.
    Returns:
      ``(n, K)`` labels.
    """
    return _labels(x, w, spec, lambda shape: _normal(key, shape))


def _labels(x, w, spec: TaskSpec, noise):
    """:func:`labels` with the ``(n, K)`` standard normal noise drawn by ``noise(shape)``."""
    z = x @ w
    # The sinusoids and the noise are summed in one reduction: XLA materialises its result
    # once, instead of recomputing the noise and the sinusoids inside every consumer of y.
    terms = [spec.noise_std * noise(z.shape)[..., None]]
    if spec.m:
        alpha = jnp.asarray(spec.alpha, jnp.float32)
        beta = jnp.asarray(spec.beta, jnp.float32)
        terms.insert(0, jnp.sin(z[..., None] * alpha + beta))
    y = z + jnp.concatenate(terms, axis=-1).sum(-1)
    if spec.standardize:
        mean, std = _standardization(spec)
        y = (y - mean) / std
    return y


def sample(key, spec: TaskSpec, n: int, w):
    """Draw ``n`` labelled points for fixed task weights ``w``.

    Args:
      key: PRNG key for ``x`` and the noise.
      spec: generator constants.
      n: number of points (static).
      w: ``(d, K)`` task weights from :func:`task_weights`.
    Returns:
      ``(x, y)`` of shapes ``(n, d)`` and ``(n, K)``.
    """
    _cpu_rng.ensure()  # the unrolled threefry lowering, on a CPU backend only
    kx, ke = jax.random.split(key)
    x = _normal(kx, (n, spec.d))
    return x, labels(ke, x, w, spec)


def sample_at(key, spec: TaskSpec, index, w):
    """The points ``index`` of the endless sequence of labelled points that ``key`` defines.

    Point ``i`` is a pure function of ``(key, i)``: the same wherever and however often it
    is drawn, so a training set of ``n`` points is the indices ``0 .. n - 1``, held by no
    array, and a batch of it costs what a batch of fresh points costs (the same number of
    threefry blocks: point ``i``'s values use the counters ``(i, 0 .. d - 1)``).

    Args:
      key: PRNG key of the sequence.
      spec: generator constants.
      index: ``(B,)`` integer indices in ``[0, 2**32)`` (traced).
      w: ``(d, K)`` task weights.
    Returns:
      ``(x, y)`` of shapes ``(B, d)`` and ``(B, K)``.
    """
    return points(key, spec, w)(index)


def points(key, spec: TaskSpec, w):
    """:func:`sample_at` with ``key``, ``spec`` and ``w`` bound: ``at(index) -> (x, y)``.

    The key's split into the inputs' and the noise's streams happens once, here, so a
    training loop that calls ``at`` at every step does not repeat it.
    """
    _cpu_rng.ensure()  # the unrolled threefry lowering, on a CPU backend only
    kx, ke = jax.random.split(key)

    def at(index):
        rows = jnp.asarray(index).astype(jnp.uint32)
        x = _normal_rows(kx, rows, spec.d)
        return x, _labels(x, w, spec, lambda shape: _normal_rows(ke, rows, shape[-1]))

    return at


def draw_indices(key, n_draws: int, n: int):
    """``(n_draws,)`` int32 indices drawn uniformly from ``[0, n)`` with replacement.

    Bit for bit ``jax.random.randint(key, (n_draws,), 0, n)`` (a test checks it): the same
    two 32-bit draws from the key's split, combined as ``randint`` combines them, with the
    constants that depend on ``n`` alone computed in Python. On a CPU it costs a quarter of
    ``randint``, whose general form (traced bounds, clipping) XLA does not simplify.

    Args:
      key: PRNG key.
      n_draws: how many indices (static).
      n: the set's size, an integer in ``[1, 2**31 - 1]`` (static).
    """
    if not isinstance(n, int) or not 1 <= n <= 2**31 - 1:
        raise ValueError(f"n must be an integer in [1, 2**31 - 1], got {n!r}")
    k_hi, k_lo = jax.random.split(key)
    hi = jax.random.bits(k_hi, (n_draws,), jnp.uint32)
    lo = jax.random.bits(k_lo, (n_draws,), jnp.uint32)
    span = jnp.uint32(n)
    # randint's multiplier: (2^16 mod n)^2 in uint32 arithmetic, then mod n.
    multiplier = jnp.uint32((65536 % n) ** 2 % 2**32 % n)
    return (((hi % span) * multiplier + lo % span) % span).astype(jnp.int32)


# Taylor coefficients of cos(a) = sum_i c_i a^(2i), i = 0..6: on [0, pi/2] the truncation
# error is below (pi/2)^14 / 14! = 3.4e-9, under float32 rounding.
_COS_COEFFS = tuple((-1.0) ** i / math.factorial(2 * i) for i in range(7))


def _normal(key, shape):
    """Exact standard normal draws of ``shape`` (float32), one threefry2x32 block per value.

    Box-Muller with one output per block: the block's two words give ``u`` (24 bits) and
    ``phi`` (23 bits) uniform, and a sign bit; the value is ``sign * sqrt(-2 ln u) *
    cos(phi)``, ``phi`` uniform on [0, pi/2). Since ``|cos|`` of a uniform angle on the
    circle has the law of ``cos(phi)`` and the sign is independent, the value is N(0, 1)
    up to float32 rounding (``|value| <= 5.9``, as ``u >= 2^-25``). Every value uses its own
    counter, so values are independent, and a key's draws do not depend on anything else.
    On CPU this is about 1.6x cheaper than ``jax.random.normal`` (whose erfinv transform is
    most of its cost): its elementwise code vectorises and computes each block once.
    Falls back to ``jax.random.normal`` for keys that are not threefry keys.
    """
    shape = tuple(int(s) for s in shape)
    data = jax.random.key_data(key)
    if _threefry2x32_p is None or data.shape != (2,):
        return jax.random.normal(key, shape, jnp.float32)
    n = math.prod(shape)
    return _box_muller(data, jnp.zeros((n,), jnp.uint32), jax.lax.iota(jnp.uint32, n), shape)


def _normal_rows(key, rows, width: int):
    """``(B, width)`` standard normals, row ``r`` a function of ``(key, rows[r])`` only:
    value ``(r, j)`` is :func:`_normal`'s transform of the threefry block at the counter
    ``(rows[r], j)``. ``rows``: ``(B,)`` uint32."""
    data = jax.random.key_data(key)
    shape = (rows.shape[0], int(width))
    if _threefry2x32_p is None or data.shape != (2,):
        return jax.vmap(
            lambda r: jax.random.normal(jax.random.fold_in(key, r), shape[1:], jnp.float32)
        )(rows)
    hi = jnp.broadcast_to(rows[:, None], shape).reshape(-1)
    lo = jnp.broadcast_to(jax.lax.iota(jnp.uint32, shape[1])[None, :], shape).reshape(-1)
    return _box_muller(data, hi, lo, shape)


def _box_muller(data, hi, lo, shape):
    """Standard normals of ``shape`` from the threefry2x32 blocks of key words ``data``
    at the counters ``(hi, lo)`` (each ``(prod(shape),)`` uint32); see :func:`_normal`."""
    y1, y2 = _threefry2x32_p.bind(data[0], data[1], hi, lo)
    u = ((y1 >> 8).astype(jnp.int32).astype(jnp.float32) + 0.5) * np.float32(2.0**-24)
    radius = jnp.sqrt(-2.0 * jnp.log(u))
    mantissa = (y2 & jnp.uint32(0x7FFFFF)) | jnp.uint32(0x3F800000)  # [1, 2) as float bits
    a = (jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0) * np.float32(math.pi / 2)
    a2 = a * a
    cos = np.float32(_COS_COEFFS[-1])
    for c in _COS_COEFFS[-2::-1]:
        cos = cos * a2 + np.float32(c)
    value = jax.lax.bitcast_convert_type(radius * cos, jnp.uint32) ^ (y2 & jnp.uint32(0x80000000))
    return jax.lax.bitcast_convert_type(value, jnp.float32).reshape(shape)


# ----------------------------------------------------------------------------- closed forms


def _gauss_cos(mean_phase, var):
    """E[cos(t + phi)] for t ~ N(0, var): cos(phi) * exp(-var / 2)."""
    return np.cos(mean_phase) * np.exp(-0.5 * var)


def label_moments(spec: TaskSpec, p: float) -> tuple[float, float]:
    """Exact (variance, covariance) of two raw (unstandardised) labels whose weights have cosine p.

    Uses z1, z2 ~ N(0, c^2) with correlation p and Gaussian identities:
    ``E[sin(a z + b)] = sin(b) e^{-a^2 c^2/2}``, ``E[z sin(a z' + b)] = rho c^2 a cos(b)
    e^{-a^2 c^2/2}``, ``E[sin(a z + b) sin(a' z' + b')] = (E cos(a z - a' z' + b - b') -
    E cos(a z + a' z' + b + b')) / 2``.
    """
    a = np.asarray(spec.alpha, np.float64)
    b = np.asarray(spec.beta, np.float64)
    c2 = spec.c**2

    def cov(rho):
        damp = np.exp(-0.5 * a**2 * c2)
        mean_s = np.sin(b) * damp
        zs = rho * c2 * a * np.cos(b) * damp  # E[z1 s_j(z2)], mean of z is 0
        ai, aj = a[:, None], a[None, :]
        e_ss = 0.5 * (
            _gauss_cos(b[:, None] - b[None, :], c2 * (ai**2 + aj**2 - 2 * rho * ai * aj))
            - _gauss_cos(b[:, None] + b[None, :], c2 * (ai**2 + aj**2 + 2 * rho * ai * aj))
        )
        ss = e_ss - mean_s[:, None] * mean_s[None, :]
        return rho * c2 + 2 * zs.sum() + ss.sum()

    var = cov(1.0) + spec.noise_std**2
    return float(var), float(cov(p))


def label_correlation(spec: TaskSpec, p: float) -> float:
    """Exact Pearson correlation of the two tasks' labels at weight cosine ``p``."""
    var, cov = label_moments(spec, p)
    return cov / var


def _standardization(spec: TaskSpec) -> tuple[float, float]:
    """Exact mean and std of every task's raw label: constants of the spec, never per batch."""
    a = np.asarray(spec.alpha, np.float64)
    b = np.asarray(spec.beta, np.float64)
    mean = float((np.sin(b) * np.exp(-0.5 * a**2 * spec.c**2)).sum())
    var, _ = label_moments(spec, 1.0)
    return mean, math.sqrt(var)
