"""Registry of multi-task architectures, looked up by name.

Every module in this package whose name does not start with ``_`` is imported on first
use, and registers its architecture with :func:`register`. Adding an architecture means
adding one file here; nothing else changes.

Every architecture maps ``x`` of shape ``(B, d)`` to ``(preds, gates)``: ``preds`` has shape
``(B, K)``, and ``gates`` has shape ``(B, K, E)`` (each task's weights over the E experts it
can use, summing to 1) for gated models, or is ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .._plugins import import_all

__all__ = ["register", "names", "ordered", "get", "ModelConfig", "Architecture", "param_count"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Attributes:
      name: registry name.
      cls: the Flax module class; its dataclass fields hold the paper defaults.
      description: one line for listings.
      paper: the paper it comes from.
      label: display name in figures and tables (default: ``name``).
      order: position in listings and legends (lower first; ties by name).
      revision: bumped when the module's code changes its numbers at the same sizes (an
        initialisation, a layer); a run spec hashes it when non-zero, so stored results of
        an earlier revision are never reused.
      representation: the name of the direct submodule whose output is the tasks' shared
        representation Z: every shared parameter lies before it, and only task-specific
        ones after it ("" if the architecture has none such). Objectives that work on
        the gradients with respect to Z (``mgda_ub``) need it; a test checks the claim.
    """

    name: str
    cls: type[nn.Module]
    description: str
    paper: str
    label: str = ""
    order: int = 100
    revision: int = 0
    representation: str = ""


_REGISTRY: dict[str, Architecture] = {}


def register(
    name: str,
    *,
    description: str,
    paper: str,
    label: str = "",
    order: int = 100,
    revision: int = 0,
    representation: str = "",
) -> Callable[[type], type]:
    """Class decorator: add a Flax module to the registry under ``name``.

    ``label`` is its display name in figures (default ``name``); ``order`` places it in
    listings and legends (lower first).
    """

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(
            name, cls, description, paper, label or name, order, revision, representation
        )
        return cls

    return deco


def _load_all() -> None:
    import_all(__name__, __path__)


def names() -> list[str]:
    """Every registered architecture name, in display order (``order``, then name)."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n))


def ordered(arch_names) -> list[str]:
    """``arch_names`` in display order; names not in the registry follow, sorted."""
    known = [n for n in names() if n in arch_names]
    return known + sorted(n for n in arch_names if n not in _REGISTRY)


def get(name: str) -> Architecture:
    """The registry entry ``name``; a ValueError lists the known names otherwise."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown architecture {name!r}; known architectures: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]


def _hyper_fields(cls) -> dict[str, dataclasses.Field]:
    return {
        f.name: f for f in dataclasses.fields(cls) if f.name not in ("parent", "name") and f.init
    }


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """An architecture and its size overrides: hashable, so it can key a compiled function.

    Attributes:
      name: registry name.
      overrides: ``((field, value), ...)`` changes to the paper defaults, e.g.
        ``(("bottom_units", 16),)``.
    """

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, **overrides) -> ModelConfig:
        """``ModelConfig.of("shared_bottom", bottom_units=16)``; validated at once. An
        override equal to its default is dropped: the same model has one label and key."""
        fields = _hyper_fields(get(name).cls)
        overrides = {
            k: v for k, v in overrides.items() if k not in fields or v != fields[k].default
        }
        cfg = cls(name, tuple(sorted(overrides.items())))
        cfg.build(2)
        return cfg

    def build(self, n_tasks: int) -> nn.Module:
        """The Flax module for K = ``n_tasks``. Raises ValueError on unknown or bad sizes."""
        arch = get(self.name)
        fields = _hyper_fields(arch.cls)
        kwargs = dict(self.overrides)
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise ValueError(
                f"{self.name} has no size parameter {', '.join(unknown)}; "
                f"it has: {', '.join(k for k in fields if k != 'n_tasks')}"
            )
        kwargs["n_tasks"] = n_tasks
        for key in fields:
            default, value = fields[key].default, kwargs.get(key, fields[key].default)
            is_size = isinstance(default, int) and not isinstance(default, bool)
            if is_size and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{self.name}.{key} must be a positive integer, got {value!r}")
        return arch.cls(**kwargs)

    def sizes(self) -> dict[str, Any]:
        """Every size field of the architecture but ``n_tasks``, its default or override:
        what a run spec hashes, so that a changed default never reuses stored results."""
        fields = _hyper_fields(get(self.name).cls)
        given = dict(self.overrides)
        return {k: given.get(k, f.default) for k, f in fields.items() if k != "n_tasks"}

    def canonical(self) -> dict:
        """What a run spec hashes of the model: its name, every size, and the registry's
        revision where it is not 0."""
        out = {"name": self.name, "sizes": self.sizes()}
        revision = get(self.name).revision
        return out | {"revision": revision} if revision else out

    def label(self) -> str:
        """``name`` or ``name(field=value, ...)``: unique per config, for file names and keys."""
        if not self.overrides:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.overrides) + ")"

    def display(self) -> str:
        """The registry's display label, with any overrides: ``Shared-Bottom (bottom_units=16)``."""
        label = get(self.name).label
        if not self.overrides:
            return label
        return f"{label} (" + ", ".join(f"{k}={v}" for k, v in self.overrides) + ")"


def param_count(model: nn.Module, d: int = 100) -> int:
    """Total number of parameters of ``model`` for inputs of dimension ``d``."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, d), jnp.float32))
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes)))
