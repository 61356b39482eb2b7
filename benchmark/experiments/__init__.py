"""The registry of experiments, looked up by name; every other file here is a plugin.

An experiment is one file in this package that calls :func:`register` with an
:class:`~benchmark.protocol.Experiment`: its cells (what to train, sized by a
:class:`~benchmark.protocol.Profile`), its figures and its claims. ``run all``,
``summary.json``, ``figures`` and ``report`` all derive from this registry, so adding an
experiment means adding one file. The vocabulary (profiles, cells, claims) lives in
:mod:`benchmark.protocol`, below the runner; this package sits above the runner, the
statistics, the report and the plots, since each plugin draws its figures and tests its
claims.
"""

from __future__ import annotations

from .._plugins import import_all
from ..protocol import Experiment

__all__ = ["register", "get", "names", "ORDER"]

_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (once per name); returns it."""
    known = _REGISTRY.get(experiment.name)
    if known is not None and known is not experiment:
        raise ValueError(f"experiment {experiment.name!r} is registered twice")
    _REGISTRY[experiment.name] = experiment
    return experiment


def _load_all() -> None:
    import_all(__name__, __path__)


# The order of ``run all``, of the summary and of the report; later files follow by name.
ORDER = ("fig3", "fig4", "relatedness", "mtl_gain", "gates")


def names(only_all: bool = False) -> list[str]:
    """Registered experiment names (those of ``run all`` only, if ``only_all``)."""
    _load_all()
    every = [n for n in ORDER if n in _REGISTRY]
    every += sorted(n for n in _REGISTRY if n not in ORDER)
    return [n for n in every if _REGISTRY[n].in_all or not only_all]


def get(name: str) -> Experiment:
    """The experiment ``name``; a ValueError lists the known ones otherwise."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name}; known experiments: {', '.join(names())}")
    return _REGISTRY[name]
