"""Entry point. Before JAX starts, expose one host device per CPU core so that the engine's
run sharding fills every core (XLA's CPU backend runs one small matmul at about one core's
speed). Set XLA_FLAGS yourself to override; it changes speed, and the numbers only at float
rounding (another number of runs per device may select another matmul kernel)."""

import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cores or 1}"
    ).strip()

from .cli import main  # noqa: E402

sys.exit(main())
