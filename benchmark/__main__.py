"""Entry point. Before JAX starts, on a CPU, expose one host device per CPU core so that the
engine's run sharding fills every core (XLA's CPU backend runs one small matmul at about one
core's speed); on an accelerator, leave XLA_FLAGS alone (:mod:`benchmark._host`). Set
XLA_FLAGS yourself to override; it changes speed, and the numbers only at float rounding
(another number of runs per device may select another matmul kernel)."""

import os
import sys

from ._host import xla_flags

if (flags := xla_flags()) is not None:
    os.environ["XLA_FLAGS"] = flags

from .cli import main  # noqa: E402

sys.exit(main())
