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
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["register", "names", "get", "ModelConfig", "Architecture", "param_count"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Attributes:
      name: registry name.
      cls: the Flax module class; its dataclass fields hold the paper defaults.
      description: one line for listings.
      paper: the paper it comes from.
    """

    name: str
    cls: type[nn.Module]
    description: str
    paper: str


_REGISTRY: dict[str, Architecture] = {}
_LOADED = False


def register(name: str, *, description: str, paper: str) -> Callable[[type], type]:
    """Class decorator: add a Flax module to the registry under ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name, cls, description, paper)
        return cls

    return deco


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def names() -> list[str]:
    """Every registered architecture name, in file order."""
    _load_all()
    return list(_REGISTRY)


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
        """``ModelConfig.of("shared_bottom", bottom_units=16)``; validated at once."""
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

    def label(self) -> str:
        """``name`` or ``name(field=value, ...)``."""
        if not self.overrides:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.overrides) + ")"


def param_count(model: nn.Module, d: int = 100) -> int:
    """Total number of parameters of ``model`` for inputs of dimension ``d``."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, d), jnp.float32))
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes)))
