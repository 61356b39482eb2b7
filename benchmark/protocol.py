"""The vocabulary of experiments: profiles, cells, claims, verdicts and experiments.

A :class:`Profile` sizes the experiments (steps, batch, runs per cell). An
:class:`Experiment` names its cells (what to train), its figures and its :class:`Claim` s.
A cell is a :class:`~benchmark.spec.RunSpec` trained for some number of runs. Run ``i`` of
every cell uses the key ``fold_in(key(seed), i)``: the same task weights, data stream and
initialisation seed for every architecture and correlation (a paired design). A cell that
several experiments need has one spec, so it trains once, and the longest request serves
the shorter ones.

Layering: above the run spec, below the runner, the report and the experiment files
(``benchmark/experiments/``), which register themselves in that package's registry.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from datagen import TaskSpec, get_preset

from .engine import Schedule, TrainConfig
from .models import ModelConfig
from .spec import LRSelect, RunSpec

__all__ = [
    "Profile",
    "Cell",
    "Claim",
    "Verdict",
    "Experiment",
    "PROFILES",
    "get_profile",
    "grid",
    "PAPER_CORRS",
    "PLE_CORRS",
    "SWEEP_CORRS",
    "REGIME_PROFILES",
    "regime",
]

PAPER_CORRS = (0.5, 0.9, 1.0)
PLE_CORRS = (0.2, 0.4, 0.5, 0.75, 1.0)
# 0, 0.1, ..., 1 plus the PLE20 and fig4 levels, so one set of runs serves every figure.
SWEEP_CORRS = tuple(sorted({round(0.1 * i, 2) for i in range(11)} | set(PLE_CORRS)))


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much compute the experiments get.

    Attributes:
      name: profile name; results go to ``results/<name>/``.
      train: training configuration shared by every run.
      lr: Adam learning rate, or the :class:`~benchmark.spec.LRSelect` rule that picks it
        per cell by validation loss (the paper's grid search).
      paper_runs: runs per cell of ``fig3`` and ``fig4`` (the paper: 200).
      sweep_runs: runs per cell of the sweeps (``relatedness``, ``mtl_gain``, ``gates``).
      chunk: runs per compiled call: the unit of progress, resume and ``--shard``.
      correlations: correlation grid of the sweeps.
      preset: generator preset (``python -m datagen describe``); its constants, not its
        name, enter every run spec.
      seed: root of every run key.
    """

    name: str
    train: TrainConfig
    lr: float | LRSelect
    paper_runs: int
    sweep_runs: int
    chunk: int
    correlations: tuple[float, ...] = SWEEP_CORRS
    preset: str = "kdd18"
    seed: int = 0

    @property
    def task(self) -> TaskSpec:
        """The generator constants of the profile's preset."""
        return get_preset(self.preset)

    def spec(self, model: ModelConfig, corr, **train_changes) -> RunSpec:
        """The run spec of ``model`` at cosine ``corr`` (``p`` or a ``(K, K)`` matrix)."""
        train = dataclasses.replace(self.train, **train_changes) if train_changes else self.train
        return RunSpec(
            model=model, task=self.task, corr=corr, train=train, lr=self.lr, seed=self.seed
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["correlations"] = list(self.correlations)
        if isinstance(self.lr, LRSelect):
            out["lr"] = {"select": dataclasses.asdict(self.lr)}
        return out


LATE_TRAIN = TrainConfig(
    steps=160_000,
    batch_size=32,
    eval_every=2_000,
    n_test=2_000,
    schedule=Schedule("wsd", decay=0.2),
)

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
    # The late-phase protocol, chosen by the budget rule (docs/protocol.md): batch 32,
    # warmup-stable-decay over the last 20%, 160k steps (40k fails the rule's first
    # condition, 80k its second; 160k passes both against 320k). Its learning rate is the
    # one `run lr_grid --profile late` chooses by the fair rule at these steps.
    "default": Profile(
        name="default",
        train=LATE_TRAIN,
        lr=1e-3,
        paper_runs=200,
        sweep_runs=20,
        chunk=20,
    ),
    # The same protocol under its own name: the home of the studies that chose it
    # (`budget`, `lr_grid`), whose results live in results/late/.
    "late": Profile(
        name="late",
        train=LATE_TRAIN,
        lr=1e-3,
        paper_runs=200,
        sweep_runs=20,
        chunk=20,
    ),
    # The default protocol on a fixed training set of 10^5 points per task, with a
    # validation set: the KDD18 figures in a finite regime, at the size chosen by the rule
    # of docs/protocol.md ("Training-set size"): `run fig3 fig4 --profile n1e5`.
    "n1e5": Profile(
        name="n1e5",
        train=dataclasses.replace(LATE_TRAIN, n_train=100_000, n_val=2_000),
        lr=1e-3,
        paper_runs=200,
        sweep_runs=20,
        chunk=20,
    ),
    "paper": Profile(
        name="paper",
        train=TrainConfig(steps=200_000, batch_size=128, eval_every=5_000, n_test=10_000),
        lr=LRSelect(),
        paper_runs=200,
        sweep_runs=200,
        chunk=100,
    ),
}


# The data regimes the KDD18 claims are decided in: the default profile (the stream) and
# the same protocol on fixed training sets (docs/protocol.md, "Training-set size").
REGIME_PROFILES = ("default", "n1e5")


def regime(profile: Profile | dict) -> str:
    """The data regime of a profile (or of its ``to_dict``): ``"stream"`` or ``"1e+05
    points"``: the training-set size per task."""
    train = profile["train"] if isinstance(profile, dict) else dataclasses.asdict(profile.train)
    n = train.get("n_train")
    return "stream" if n is None else f"{n:.0e} points".replace("e+0", "e")


def get_profile(name: str) -> Profile:
    """The profile ``name``; a ValueError lists the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} for --profile; choose one of: {', '.join(PROFILES)}"
        )
    return PROFILES[name]


@dataclasses.dataclass(frozen=True)
class Cell:
    """A run spec trained for ``n_runs`` runs, as one experiment uses it.

    Attributes:
      spec: everything the runs' numbers depend on.
      n_runs: how many runs (``0 .. n_runs - 1``) the experiment uses.
      x: the cell's position on the experiment's x axis (default: the cosine ``p``).
      series: the line or group the cell belongs to in figures and tables (default: the
        architecture's display label with its overrides).
    """

    spec: RunSpec
    n_runs: int
    x: float | None = None
    series: str = ""

    def __post_init__(self):
        if self.x is None:
            if self.spec.is_matrix:
                raise ValueError("a cell with a cosine matrix needs an explicit x")
            object.__setattr__(self, "x", float(self.spec.corr))
        if not self.series:
            object.__setattr__(self, "series", self.spec.model.display())
        if not isinstance(self.n_runs, int) or self.n_runs < 1:
            raise ValueError(f"n_runs must be a positive integer, got {self.n_runs!r}")

    def key(self) -> str:
        """The cell's cache key: its run spec's (:meth:`~benchmark.spec.RunSpec.key`)."""
        return self.spec.key()

    @property
    def model(self) -> ModelConfig:
        return self.spec.model


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A claim's outcome on stored results.

    Attributes:
      holds: True or False; None if the stored results cannot decide it.
      evidence: the numbers behind it, with their intervals, in one line.
    """

    holds: bool | None
    evidence: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of a paper's claims, tested on an experiment's stored results.

    Attributes:
      name: short identifier, ``<experiment>.<what>``.
      source: where the paper says it, e.g. ``"KDD18 Fig. 4"``.
      words: the claim, in the paper's words (or a close paraphrase).
      rule: how the verdict is decided, stated before looking at results.
      test: ``test(results) -> Verdict`` on a :class:`benchmark.runner.Results`.
    """

    name: str
    source: str
    words: str
    rule: str
    test: Callable[[Any], Verdict]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: its name on the command line and its results folder.
      description: one line for listings.
      cells: ``cells(profile) -> tuple[Cell, ...]``: what it trains.
      figures: functions ``draw(results, out_dir, caption) -> list[Path]`` that draw its
        figures (PNG, each with a CSV of the numbers behind it).
      claims: the papers' claims it tests.
      in_all: part of ``run all`` (and so of ``make reproduce``).
      extra: ``extra(profile, model) -> tuple[Cell, ...]``: the cells of an architecture
        that ``cells`` leaves out, trained on request (``run NAME --models ARCH``) and
        taken into the experiment once all of them are stored; None: ``cells`` is all.
      tables: functions ``table(results) -> str`` that write a markdown table from its
        stored cells, all of them or some (an experiment still training). A document
        names one in a generated block, ``<!-- generated: EXPERIMENT.FUNCTION -->``, and
        ``report --readme`` rewrites it there (docs/store.md).
    """

    name: str
    description: str
    cells: Callable[[Profile], tuple[Cell, ...]]
    figures: tuple[Callable, ...] = ()
    claims: tuple[Claim, ...] = ()
    in_all: bool = True
    extra: Callable[[Profile, ModelConfig], tuple[Cell, ...]] | None = None
    tables: tuple[Callable[[Any], str], ...] = ()

    def __post_init__(self):
        names = [getattr(f, "__name__", "") for f in self.tables]
        if len(set(names)) < len(names) or not all(
            re.fullmatch(r"[a-z0-9_]+", n) and n != "claims" for n in names
        ):
            raise ValueError(
                f"experiment {self.name}: tables= needs functions with distinct names of "
                f"[a-z0-9_] other than 'claims' (a document names them so), got {names}"
            )

    def extra_cells(self, profile: Profile, models) -> tuple[Cell, ...]:
        """The :attr:`extra` cells of the architectures ``models`` (registry names) that
        :attr:`cells` leaves out."""
        if self.extra is None:
            return ()
        have = {c.model.name for c in self.cells(profile)}
        return tuple(
            c for m in dict.fromkeys(models) if m not in have
            for c in self.extra(profile, ModelConfig.of(m))
        )  # fmt: skip

    def every_cell(self, profile: Profile) -> tuple[Cell, ...]:
        """Its cells and the :attr:`extra` cells of every registered architecture."""
        from .models import names

        return self.cells(profile) + self.extra_cells(profile, names())


def grid(profile: Profile, models, corrs, n_runs: int) -> tuple[Cell, ...]:
    """Every (model, correlation) cell of ``profile``, ``n_runs`` runs each."""
    return tuple(Cell(profile.spec(m, float(p)), n_runs) for m in models for p in corrs)
