"""Retrain the first chunk of stored cells and compare it with the stored runs, bit for bit.

    python tools/retrain_check.py KEY [KEY ...] [--profile default] [--results DIR] [--save DIR]

A refactor of the engine must change no stored number: this retrains runs ``0 ..
chunk - 1`` of each cell (found by its key among the cells of every registered experiment
under ``--profile``), as ``run`` trains them (every host device, the default run group),
and prints, per array, whether it is identical to the stored cell's first runs. The exit
status is 1 if any array differs. Run it on the machine kind that trained the cells: XLA
may pick other kernels on another CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmark._host import xla_flags

if (flags := xla_flags()) is not None:  # as `python -m benchmark` trains
    os.environ["XLA_FLAGS"] = flags

import numpy as np  # noqa: E402

from benchmark import experiments  # noqa: E402
from benchmark.protocol import get_profile  # noqa: E402
from benchmark.runner import Chunk, _cell_path, _train_chunks, read_npz  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keys", nargs="+", help="cell keys (file names in <results>/cells/)")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--results", default=None, help="default: results/<profile>")
    ap.add_argument("--save", default=None, help="folder to write the retrained arrays to")
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)
    root = Path(args.results or f"results/{profile.name}")
    specs = {
        c.key(): c.spec for n in experiments.names() for c in experiments.get(n).cells(profile)
    }
    same = True
    for key in args.keys:
        key = key.removesuffix(".npz")
        if key not in specs:
            print(f"{key}: no experiment of profile {profile.name} has this cell")
            return 2
        stored, _ = read_npz(_cell_path(root, key), key)
        chunk = Chunk(specs[key], 0, min(profile.chunk, len(stored["final"])))
        with tempfile.TemporaryDirectory() as tmp:
            wall = _train_chunks([chunk], Path(tmp))
            new, _ = read_npz(chunk.path(Path(tmp)), key)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.save) / f"{key}.npz", **new)
        # arrays the engine added since (a validation set's) are absent from older cells
        common = [k for k in new if k in stored]
        first = {k: stored[k][: chunk.size] for k in common}
        diff = [k for k in common if not np.array_equal(new[k], first[k], equal_nan=True)]
        same &= not diff
        verdict = "identical" if not diff else f"DIFFERS in {', '.join(diff)}"
        print(f"{key} ({specs[key].objective_label}, runs 0-{chunk.size - 1}, {wall:.0f} s): "
              f"{len(common)} arrays {verdict}", flush=True)  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
