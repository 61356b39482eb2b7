"""Train cells into a results folder, with progress, resume, shards and merging.

Layout of ``results/<profile>/``::

    cells/<key>.npz                  runs 0 .. n-1 of one run spec (committed for default)
    chunks/<key>/<start>.npz         a training piece: runs start .. start + chunk - 1
    lr/<key>.json                    a selected learning rate, when the spec has a rule
    <experiment>/manifest.json       the experiment's cells (keys, series, x, runs), profile,
                                     versions, git commit, hardware, timings
    summary.json                     one record per (experiment, series, x, task)

``<key>`` is :meth:`benchmark.spec.RunSpec.key`, a hash of everything the runs' numbers
depend on: a stored cell is reused only by an identical spec, and a cell file with fewer
runs than asked for is extended, never retrained. Every file and piece records its spec,
the git commit and the package versions. Every write goes to a temporary file first and
is renamed into place, so an interruption leaves whole files only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .protocol import Cell, Experiment, Profile
from .spec import LRSelect, RunSpec

__all__ = [
    "ResultsError",
    "Interrupted",
    "Results",
    "CellResult",
    "Plan",
    "plan",
    "run",
    "load_experiment",
    "load_stored_cells",
    "merge",
    "parse_shard",
    "stored_runs",
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
# Measures that cells trained before they existed lack: NaN there, of these shapes.
OPTIONAL_KEYS = {
    "grad_cosine": lambda a: np.full(a["curves"].shape[:2], np.nan, np.float32),
    "expert_cosine": lambda a: np.full(a["curves"].shape[:1], np.nan, np.float32),
    "val_curves": lambda a: np.full(a["curves"].shape, np.nan, np.float32),
    "best": lambda a: np.full(a["final"].shape, np.nan, np.float32),
    "best_eval": lambda a: np.full(a["final"].shape, -1, np.int32),
}


# The model-selection rules a figure or claim reads: the test MSE at the end of training,
# or each task's test MSE at its lowest validation MSE (early stopping).
SELECTIONS = ("final", "best")


class ResultsError(ValueError):
    """A results folder that is corrupt, incomplete or lacks what was asked for."""


class Interrupted(Exception):  # noqa: N818 (it reports, it is not an error)
    """Training was interrupted; ``saved`` chunks of this invocation are on disk."""

    def __init__(self, saved: int, root: Path):
        super().__init__(
            f"interrupted: {saved} chunk(s) saved in {root} this time; rerun the same "
            "command to resume"
        )
        self.saved, self.root = saved, root


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


def write_bytes(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically, unless the file holds exactly these bytes
    already (then it is left alone, its time stamp too). True if it wrote."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    _atomic_write(path, lambda f: f.write(data))
    return True


def write_json(path: Path, obj) -> bool:
    """Write ``obj`` as indented JSON, atomically, unless the file holds it already."""
    return write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def write_npz(path: Path, arrays: dict, meta: dict) -> None:
    """Write arrays plus a JSON ``meta`` string to ``path`` atomically."""

    def write(f):
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    _atomic_write(path, write)


def read_npz(path: Path, expect_key: str | None = None) -> tuple[dict, dict]:
    """Load an ``.npz`` written by :func:`write_npz` (``allow_pickle=False``).

    Raises ResultsError, naming the file and how to proceed, if it is unreadable, lacks an
    array, or holds another spec than ``expect_key``.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        missing = [k for k in ARRAY_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        for k, fill in OPTIONAL_KEYS.items():
            if k not in arrays:
                arrays[k] = fill(arrays)
    except Exception as e:  # any decoding problem is a corrupt file for the user
        raise _corrupt(path, e) from None
    _check_key(path, meta, expect_key)
    return arrays, meta


def read_meta(path: Path, expect_key: str | None = None) -> dict:
    """The ``meta`` of an ``.npz`` written by :func:`write_npz`, without loading its arrays;
    the same errors as :func:`read_npz`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except Exception as e:
        raise _corrupt(path, e) from None
    _check_key(path, meta, expect_key)
    return meta


def _corrupt(path: Path, e: Exception) -> ResultsError:
    return ResultsError(
        f"corrupt results file {path} ({type(e).__name__}: {e}); delete it and rerun "
        "`python -m benchmark run` to recompute that piece"
    )


def _check_key(path: Path, meta: dict, expect_key: str | None) -> None:
    if expect_key is not None and meta.get("key") != expect_key:
        raise ResultsError(
            f"results file {path} holds spec {meta.get('key')!r}, not {expect_key!r}; "
            "delete it and rerun"
        )


def _cell_path(root: Path, key: str) -> Path:
    return root / "cells" / f"{key}.npz"


def stored_runs(root: Path, key: str) -> int:
    """How many runs of spec ``key`` the cell file in ``root`` holds (0 if none)."""
    path = _cell_path(root, key)
    if not path.exists():
        return 0
    return int(read_meta(path, key)["n_runs"])


# ----------------------------------------------------------------------------- provenance


def versions() -> dict:
    """Versions of the packages the numbers depend on."""
    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    """The checked-out commit, with ``+dirty`` if tracked files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=here,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty.strip() else "")) if head else None


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


# ----------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Runs ``start .. start + size - 1`` of one spec: the unit of work and of resume."""

    spec: RunSpec
    start: int
    size: int

    def path(self, root: Path) -> Path:
        return root / "chunks" / self.spec.key() / f"{self.start:06d}.npz"

    def done(self, root: Path) -> bool:
        """Whether this chunk's file is on disk with exactly these runs (a file from
        another split of the cell, with the same start but another size, is not)."""
        path = self.path(root)
        if not path.exists():
            return False
        meta = read_meta(path, self.spec.key())
        return (meta["start"], meta["size"]) == (self.start, self.size)


@dataclasses.dataclass
class Plan:
    """What a ``run`` needs: every cell once, at its largest run count, and the chunks.

    Attributes:
      experiments: the experiments asked for.
      need: ``{key: (spec, runs)}``: every spec they use, with the most runs any asks for.
      chunks: this shard's chunks that are not on disk yet.
      skipped: this shard's chunks already on disk (interrupted work).
      lr_specs: specs of those chunks whose learning rate is still to be selected.
      runs_stored: the runs of ``need`` already stored: in cell files (where a finished
        run ends up, a cut run's too), and in this shard's chunks on disk.
      cells_stored: the cells of ``need`` whose cell file holds all their runs.
    """

    experiments: list[Experiment]
    need: dict[str, tuple[RunSpec, int]]
    chunks: list[Chunk]
    skipped: int
    lr_specs: list[RunSpec]
    runs_stored: int = 0
    cells_stored: int = 0

    def counts(self) -> dict:
        """``cells_to_train``, ``runs_to_train`` and ``run_steps_to_train`` (LR selection
        included), for ``--dry-run``."""
        lr_runs = [len(s.lr.grid) * s.lr.n_runs for s in self.lr_specs]
        steps = sum(c.size * c.spec.train.steps for c in self.chunks)
        steps += sum(r * s.train.steps for r, s in zip(lr_runs, self.lr_specs, strict=True))
        return {
            "cells_to_train": len({c.spec.key() for c in self.chunks}),
            "runs_to_train": sum(c.size for c in self.chunks) + sum(lr_runs),
            "run_steps_to_train": steps,
            "chunks_to_train": len(self.chunks),
            "chunks_on_disk": self.skipped,
            "runs_stored": self.runs_stored,
            "cells_stored": self.cells_stored,
            "cells": len(self.need),
        }


def _chunks(spec: RunSpec, have: int, n: int, chunk: int, size: int | None = None) -> list[Chunk]:
    """The chunks that take a cell from ``have`` to ``n`` runs: the fewest of at most
    ``chunk`` runs each, of equal size (so 32 runs with chunk 20 train as 2 x 16; one
    program serves them all, and the last may train a few runs past ``n``, which the cell
    drops). ``size``: keep that chunk size (the split a partly stored cell was made with,
    so that a chunk on disk keeps its meaning after the cell's first chunks are folded)."""
    left = n - have
    if left <= 0:
        return []
    if size is None:
        size = -(-left // -(-left // chunk))
    return [Chunk(spec, have + i * size, size) for i in range(-(-left // size))]


def _cell_chunks(root: Path, spec: RunSpec, n: int, chunk: int) -> tuple[int, list[Chunk]]:
    """``(runs stored, the chunks still to take the cell to n runs)``, in the split the
    stored cell was folded with if it is a partial cell of these ``n`` runs."""
    path = _cell_path(root, spec.key())
    if not path.exists():
        return 0, _chunks(spec, 0, n, chunk)
    meta = read_meta(path, spec.key())
    split = meta.get("split") or {}
    size = split.get("size") if split.get("n") == n else None
    return int(meta["n_runs"]), _chunks(spec, int(meta["n_runs"]), n, chunk, size)


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


def _cells(exp: Experiment, profile: Profile, models: list[str] | None) -> tuple[Cell, ...]:
    """What a run of ``exp`` trains: its cells (only ``models``', if given), and the extra
    cells of the architectures of ``models`` that its cells leave out."""
    cells = exp.cells(profile)
    if models is None:
        return cells
    return tuple(c for c in cells if c.model.name in models) + exp.extra_cells(profile, models)


def _stored_cells(exp: Experiment, profile: Profile, root: Path) -> tuple[Cell, ...]:
    """The cells of ``exp`` as it is assembled in ``root``: its cells, and the extra cells
    of each architecture whose extra cells are all stored there."""
    from .models import names

    extra = []
    for m in names():
        cells = exp.extra_cells(profile, [m])
        if cells and all(stored_runs(root, c.key()) >= c.n_runs for c in cells):
            extra += cells
    return exp.cells(profile) + tuple(extra)


def _shard_of(chunk: Chunk, n: int) -> int:
    """The shard that trains ``chunk``: a hash of its cell key and first run, so that what
    is already on disk (cells a shard completed before it was cut) never moves a chunk to
    another shard on a rerun."""
    digest = hashlib.sha256(f"{chunk.spec.key()}:{chunk.start}".encode()).hexdigest()
    return int(digest[:8], 16) % n


def plan(
    profile: Profile,
    experiments: list[Experiment],
    root: Path,
    shard: tuple[int, int] = (0, 1),
    models: list[str] | None = None,
) -> Plan:
    """Every chunk that ``experiments`` (only ``models``' cells, if given) still need in
    ``root``: stored cell files and chunks on disk count as done. Reads, never writes."""
    need: dict[str, tuple[RunSpec, int]] = {}
    for exp in experiments:
        for cell in _cells(exp, profile, models):
            have = need.get(cell.key())
            if have is None or cell.n_runs > have[1]:
                need[cell.key()] = (cell.spec, cell.n_runs)
    chunks, stored, complete = [], 0, 0
    for spec, n in need.values():
        have, pieces = _cell_chunks(root, spec, n, profile.chunk)
        chunks += pieces
        stored += min(have, n)
        complete += have >= n
    # The experiments' cell order, each cell's chunks in a row: cells complete (and can
    # be committed) as the run goes, and an experiment can put first the cells a cut run
    # should have (budget). Compiled trainers are cached, so the order costs no compile.
    i, n = shard
    mine = [c for c in chunks if _shard_of(c, n) == i]
    todo, on_disk = [], []
    for c in mine:
        (on_disk if c.done(root) else todo).append(c)
    selecting = {c.spec.key(): c.spec for c in todo if isinstance(c.spec.lr, LRSelect)}
    lr_specs = [s for k, s in selecting.items() if not (root / "lr" / f"{k}.json").exists()]
    stored += sum(min(c.size, need[c.spec.key()][1] - c.start) for c in on_disk)
    return Plan(list(experiments), need, todo, len(on_disk), lr_specs, stored, complete)


# ----------------------------------------------------------------------------- running


def _lr_for(spec: RunSpec, root: Path) -> float:
    if not isinstance(spec.lr, LRSelect):
        return spec.lr
    from .engine import select_lr

    path = root / "lr" / f"{spec.key()}.json"
    if path.exists():
        return float(json.loads(path.read_text())["lr"])
    rule = spec.lr
    best, scores = select_lr(
        spec.corr_array(),
        model=spec.model,
        task=spec.task,
        cfg=spec.train,
        grid=rule.grid,
        n_runs=rule.n_runs,
        seed=rule.seed,
        objective=spec.objective,
    )
    write_json(
        path, {"key": spec.key(), "lr": best, "scores": {str(k): v for k, v in scores.items()}}
    )
    return best


# Fused calls on an accelerator ("auto"): a GPU wants every run of a program in flight.
# A run's largest arrays are its held-out test set (n_test x d floats, with its labels and
# predictions); a call holds at most ACCELERATOR_FUSE runs and ACCELERATOR_TEST_BYTES of
# test inputs (default profile: 8 192 runs, 6.6 GB; paper profile, n_test = 10 000: 2 105).
ACCELERATOR_FUSE = 8192
ACCELERATOR_TEST_BYTES = 8 * 2**30


def default_fuse(spec: RunSpec) -> int:
    """Runs per training call for ``fuse="auto"``: 0 (one chunk per call) on a CPU, where a
    device trains its runs in groups of 10 anyway; on an accelerator as many runs of
    ``spec``'s program as :data:`ACCELERATOR_FUSE` and :data:`ACCELERATOR_TEST_BYTES` allow."""
    import jax

    if jax.default_backend() == "cpu":
        return 0
    per_run = 4 * spec.train.n_test * (spec.task.d + spec.train.n_tasks)
    return max(1, min(ACCELERATOR_FUSE, ACCELERATOR_TEST_BYTES // per_run))


def _program(spec: RunSpec) -> tuple:
    """What one compiled trainer serves: every spec field but the cosine, the learning
    rate and the seed, which are per-run inputs."""
    return (spec.model, spec.task, spec.train, spec.objective, spec.numerics, spec.is_matrix)


def fused(chunks: list[Chunk], max_runs: int | str) -> list[list[Chunk]]:
    """``chunks`` packed into training calls: chunks of one program (:func:`_program`),
    in plan order, up to ``max_runs`` runs a call; ``max_runs`` 0: one chunk a call;
    ``"auto"``: :func:`default_fuse` of each program.

    A call's runs are independent (their own keys, cosine and learning rate), so a run's
    numbers do not depend on the chunks it is fused with beyond float rounding.
    """
    calls: list[list[Chunk]] = []
    open_calls: dict[tuple, list[Chunk]] = {}
    for c in chunks:
        key = _program(c.spec)
        call = open_calls.get(key)
        limit = default_fuse(c.spec) if max_runs == "auto" else max_runs
        if limit <= 0:
            calls.append([c])
            continue
        if call is None or sum(x.size for x in call) + c.size > limit:
            call = open_calls[key] = []
            calls.append(call)
        call.append(c)
    return calls


def _train_chunks(call: list[Chunk], root: Path) -> float:
    """Train the chunks of one call in one ``train_many`` and write each chunk's file."""
    import jax.numpy as jnp

    from .engine import run_keys, train_many

    first = call[0].spec
    keys = jnp.concatenate([run_keys(c.spec.seed, c.size, c.start) for c in call])
    shape = first.corr_array().shape
    p = np.concatenate([np.broadcast_to(c.spec.corr_array(), (c.size, *shape)) for c in call])
    lrs = [_lr_for(c.spec, root) for c in call]
    lr = np.concatenate([np.full(c.size, v, np.float32) for c, v in zip(call, lrs, strict=True)])
    out = train_many(
        keys, p, lr, model=first.model, task=first.task, cfg=first.train, objective=first.objective
    )
    wall = float(out.pop("wall_s"))
    total, offset = sum(c.size for c in call), 0
    for c, v in zip(call, lrs, strict=True):
        meta = {
            "key": c.spec.key(),
            "spec": c.spec.canonical(),
            "start": c.start,
            "size": c.size,
            "lr": v,
            "wall_s": wall * c.size / total,  # the call's time, shared by runs
            "git_commit": git_commit(),
            "versions": versions(),
        }
        if len(call) > 1:
            meta["fused_runs"] = total
        write_npz(c.path(root), {k: a[offset : offset + c.size] for k, a in out.items()}, meta)
        offset += c.size
    return wall


def run(
    profile: Profile,
    experiments: list[Experiment],
    root: Path,
    shard: tuple[int, int] = (0, 1),
    models: list[str] | None = None,
    progress: bool = True,
    fuse: int | str = "auto",
    also: list[Experiment] = (),
) -> dict:
    """Train every missing chunk of ``experiments`` (this shard's share), then assemble
    them, and the experiments of ``also`` whose manifest is stored (:func:`assemble`).

    ``fuse``: the most runs one training call may hold, fusing chunks of one program
    (:func:`fused`); 0 trains one chunk per call; ``"auto"``: :func:`default_fuse`.

    Returns ``trained`` and ``skipped`` chunk counts, ``runs_trained``, ``runs_stored``
    (the runs that were stored before: in cell files, or in chunks on disk),
    ``cells_stored`` and ``cells`` (cells complete before, of those needed),
    ``assembled`` experiment names (an experiment is assembled once all its cells hold
    their runs) and ``train_s``. A KeyboardInterrupt becomes :class:`Interrupted`, which
    says how many chunks were saved.

    ``progress``: a bar (tqdm) on a terminal; where stderr is not one (a log file), a
    plain line of runs done and time left every :data:`LOG_EVERY_S` seconds.
    """
    if fuse != "auto" and (not isinstance(fuse, int) or isinstance(fuse, bool) or fuse < 0):
        raise ValueError(f"fuse must be a number of runs >= 0 or 'auto', got {fuse!r}")
    work = plan(profile, experiments, root, shard, models)
    root.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress and work.chunks:
        bar = _progress(sum(c.size for c in work.chunks), profile.name)
        if work.runs_stored:
            bar.write(
                f"resuming: {work.runs_stored} runs already stored "
                f"({work.cells_stored} of {len(work.need)} cells complete)"
            )
    t0 = time.perf_counter()
    train_s = 0.0
    try:
        for call in fused(work.chunks, fuse):
            if bar is not None:
                label = call[0].spec.model.label()
                ps = ",".join(dict.fromkeys(_corr_text(c.spec) for c in call))
                bar.set_postfix_str(f"{label} p={ps}")
            train_s += _train_chunks(call, root)
            # Each cell of the call is written at once with every run its leading chunks
            # hold (the files a run commits as it goes: a cut run loses at most the call in
            # flight); the manifests wait for their experiments' last cells.
            for key in dict.fromkeys(c.spec.key() for c in call):
                _complete_cell(root, profile, *work.need[key], partial=True)
            if bar is not None:
                bar.update(sum(c.size for c in call))
    except KeyboardInterrupt:
        for spec, n in work.need.values():  # chunks written before the interrupt landed
            _complete_cell(root, profile, spec, n, partial=True)
        # Counted on disk: the interrupt may land after a chunk's file is written.
        raise Interrupted(sum(c.done(root) for c in work.chunks), root) from None
    finally:
        if bar is not None:
            bar.close()
    wall_s = time.perf_counter() - t0
    assembled = assemble(profile, work, root, wall_s=wall_s, models=models, also=also)
    return {
        "trained": len(work.chunks),
        "skipped": work.skipped,
        "runs_trained": sum(c.size for c in work.chunks),
        "runs_stored": work.runs_stored,
        "cells_stored": work.cells_stored,
        "cells": len(work.need),
        "assembled": assembled,
        "train_s": train_s,
    }


# Where stderr is not a terminal (a log file), progress is a plain line at most this often.
LOG_EVERY_S = 60.0


def _progress(total: int, desc: str):
    """A progress display of ``total`` runs: tqdm's bar on a terminal, else a
    :class:`LogProgress` (tqdm would write every refresh of its bar into the log)."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="run", desc=desc)
    return LogProgress(total, desc)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class LogProgress:
    """Progress for a log: one plain line on stderr at the start, then after a training
    call once :data:`LOG_EVERY_S` seconds have passed since the last line, and at the end;
    each line says the runs done, the time spent and the time left at the rate so far.
    The part of tqdm's interface the runner uses."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""
        self.t0 = self.last = time.monotonic()
        self.write(f"{desc}: {total} runs to train; a line every {LOG_EVERY_S:g} s")

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S or self.n >= self.total:
            self.last = now
            spent = now - self.t0
            left = spent / self.n * (self.total - self.n)
            self.write(
                f"{self.desc}: {self.n}/{self.total} runs ({self.n / self.total:.0%}), "
                f"{_duration(spent)} spent, about {_duration(left)} left"
                + (f" (last: {self.postfix})" if self.postfix else "")
            )

    def close(self) -> None:
        pass


def _corr_text(spec: RunSpec) -> str:
    return "R" if spec.is_matrix else f"{spec.corr:.2f}"


# ----------------------------------------------------------------------------- assembling


def _complete_cell(
    root: Path, profile: Profile, spec: RunSpec, n: int, partial: bool = False
) -> bool:
    """Write ``cells/<key>.npz`` with ``n`` runs from the stored cell and the chunks, if
    they are all on disk; True if the cell file then holds at least ``n`` runs.

    ``partial``: if only the first chunks are on disk, write the cell with the runs they
    hold (runs 0..m-1, m < n), so that the cell files alone, without the chunks, keep every
    finished run; a later run extends the cell from m. Returns False then.
    """
    key = spec.key()
    have, pieces = _cell_chunks(root, spec, n, profile.chunk)
    if have >= n:
        return True
    done = next((i for i, c in enumerate(pieces) if not c.done(root)), len(pieces))
    complete = done == len(pieces)
    split = None
    if not complete:
        if not (partial and done):
            return False
        split = {"n": n, "size": pieces[0].size}
        pieces = pieces[:done]
        n = pieces[-1].start + pieces[-1].size
    parts, metas = [], []
    if have:
        arrays, meta = read_npz(_cell_path(root, key), key)
        parts.append({k: arrays[k][:have] for k in (*ARRAY_KEYS, *OPTIONAL_KEYS)})
        metas.append(meta)
    for c in pieces:
        arrays, meta = read_npz(c.path(root), key)
        parts.append(arrays)
        metas.append(meta)
    arrays = {k: np.concatenate([p[k] for p in parts])[:n] for k in (*ARRAY_KEYS, *OPTIONAL_KEYS)}
    lrs = sorted({m["lr"] for m in metas})
    if len(lrs) != 1:
        raise ResultsError(f"the pieces of cell {key} in {root} disagree on the learning rate")
    meta = {
        "key": key,
        "spec": spec.canonical(),
        "n_runs": n,
        "lr": lrs[0],
        "train_wall_s": sum(m.get("wall_s", m.get("train_wall_s", 0.0)) for m in metas),
        "git_commits": sorted({c for m in metas for c in _commits(m)}),
        "versions": metas[-1].get("versions"),
    }
    if split:
        meta["split"] = split  # a partial cell: the split its remaining chunks keep
    write_npz(_cell_path(root, key), arrays, meta)
    return complete


def _commits(meta: dict) -> list:
    if "git_commits" in meta:
        return [c for c in meta["git_commits"] if c]
    return [meta["git_commit"]] if meta.get("git_commit") else []


def assemble(
    profile: Profile,
    work: Plan,
    root: Path,
    wall_s: float,
    models: list[str] | None = None,
    also: list[Experiment] = (),
) -> list[str]:
    """Complete every cell whose pieces are on disk; write the manifest of each experiment
    whose cells are all complete. Returns the names of the experiments assembled.

    ``also``: more experiments, assembled as well where ``root`` holds their manifest
    already: an experiment that reuses another's cells (``gradient_conflict`` those of
    ``relatedness``) takes in the cells a run of that other adds (a new architecture's).
    A manifest whose cells did not change is left alone (:func:`_same_manifest`).
    """
    done_keys = {k for k, (spec, n) in work.need.items() if _complete_cell(root, profile, spec, n)}
    asked = [e.name for e in work.experiments]
    exps = list(work.experiments)
    exps += [e for e in also if e.name not in asked and _stored_under(root, e.name, profile)]
    written = []
    for exp in exps:
        try:
            cells = _stored_cells(exp, profile, root)
        except ValueError:  # the profile cannot size it (budget under smoke)
            continue
        if not all(c.key() in done_keys or stored_runs(root, c.key()) >= c.n_runs for c in cells):
            continue
        records, run_s = [], 0.0
        for c in cells:
            meta = read_meta(_cell_path(root, c.key()), c.key())
            run_s += meta["train_wall_s"] * c.n_runs / meta["n_runs"]
            records.append(_cell_record(c, meta))
        manifest = {
            "experiment": exp.name,
            "description": exp.description,
            "profile": profile.to_dict(),
            "eval_steps": profile.train.eval_steps().tolist(),
            "cells": records,
            "versions": versions(),
            "git_commit": git_commit(),
            "hardware": _hardware(),
            "timings": {"train_wall_s_of_its_runs": run_s, "this_invocation_s": wall_s},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path = root / exp.name / "manifest.json"
        if not _same_manifest(path, manifest):  # else keep the run that made it on record
            write_json(path, manifest)
        written.append(exp.name)
    return written


def _stored_under(root: Path, name: str, profile: Profile) -> bool:
    """Whether ``root`` holds a manifest of experiment ``name`` made under ``profile``."""
    try:
        stored = json.loads((root / name / "manifest.json").read_text())
        return stored["profile"]["name"] == profile.name
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False


# What a manifest records of the run that wrote it, rather than of its cells.
PROVENANCE = ("versions", "git_commit", "hardware", "timings", "created")


def _same_manifest(path: Path, manifest: dict) -> bool:
    """Whether the manifest at ``path`` records the same cells, profile and experiment as
    ``manifest`` (its provenance aside): an invocation that adds nothing rewrites nothing."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(stored, dict):
        return False

    def content(m: dict) -> str:
        return json.dumps({k: v for k, v in m.items() if k not in PROVENANCE}, sort_keys=True)

    return content(stored) == content(manifest)


def _cell_record(cell: Cell, meta: dict) -> dict:
    spec = cell.spec
    record = {
        "key": cell.key(),
        "series": cell.series,
        "model": spec.model.name,
        "model_label": spec.model.label(),
        "objective": spec.objective_name,
        "objective_hyper": spec.objective_hyper(),
        "objective_label": spec.objective_label,
        "x": cell.x,
        "corr": spec.canonical()["corr"],
        "n_tasks": spec.n_tasks,
        "steps": spec.train.steps,
        "n_runs": cell.n_runs,
        "lr": meta["lr"],
        "train_wall_s": meta["train_wall_s"] * cell.n_runs / meta["n_runs"],
    }
    if spec.train.n_train is not None:  # absent for the stream, as in every older manifest
        record["n_train"] = spec.train.n_train
    return record


# ----------------------------------------------------------------------------- loading


@dataclasses.dataclass
class CellResult:
    """One cell of an experiment: its manifest record and its arrays (runs first).

    The diverged-run rule is applied on loading: a run whose test loss was ever non-finite
    (``diverged``) has NaN in ``final`` and ``curves`` for every task, so every statistic
    excludes it for all tasks at once and counts it as diverged.
    """

    meta: dict
    arrays: dict

    @property
    def series(self) -> str:
        return self.meta["series"]

    @property
    def x(self) -> float:
        return float(self.meta["x"])

    @property
    def objective(self) -> str:
        """The objective's name, with its hyper-parameters where they are not the paper
        defaults (``gradnorm(alpha=0.5)``): cells differing in either never group together."""
        return self.meta.get("objective_label", self.meta["objective"])

    @property
    def final(self) -> np.ndarray:
        """(runs, K) final test MSE; NaN for diverged runs."""
        return self.arrays["final"]

    @property
    def best(self) -> np.ndarray:
        """(runs, K) early-stopped test MSE: each task's test MSE at its lowest validation
        MSE; NaN for diverged runs and for cells trained without a validation set."""
        return self.arrays["best"]

    def loss(self, selection: str) -> np.ndarray:
        """(runs, K) test MSE by model-selection rule: ``"final"`` or ``"best"``."""
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        return self.arrays[selection]


@dataclasses.dataclass
class Results:
    """An experiment's stored results: its manifest and its cells."""

    experiment: str
    manifest: dict
    cells: list[CellResult]

    def series(self) -> list[str]:
        """Series names in manifest order."""
        return list(dict.fromkeys(c.series for c in self.cells))

    def by_series(self) -> dict[str, dict[float, CellResult]]:
        """``{series: {x: cell}}``."""
        out: dict[str, dict[float, CellResult]] = {}
        for c in self.cells:
            out.setdefault(c.series, {})[round(c.x, 6)] = c
        return out

    def by_model(self) -> dict[str, dict[float, CellResult]]:
        """``{registry name: {x: cell}}`` (for experiments with one config per model)."""
        out: dict[str, dict[float, CellResult]] = {}
        for c in self.cells:
            out.setdefault(c.meta["model"], {})[round(c.x, 6)] = c
        return out

    @property
    def eval_steps(self) -> np.ndarray:
        return np.asarray(self.manifest["eval_steps"])

    @property
    def n_runs(self) -> int:
        """The most runs of any cell (runs per point, for captions)."""
        return max(c.meta["n_runs"] for c in self.cells)


def _apply_divergence_rule(arrays: dict) -> dict:
    bad = arrays["diverged"].astype(bool)
    out = dict(arrays)
    for k in ("final", "curves", "best", "val_curves"):
        a = arrays[k].astype(np.float64)
        a[bad] = np.nan
        out[k] = a
    return out


def load_experiment(root: Path, name: str) -> Results:
    """The stored results of experiment ``name`` in ``root``."""
    path = root / name / "manifest.json"
    if not path.exists():
        raise ResultsError(
            f"no results for experiment '{name}' in {root}; run `python -m benchmark run {name}`"
        )
    try:
        manifest = json.loads(path.read_text())
        records = manifest["cells"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ResultsError(f"corrupt manifest {path}: {e}; delete it and rerun") from None
    return Results(name, manifest, [_load_cell(root, rec, name) for rec in records])


def _load_cell(root: Path, rec: dict, name: str) -> CellResult:
    """The cell of manifest record ``rec``, its first ``rec["n_runs"]`` runs."""
    arrays, _ = read_npz(_cell_path(root, rec["key"]), rec["key"])
    n = rec["n_runs"]
    if arrays["final"].shape[0] < n:
        raise ResultsError(
            f"results file {_cell_path(root, rec['key'])} holds {arrays['final'].shape[0]} "
            f"runs, experiment '{name}' needs {n}; delete it and rerun"
        )
    arrays = _apply_divergence_rule({k: arrays[k][:n] for k in (*ARRAY_KEYS, *OPTIONAL_KEYS)})
    return CellResult(rec, arrays)


def load_stored_cells(root: Path, profile: Profile, exp: Experiment) -> tuple[Results, int]:
    """The cells of ``exp`` (under ``profile``) that ``root`` holds in full, for an
    experiment still training: ``(results, n_cells)``, ``n_cells`` being how many cells the
    whole experiment has. The manifest is marked ``"partial": True`` and holds only the
    stored cells' records, in the experiment's order; a cell with fewer runs than the
    experiment asks for is left out."""
    cells = exp.cells(profile)
    n = len(cells)
    cells = _stored_cells(exp, profile, root)
    records = []
    for c in cells:
        path = _cell_path(root, c.key())
        if path.exists():
            meta = read_meta(path, c.key())
            if int(meta["n_runs"]) >= c.n_runs:
                records.append(_cell_record(c, meta))
    manifest = {
        "experiment": exp.name,
        "partial": True,
        "profile": profile.to_dict(),
        "eval_steps": profile.train.eval_steps().tolist(),
        "cells": records,
    }
    return Results(exp.name, manifest, [_load_cell(root, r, exp.name) for r in records]), n


def stale_cells(root: Path, exp: Experiment, profile: Profile) -> list[str]:
    """Keys in the stored manifest of ``exp`` that the current code would not produce."""
    path = root / exp.name / "manifest.json"
    if not path.exists():
        return []
    stored = {c["key"] for c in json.loads(path.read_text())["cells"]}
    return sorted(stored - {c.key() for c in exp.every_cell(profile)})


# ----------------------------------------------------------------------------- merging


def merge(
    sources: list[Path],
    dest: Path,
    profile: Profile,
    experiments: list[Experiment],
    also: list[Experiment] = (),
) -> dict:
    """Combine the chunks, cells and learning rates of shard folders into ``dest`` and
    assemble what is complete (``also``: as :func:`assemble`). Every source is checked
    before anything is written."""
    pieces: list[tuple[Path, Path]] = []
    wanted = _keys([*experiments, *also], profile)
    for src in sources:
        if not src.is_dir():
            raise ResultsError(f"merge source {src} is not a folder")
        found = sorted((src / "chunks").glob("*/*.npz")) + sorted((src / "cells").glob("*.npz"))
        if not found:
            raise ResultsError(f"merge source {src} holds no chunks or cells")
        metas = []
        for f in found:
            _, meta = read_npz(f)  # refuse corrupt pieces before writing anything
            if meta.get("key") != (f.parent.name if f.parent.name != "cells" else f.stem):
                raise ResultsError(f"{f} holds spec {meta.get('key')!r}: not a piece of this")
            pieces.append((f, dest / f.relative_to(src)))
            metas.append(meta)
        if not any(m["key"] in wanted for m in metas):
            raise ResultsError(_foreign(src, metas, profile, experiments))
        pieces += [(f, dest / f.relative_to(src)) for f in sorted((src / "lr").glob("*.json"))]
    copied = 0
    for f, target in pieces:
        if target.exists() and not (target.parent.name == "cells" and _more_runs(f, target)):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        copied += 1
    work = plan(profile, experiments, dest)
    return {"copied": copied, "assembled": assemble(profile, work, dest, wall_s=0.0, also=also)}


def _keys(experiments: list[Experiment], profile: Profile) -> set[str]:
    """The cell keys of ``experiments`` under ``profile`` (none of one it cannot size)."""
    keys = set()
    for exp in experiments:
        try:
            keys |= {c.key() for c in exp.every_cell(profile)}
        except ValueError:  # budget under smoke
            continue
    return keys


def _foreign(src: Path, metas: list[dict], profile: Profile, experiments) -> str:
    """The error for a merge source none of whose pieces ``profile`` uses: it names the
    profile whose training the pieces' specs record, where one does."""
    from .protocol import PROFILES

    trains = {json.dumps(m.get("spec", {}).get("train"), sort_keys=True) for m in metas}
    guess = [
        p.name for p in PROFILES.values() if json.dumps(p.train.to_dict(), sort_keys=True) in trains
    ]
    hint = f"; they were trained under --profile {' or '.join(guess)}" if guess else ""
    return (
        f"merge source {src}: none of its {len(metas)} chunks and cells is a cell of "
        f"{', '.join(e.name for e in experiments)} under --profile {profile.name}{hint}"
    )


def _more_runs(a: Path, b: Path) -> bool:
    return read_meta(a)["n_runs"] > read_meta(b)["n_runs"]
