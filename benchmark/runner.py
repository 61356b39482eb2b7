"""Run experiments into a results folder, with progress, resume, shards and merging.

Layout of ``results/<profile>/``::

    config.json                        the profile, every cell's identity; a rerun with a
                                       different profile config is refused
    chunks/<cell>/<start>.npz          raw arrays of runs start .. start + chunk - 1
    <experiment>/<cell>.npz            the experiment's runs of each cell (assembled)
    <experiment>/manifest.json         config, versions, git commit, hardware, timings
    summary.json                       one record per (experiment, model, p, task)

Every write goes to a temporary file first and is renamed into place, so an interrupted
run leaves either a whole file or none; a rerun skips every chunk already on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .experiments import Cell, Experiment, Profile, experiments

__all__ = [
    "ResultsError",
    "run",
    "load_cell",
    "load_experiment",
    "merge",
    "parse_shard",
    "plan",
]

ARRAY_KEYS = (
    "curves",
    "final",
    "diverged",
    "gate_mean",
    "gate_entropy",
    "gate_polarization",
    "expert_utilization",
)


class ResultsError(ValueError):
    """A results folder that is corrupt, incomplete or made with another config."""


# ----------------------------------------------------------------------------- file I/O


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def write_npz(path: Path, arrays: dict, meta: dict) -> None:
    """Write arrays plus a JSON ``meta`` string to ``path`` atomically."""

    def write(f):
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    _atomic_write(path, write)


def read_npz(path: Path, expect_meta: dict | None = None) -> tuple[dict, dict]:
    """Load an ``.npz`` written by :func:`write_npz` (``allow_pickle=False``).

    Raises ResultsError, naming the file and how to proceed, if it is unreadable, lacks an
    array, or its ``meta`` disagrees with ``expect_meta``.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        missing = [k for k in ARRAY_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"missing arrays {missing}")
    except Exception as e:  # any decoding problem is a corrupt file for the user
        raise ResultsError(
            f"corrupt results file {path} ({type(e).__name__}: {e}); delete it and rerun "
            "`python -m benchmark run` to recompute that piece"
        ) from None
    if expect_meta is not None:
        for key, value in expect_meta.items():
            if meta.get(key) != value:
                raise ResultsError(
                    f"results file {path} does not match this config ({key}: stored "
                    f"{meta.get(key)!r}, expected {value!r}); delete it and rerun"
                )
    return arrays, meta


# ----------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Runs ``start .. start + size - 1`` of one cell: the unit of work and of resume."""

    cell: Cell
    start: int
    size: int

    def path(self, root: Path, profile: Profile) -> Path:
        return root / "chunks" / self.cell.key(profile) / f"{self.start:06d}.npz"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard i/n needs n >= 1 and 0 <= i < n, got {text!r}")
    return i, n


def plan(profile: Profile, names: list[str]) -> tuple[dict[str, Experiment], list[Chunk]]:
    """The experiments asked for and every chunk they need, each chunk once."""
    every = experiments(profile)
    unknown = [n for n in names if n not in every]
    if unknown:
        raise ValueError(
            f"unknown experiment {', '.join(unknown)}; known experiments: {', '.join(every)}"
        )
    chosen = {n: every[n] for n in names}
    longest: dict[tuple, Cell] = {}
    for exp in chosen.values():
        for cell in exp.cells:
            ident = (cell.model, cell.p)
            if ident not in longest or cell.n_runs > longest[ident].n_runs:
                longest[ident] = cell
    chunks = []
    for cell in longest.values():
        for start in range(0, cell.n_runs, profile.chunk):
            chunks.append(Chunk(cell, start, profile.chunk))
    # Group by architecture so each compiled trainer is reused across correlations.
    chunks.sort(key=lambda c: (c.cell.model.label(), c.start, c.cell.p))
    return chosen, chunks


def _config_record(profile: Profile) -> dict:
    return {"profile": profile.to_dict()}


def check_config(root: Path, profile: Profile) -> None:
    """Refuse a results folder made with another profile config; create it otherwise."""
    path = root / "config.json"
    want = _config_record(profile)
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ResultsError(
                f"corrupt config file {path}: {e}; delete it to start over"
            ) from None
        if have != want:
            diff = sorted(
                k
                for k in set(have.get("profile", {})) | set(want["profile"])
                if have.get("profile", {}).get(k) != want["profile"].get(k)
            )
            raise ResultsError(
                f"{root} holds results of a different '{profile.name}' config (differs in: "
                f"{', '.join(diff) or 'format'}). Results are never mixed: use --out with a "
                f"new folder, or delete {root} to recompute"
            )
    else:
        write_json(path, want)


# ----------------------------------------------------------------------------- running


def _lr_for(cell: Cell, profile: Profile, root: Path, spec) -> float:
    if profile.lr is not None:
        return profile.lr
    from .engine import select_lr

    path = root / "lr" / f"{cell.key(profile)}.json"
    if path.exists():
        return float(json.loads(path.read_text())["lr"])
    best, scores = select_lr(cell.p, model=cell.model, spec=spec, cfg=profile.train)
    write_json(path, {"lr": best, "scores": {str(k): v for k, v in scores.items()}})
    return best


def _train_chunk(chunk: Chunk, profile: Profile, root: Path, spec) -> float:
    from .engine import run_keys, train_many

    lr = _lr_for(chunk.cell, profile, root, spec)
    keys = run_keys(profile.seed, chunk.size, chunk.start)
    out = train_many(keys, chunk.cell.p, lr, model=chunk.cell.model, spec=spec, cfg=profile.train)
    wall = float(out.pop("wall_s"))
    meta = {
        "cell": chunk.cell.key(profile),
        "model": chunk.cell.model.name,
        "model_label": chunk.cell.model.label(),
        "p": chunk.cell.p,
        "start": chunk.start,
        "size": chunk.size,
        "lr": lr,
        "wall_s": wall,
    }
    write_npz(chunk.path(root, profile), out, meta)
    return wall


def run(
    profile: Profile,
    names: list[str],
    root: Path,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict:
    """Train every missing chunk of ``names`` (this shard's share), then assemble.

    Returns a dict with ``trained`` and ``skipped`` chunk counts and ``assembled``
    experiment names (an experiment is assembled once all its chunks exist).
    """
    from datagen import get_preset

    chosen, chunks = plan(profile, names)
    root.mkdir(parents=True, exist_ok=True)
    check_config(root, profile)
    i, n = shard
    mine = [c for k, c in enumerate(chunks) if k % n == i]
    todo = [c for c in mine if not c.path(root, profile).exists()]
    skipped = len(mine) - len(todo)
    spec = get_preset(profile.preset)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(c.size for c in todo), unit="run", desc=f"{profile.name}")
        if skipped:
            bar.write(f"resuming: {skipped} finished chunks skipped")
    t0 = time.perf_counter()
    train_s = 0.0
    for c in todo:
        if bar is not None:
            bar.set_postfix_str(f"{c.cell.model.label()} p={c.cell.p:.2f}")
        train_s += _train_chunk(c, profile, root, spec)
        if bar is not None:
            bar.update(c.size)
    if bar is not None:
        bar.close()
    assembled = assemble(profile, chosen, root, wall_s=time.perf_counter() - t0)
    return {"trained": len(todo), "skipped": skipped, "assembled": assembled, "train_s": train_s}


# ----------------------------------------------------------------------------- assembling


def _versions() -> dict:
    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _hardware() -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "process": f"{jax.process_index()}/{jax.process_count()}",
    }


def _cell_arrays(cell: Cell, profile: Profile, root: Path) -> tuple[dict, float]:
    """Concatenate the chunks of ``cell`` and keep its first ``n_runs`` runs."""
    parts, wall = [], 0.0
    for start in range(0, cell.n_runs, profile.chunk):
        chunk = Chunk(cell, start, profile.chunk)
        arrays, meta = read_npz(
            chunk.path(root, profile), {"cell": cell.key(profile), "start": start}
        )
        parts.append(arrays)
        wall += meta["wall_s"] * min(1.0, (cell.n_runs - start) / profile.chunk)
    arrays = {k: np.concatenate([p[k] for p in parts])[: cell.n_runs] for k in ARRAY_KEYS}
    return arrays, wall


def assemble(profile: Profile, chosen: dict[str, Experiment], root: Path, wall_s: float) -> list:
    """Write each complete experiment's per-cell arrays and manifest; return their names."""
    done = []
    for exp in chosen.values():
        if not all(
            Chunk(c, s, profile.chunk).path(root, profile).exists()
            for c in exp.cells
            for s in range(0, c.n_runs, profile.chunk)
        ):
            continue
        cells, run_s = [], 0.0
        for cell in exp.cells:
            arrays, wall = _cell_arrays(cell, profile, root)
            run_s += wall
            meta = {
                "experiment": exp.name,
                "cell": cell.key(profile),
                "model": cell.model.name,
                "model_label": cell.model.label(),
                "overrides": dict(cell.model.overrides),
                "p": cell.p,
                "n_runs": cell.n_runs,
            }
            fname = f"{cell.key(profile)}.npz"
            write_npz(root / exp.name / fname, arrays, meta)
            cells.append({**meta, "file": fname, "train_wall_s": wall})
        manifest = {
            "experiment": exp.name,
            "description": exp.description,
            "profile": profile.to_dict(),
            "eval_steps": profile.train.eval_steps().tolist(),
            "cells": cells,
            "versions": _versions(),
            "git_commit": _git_commit(),
            "hardware": _hardware(),
            "timings": {"train_wall_s_of_its_runs": run_s, "this_invocation_s": wall_s},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(root / exp.name / "manifest.json", manifest)
        done.append(exp.name)
    return done


# ----------------------------------------------------------------------------- loading


def load_experiment(root: Path, name: str) -> tuple[dict, list[tuple[dict, dict]]]:
    """``(manifest, [(cell_meta, arrays), ...])`` of an assembled experiment."""
    path = root / name / "manifest.json"
    if not path.exists():
        raise ResultsError(
            f"no results for experiment '{name}' in {root}; run `python -m benchmark run {name}`"
        )
    try:
        manifest = json.loads(path.read_text())
        cells = manifest["cells"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ResultsError(f"corrupt manifest {path}: {e}; delete it and rerun") from None
    out = []
    for cell in cells:
        arrays, meta = read_npz(root / name / cell["file"], {"cell": cell["cell"]})
        if arrays["final"].shape[0] != cell["n_runs"]:
            raise ResultsError(
                f"results file {root / name / cell['file']} holds {arrays['final'].shape[0]} "
                f"runs, its manifest says {cell['n_runs']}; delete it and rerun"
            )
        out.append((meta, arrays))
    return manifest, out


def load_cell(root: Path, name: str, model: str, p: float) -> tuple[dict, dict]:
    """One cell of an assembled experiment by registry name and correlation."""
    _, cells = load_experiment(root, name)
    for meta, arrays in cells:
        if meta["model"] == model and abs(meta["p"] - p) < 1e-9:
            return meta, arrays
    raise ResultsError(f"experiment '{name}' in {root} has no cell {model} at p={p}")


def merge(sources: list[Path], dest: Path, profile: Profile, names: list[str]) -> dict:
    """Combine the chunks of shard folders into ``dest`` and assemble what is complete."""
    dest.mkdir(parents=True, exist_ok=True)
    check_config(dest, profile)
    copied = 0
    for src in sources:
        if not (src / "config.json").exists():
            raise ResultsError(f"{src} is not a results folder (no config.json)")
        check_config(src, profile)
        for f in sorted((src / "chunks").glob("*/*.npz")):
            read_npz(f)  # refuse corrupt pieces before copying
            target = dest / "chunks" / f.parent.name / f.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                copied += 1
    chosen, _ = plan(profile, names)
    return {"copied": copied, "assembled": assemble(profile, chosen, dest, wall_s=0.0)}
