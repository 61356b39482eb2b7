"""The paper's experiments and the run profiles, declared as plain data.

An experiment is a set of cells, a cell being one (architecture config, correlation)
pair trained for some number of runs. Run ``i`` of every cell uses the key
``fold_in(key(seed), i)``: the same u vectors, data stream and initialisation seed for
every architecture and correlation (a paired design). So a cell needed by several
experiments is trained once, and the longest request serves the shorter ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from .engine import TrainConfig
from .models import ModelConfig, names

__all__ = ["Profile", "Experiment", "Cell", "PROFILES", "experiments", "get_profile"]

PAPER_CORRS = (0.5, 0.9, 1.0)
PLE_CORRS = (0.2, 0.4, 0.5, 0.75, 1.0)
# 0, 0.1, ..., 1 plus the PLE20 and fig4 levels, so one set of runs serves every figure.
SWEEP_CORRS = tuple(sorted({round(0.1 * i, 2) for i in range(11)} | set(PLE_CORRS)))
# Order in which architectures are listed and plotted (unknown ones follow, by name).
DISPLAY_ORDER = ("single_task", "shared_bottom", "omoe", "mmoe", "cgc", "ple")


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much compute an experiment gets.

    Attributes:
      name: profile name; results go to ``results/<name>/``.
      train: training configuration shared by every run.
      lr: Adam learning rate, or None to select it per cell from
        ``engine.LR_GRID`` by validation loss (the paper's grid search).
      paper_runs: runs per cell of ``fig3`` and ``fig4`` (the paper: 200).
      sweep_runs: runs per cell of ``relatedness``, ``mtl_gain`` and ``gates``.
      chunk: runs per compiled call: the unit of progress, resume and ``--shard``.
      correlations: correlation grid of ``relatedness`` and ``gates``.
      preset: generator preset (see ``python -m datagen describe``).
      seed: root of every run key.
    """

    name: str
    train: TrainConfig
    lr: float | None
    paper_runs: int
    sweep_runs: int
    chunk: int
    correlations: tuple[float, ...] = SWEEP_CORRS
    preset: str = "kdd18"
    seed: int = 0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["correlations"] = list(self.correlations)
        return out


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        train=TrainConfig(steps=40, batch_size=16, eval_every=20, n_test=128),
        lr=3e-3,
        paper_runs=4,
        sweep_runs=2,
        chunk=2,
        correlations=(0.0, 0.2, 0.4, 0.5, 0.75, 0.9, 1.0),
    ),
    "quick": Profile(
        name="quick",
        train=TrainConfig(steps=3_000, batch_size=32, eval_every=500, n_test=1_000),
        lr=3e-3,
        paper_runs=16,
        sweep_runs=8,
        chunk=8,
        correlations=(0.0, 0.2, 0.4, 0.5, 0.75, 0.9, 1.0),
    ),
    "default": Profile(
        name="default",
        train=TrainConfig(steps=10_000, batch_size=32, eval_every=500, n_test=2_000),
        lr=3e-3,
        paper_runs=200,
        sweep_runs=20,
        chunk=20,
    ),
    "paper": Profile(
        name="paper",
        train=TrainConfig(steps=200_000, batch_size=128, eval_every=5_000, n_test=10_000),
        lr=None,
        paper_runs=200,
        sweep_runs=200,
        chunk=100,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile ``name``; a ValueError lists the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (architecture config, correlation) pair of a profile, with its run count."""

    model: ModelConfig
    p: float
    n_runs: int

    def key(self, profile: Profile) -> str:
        """Identity of the cell's runs: everything their numbers depend on, hashed."""
        ident = {
            "model": self.model.name,
            "overrides": [list(kv) for kv in self.model.overrides],
            "p": round(float(self.p), 6),
            "train": profile.train.to_dict(),
            "lr": profile.lr,
            "preset": profile.preset,
            "seed": profile.seed,
        }
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        label = self.model.label().replace("(", "-").replace(")", "").replace(", ", "-")
        label = label.replace("=", "")
        return f"{label}__p{self.p:.2f}__{digest}"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: the cells it needs and the figures it draws.

    Attributes:
      name: experiment name.
      description: one line for listings.
      cells: every (model, correlation, runs) it needs.
    """

    name: str
    description: str
    cells: tuple[Cell, ...]


def ordered(arch_names) -> list[str]:
    """Architecture names in display order."""
    known = [n for n in DISPLAY_ORDER if n in arch_names]
    return known + sorted(n for n in arch_names if n not in DISPLAY_ORDER)


def experiments(profile: Profile) -> dict[str, Experiment]:
    """Every experiment, sized for ``profile``."""

    def grid(models, corrs, n):
        return tuple(Cell(m, float(p), n) for m in models for p in corrs)

    sb16 = ModelConfig.of("shared_bottom", bottom_units=16)
    paper_models = tuple(ModelConfig.of(n) for n in ("shared_bottom", "omoe", "mmoe"))
    every = tuple(ModelConfig.of(n) for n in ordered(names()))
    gain_models = tuple(
        ModelConfig.of(n) for n in ("single_task", "shared_bottom", "mmoe", "cgc", "ple")
    )
    gated = tuple(ModelConfig.of(n) for n in ("omoe", "mmoe"))
    n, s = profile.paper_runs, profile.sweep_runs
    corrs = profile.correlations
    return {
        e.name: e
        for e in (
            Experiment(
                "fig3",
                "KDD18 Fig. 3: Shared-Bottom (bottom 16) at correlations 0.5, 0.9, 1",
                grid((sb16,), PAPER_CORRS, n),
            ),
            Experiment(
                "fig4",
                "KDD18 Fig. 4/5: Shared-Bottom (113), OMoE, MMoE at correlations 0.5, 0.9, 1",
                grid(paper_models, PAPER_CORRS, n),
            ),
            Experiment(
                "relatedness",
                "every registered architecture across the correlation grid (headline figure)",
                grid(every, corrs, s),
            ),
            Experiment(
                "mtl_gain",
                "PLE20: single-task MSE minus multi-task MSE per task, SB/MMoE/CGC/PLE",
                grid(gain_models, PLE_CORRS, s),
            ),
            Experiment(
                "gates",
                "how MMoE's and OMoE's gates use the experts as correlation varies",
                grid(gated, corrs, s),
            ),
        )
    }
