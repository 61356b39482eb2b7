"""What the command line sets before JAX starts: one XLA host device per CPU core, on a CPU
only. Imports no JAX (it must run before JAX reads ``XLA_FLAGS``)."""

from __future__ import annotations

import importlib.util
import os

FLAG = "xla_force_host_platform_device_count"
# Modules that an accelerator's JAX plugin installs: JAX then defaults to that accelerator.
ACCELERATOR_MODULES = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")


def accelerator_expected(environ=os.environ) -> bool:
    """Whether JAX will run on an accelerator: ``JAX_PLATFORMS`` names one first, or (when
    it is unset) an accelerator plugin is installed."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    return any(importlib.util.find_spec(m) is not None for m in ACCELERATOR_MODULES)


def cores() -> int:
    """The CPU cores this process may use."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n or 1


def xla_flags(environ=os.environ, accelerator: bool | None = None) -> str | None:
    """``XLA_FLAGS`` with one host device per core, or None to leave it as it is: when the
    user set the device count, or when JAX will run on an accelerator (the engine shards
    over its devices; host devices would only be idle)."""
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return None
    if accelerator_expected(environ) if accelerator is None else accelerator:
        return None
    return f"{flags} --{FLAG}={cores()}".strip()
