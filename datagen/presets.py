"""Named generator presets. In each, alpha and beta are fixed; u, x and the noise are drawn
per run key.

- ``kdd18`` (default): d = 100, c = 1, m = 10, noise std 0.1 (the paper's N(0, 0.01) read as a
  variance), standardised labels, and alpha, beta calibrated so that the label-correlation
  curve matches the paper's Figure 2 (see :mod:`datagen.calibrate`, which re-derives them).
- ``ple20``: the PLE paper's setting (RecSys 2020): d = 512, c = 1, m = 10,
  alpha, beta ~ N(0, 1), drawn once from ``numpy.random.default_rng(2020)``.
- ``google``: alpha_i = i and beta_i = i^2 for i = 1..10, as in a widely copied public
  re-implementation; d = 100, c = 1.
"""

from __future__ import annotations

import numpy as np

from .core import TaskSpec

__all__ = ["PRESETS", "get_preset", "preset_names"]

# Written by `python -m datagen calibrate` (seed 47 of its search, scale 4.8394).
KDD18_ALPHA = (
    -3.2252, 0.4716, -9.1932, -9.3889, -6.8261, -3.8744, -3.5527, -2.2108, -0.9236, -4.2344,
)  # fmt: skip
KDD18_BETA = (
    4.7153, 4.9824, 3.4798, 5.1631, 3.8382, 2.7250, 1.9499, 4.4889, 5.6685, 1.2165,
)  # fmt: skip


def _ple20() -> TaskSpec:
    rng = np.random.default_rng(2020)
    return TaskSpec(
        d=512,
        c=1.0,
        alpha=tuple(np.round(rng.normal(size=10), 4)),
        beta=tuple(np.round(rng.normal(size=10), 4)),
        noise_std=0.1,
        standardize=True,
        name="ple20",
    )


PRESETS: dict[str, TaskSpec] = {
    "kdd18": TaskSpec(
        d=100,
        c=1.0,
        alpha=KDD18_ALPHA,
        beta=KDD18_BETA,
        noise_std=0.1,
        standardize=True,
        name="kdd18",
    ),
    "ple20": _ple20(),
    "google": TaskSpec(
        d=100,
        c=1.0,
        alpha=tuple(float(i) for i in range(1, 11)),
        beta=tuple(float(i * i) for i in range(1, 11)),
        noise_std=0.1,
        standardize=True,
        name="google",
    ),
}


def preset_names() -> list[str]:
    """Names of every preset, default first."""
    return list(PRESETS)


def get_preset(name: str, **overrides) -> TaskSpec:
    """The preset ``name``, with optional field overrides (e.g. ``d=20``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    spec = PRESETS[name]
    return spec.replace(**overrides) if overrides else spec
