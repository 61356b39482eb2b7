"""Suite-wide settings: one persistent XLA compilation cache for the whole run.

The suite compiles the same programs in several processes: the pytest-xdist workers and
the children that tests start (``bench``, ``jax.distributed``, ``python -m``). A cache in
a temporary folder, made by the first process (the controller, or pytest alone) before
any worker or child starts and handed down through the environment, compiles each once.
A cache hit loads the executable that the same program compiled to, so no number changes.
Set ``JAX_COMPILATION_CACHE_DIR`` yourself to keep a cache across runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_configure(config):
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a worker (inherited) or the user's
        return
    path = tempfile.mkdtemp(prefix="mtl-xla-cache-")
    config._xla_cache = path
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    for k, v in _CACHE.items():
        os.environ.setdefault(k, v)


def pytest_unconfigure(config):
    path = getattr(config, "_xla_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
