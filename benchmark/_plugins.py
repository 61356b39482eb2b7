"""Plugin discovery shared by the registries (architectures, objectives, experiments).

Each registry is a package whose files register themselves when imported; a file whose
name starts with ``_`` is a helper and is not imported.
"""

from __future__ import annotations

import importlib
import pkgutil

_DONE: set[str] = set()


def import_all(package: str, path) -> None:
    """Import every module of ``package`` (its ``__path__`` is ``path``) once."""
    if package in _DONE:
        return
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    _DONE.add(package)
