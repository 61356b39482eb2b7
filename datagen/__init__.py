"""Task-correlation generator of the MMoE paper (KDD 2018, section 3.2), for K tasks.

Public API::

    spec = get_preset("kdd18")                      # or TaskSpec(d=..., alpha=..., ...)
    w = task_weights(key_w, spec, 0.5)              # (d, K), exact cosines
    r = cluster_cosines(16, 4, p_in=0.9)            # (K, K): 4 clusters of 4 related tasks
    x, y = sample(key_x, spec, n, w)                # (n, d), (n, K)
    x, y = sample_at(key_x, spec, index, w)         # (B, d), (B, K): points by index
    index = draw_indices(key_b, B, n)               # (B,): a batch of a set of n points
"""

from .core import (
    TaskSpec,
    cluster_cosines,
    draw_indices,
    label_correlation,
    label_moments,
    points,
    sample,
    sample_at,
    task_weights,
    validate_correlation,
)
from .presets import PRESETS, get_preset, preset_names

__all__ = [
    "TaskSpec",
    "cluster_cosines",
    "PRESETS",
    "get_preset",
    "preset_names",
    "task_weights",
    "sample",
    "sample_at",
    "points",
    "draw_indices",
    "label_correlation",
    "label_moments",
    "validate_correlation",
]
