"""Run specs: everything a run's numbers depend on, frozen and hashed.

A :class:`RunSpec` names the architecture and its sizes, the generator's *constants* (not
a preset name), the task-weight cosines (``p``, or a ``(K, K)`` matrix ``R``), the training
config, the learning rate or the rule that selects it, the training objective, the root
seed, and the engine's numerics version. Run ``i`` of a spec trains on the key
``fold_in(key(seed), i)`` (:func:`benchmark.engine.run_keys`), so a spec plus a run count
is a cell of results, and :meth:`RunSpec.key` is its cache key: changing any constant gives
a new key and trains anew; identical specs never train twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np

from datagen import TaskSpec, validate_correlation

from . import engine, objectives
from .engine import LR_GRID, TrainConfig
from .models import ModelConfig

__all__ = ["LRSelect", "RunSpec", "task_constants"]


@dataclasses.dataclass(frozen=True)
class LRSelect:
    """The rule that picks a cell's learning rate: the lowest mean validation loss over
    ``grid`` (KDD18 section 5.1), from ``n_runs`` runs per grid value on a key stream
    (``seed``) disjoint from the reported runs (see :func:`benchmark.engine.select_lr`).
    """

    grid: tuple[float, ...] = LR_GRID
    n_runs: int = 4
    seed: int = 10_007

    def __post_init__(self):
        object.__setattr__(self, "grid", tuple(float(v) for v in self.grid))
        if not self.grid or not all(math.isfinite(v) and v > 0 for v in self.grid):
            raise ValueError(f"LRSelect.grid must be learning rates > 0, got {self.grid}")
        if not isinstance(self.n_runs, int) or self.n_runs < 1:
            raise ValueError(f"LRSelect.n_runs must be a positive integer, got {self.n_runs!r}")


def task_constants(task: TaskSpec) -> dict:
    """The generator constants a run depends on: every TaskSpec field but its ``name``."""
    out = dataclasses.asdict(task)
    out.pop("name")
    out["alpha"], out["beta"] = list(task.alpha), list(task.beta)
    return out


def _canonical_corr(corr) -> float | tuple[tuple[float, ...], ...]:
    arr = np.asarray(corr, dtype=np.float64)
    if arr.ndim == 0:
        return round(float(arr), 6)
    return tuple(tuple(round(float(v), 6) for v in row) for row in arr)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything the numbers of a run depend on, besides its index.

    Attributes:
      model: architecture and its sizes.
      task: generator constants (its ``name`` is a label only and is not hashed).
      corr: task-weight cosine ``p`` (every pair of tasks), or a ``(K, K)`` cosine matrix
        as a tuple of rows.
      train: training configuration (steps, batch, evaluation, K = ``train.n_tasks``).
      lr: the Adam learning rate, or the :class:`LRSelect` rule that picks it.
      objective: a registered training objective (:mod:`benchmark.objectives`): its name
        (the paper defaults) or an instance, ``objectives.get("gradnorm", alpha=0.5)``;
        its name and every hyper-parameter are hashed.
      seed: root of the run keys; run ``i`` uses ``fold_in(key(seed), i)``.
      numerics: the engine's ``NUMERICS_VERSION`` (bumped by any change of numbers); None
        (the default) takes the engine's current version.
    """

    model: ModelConfig
    task: TaskSpec
    corr: Any
    train: TrainConfig
    lr: float | LRSelect
    objective: str | objectives.Objective = "equal"
    seed: int = 0
    numerics: int | None = None

    def __post_init__(self):
        if self.numerics is None:
            object.__setattr__(self, "numerics", engine.NUMERICS_VERSION)
        object.__setattr__(self, "corr", _canonical_corr(self.corr))
        validate_correlation(
            np.asarray(self.corr), n_tasks=self.train.n_tasks, d=self.task.d
        )  # raises ValueError naming the correlation and its range
        if not isinstance(self.lr, LRSelect):
            lr = float(self.lr)
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"learning rate lr must be a finite number > 0, got {self.lr!r}")
            object.__setattr__(self, "lr", lr)
        if isinstance(self.objective, str) and self.objective not in objectives.names():
            raise ValueError(
                f"objective must be one of: {', '.join(objectives.names())}; got {self.objective!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        engine.check(self.model, self.train, self.objective)  # the sizes, the objective

    @property
    def objective_name(self) -> str:
        return objectives.resolve(self.objective).name

    @property
    def objective_label(self) -> str:
        """The objective's name, and its hyper-parameters where not the paper defaults."""
        return objectives.resolve(self.objective).label()

    def objective_hyper(self) -> dict:
        """The objective's hyper-parameters: its paper defaults, or the instance's."""
        return objectives.resolve(self.objective).hyper()

    @property
    def n_tasks(self) -> int:
        return self.train.n_tasks

    @property
    def is_matrix(self) -> bool:
        return isinstance(self.corr, tuple)

    def corr_array(self) -> np.ndarray:
        """The cosine as the engine takes it: a scalar, or a ``(K, K)`` float32 matrix."""
        return np.asarray(self.corr, np.float32)

    def canonical(self) -> dict:
        """A JSON-able dict of every field that the numbers depend on (the hashed content)."""
        lr = (
            {"select": dataclasses.asdict(self.lr) | {"grid": list(self.lr.grid)}}
            if isinstance(self.lr, LRSelect)
            else self.lr
        )
        corr = [list(r) for r in self.corr] if self.is_matrix else self.corr
        return {
            "model": self.model.canonical(),
            "task": task_constants(self.task),
            "corr": corr,
            "train": self.train.to_dict(),
            "lr": lr,
            "objective": {"name": self.objective_name, "hyper": self.objective_hyper()},
            "seed": self.seed,
            "numerics": self.numerics,
        }

    def key(self) -> str:
        """Cache key: ``<model label>__<sha256 of canonical() , 16 hex>``; file-name safe."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        label = self.model.label()
        for a, b in (("(", "-"), (")", ""), (", ", "-"), ("=", "")):
            label = label.replace(a, b)
        return f"{label}__{digest}"
