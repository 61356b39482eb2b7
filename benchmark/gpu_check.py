"""The device check: what one accelerator does with this benchmark, in a few minutes.

``python -m benchmark gpu-check --out DIR`` (``make gpu-check``) measures, on whatever
backend JAX has (a GPU, or the CPU with ``--tiny``), and writes ``DIR/gpu_check.json``:

- the device and the package versions;
- the backend's float32 matmul rate, measured in the same process (:func:`bench.peak_gflops`);
- the engine's run-steps/s for each model, batch and run count, compilation timed apart,
  and its efficiency: model FLOPs per second over the matmul rate. The grid stops when its
  time budget is spent; what it skipped is listed;
- a slice of the ``paper`` profile (one ``fig4`` cell: MMoE at p = 0.5, 200 runs, a few
  thousand steps), and the projected training time of the whole ``paper`` profile and of
  ``make reproduce`` at the rates measured (learning-rate selection included in the
  run-steps, compilation not);
- agreement with the stored CPU results: the first chunk of a stored default-profile cell
  retrained here, its task-1 IQM against the stored runs' (95% bootstrap CIs). Bit
  equality across backends is not expected; overlapping intervals are.

It needs no network and no install: the packages a CUDA machine has (jax, flax, optax,
numpy, scipy, matplotlib) and this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from . import bench, stats
from .engine import run_keys, train_many
from .models import ModelConfig
from .protocol import get_profile

SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class CheckSizes:
    """What the check measures.

    Attributes:
      models, batches, runs: the throughput grid, measured in this order (the run counts
        innermost, ascending); ``steps`` per call.
      budget_s: the throughput grid stops once it has spent this many seconds.
      matmul: square matmul sizes of the peak measurement.
      slice_model, slice_runs, slice_steps: the ``paper`` profile slice (a ``fig4`` cell).
      agree_profile, agree_model, agree_corr, agree_runs: the stored cell retrained (its
        ``fig4`` spec under ``agree_profile``) and how many of its runs.
    """

    models: tuple[str, ...] = ("shared_bottom", "mmoe", "ple")
    batches: tuple[int, ...] = (32, 128)
    runs: tuple[int, ...] = (256, 1024, 4096, 16384)
    steps: int = 500
    budget_s: float = 150.0
    matmul: tuple[int, ...] = (2048, 4096, 8192)
    slice_model: str = "mmoe"
    slice_runs: int = 200
    slice_steps: int = 5000
    agree_profile: str = "default"
    agree_model: str = "shared_bottom"
    agree_corr: float = 0.5
    agree_runs: int = 20


# Sizes that run on a CPU in seconds: the check's own test.
TINY = CheckSizes(
    models=("shared_bottom",),
    batches=(16,),
    runs=(2,),
    steps=20,
    budget_s=60.0,
    matmul=(64,),
    slice_model="shared_bottom",
    slice_runs=2,
    slice_steps=20,
    agree_profile="smoke",
    agree_runs=2,
)


def device_info() -> dict:
    """The backend, its devices and the package versions."""
    from .runner import versions

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "versions": versions(),
    }


def _padded(runs: int, n_dev: int) -> int:
    return -(-runs // n_dev) * n_dev


def throughput(sizes: CheckSizes, peak_gflops: float, log=print) -> tuple[list, list]:
    """``(rows, skipped)``: a row per (model, batch, runs) measured, ``{"model", "batch",
    "runs", "run_steps_per_s", "compile_s", "efficiency"}`` (``"error"`` instead where the
    program does not fit); ``skipped``: ``[model, batch, runs]`` left when the budget ran
    out."""
    task = get_profile("default").task
    n_dev = jax.local_device_count()
    todo = [(m, b, r) for m in sizes.models for b in sizes.batches for r in sizes.runs]
    rows, t0 = [], time.perf_counter()
    for i, (m, b, r) in enumerate(todo):
        if time.perf_counter() - t0 > sizes.budget_s:
            log(f"gpu-check: throughput budget of {sizes.budget_s:.0f} s spent")
            return rows, [list(x) for x in todo[i:]]
        model, runs = ModelConfig.of(m), _padded(r, n_dev)
        cfg = bench.bench_config(sizes.steps, b)
        row = {"model": m, "batch": b, "runs": runs}
        try:
            rate, compile_s = bench.engine_rate(model, task, cfg, runs, n_dev, repeats=2)
        except (ValueError, RuntimeError, MemoryError) as e:  # does not fit: say so, go on
            row["error"] = str(e).splitlines()[0][:200]
            rows.append(row)
            log(f"gpu-check: {m} batch {b} x {runs} runs: {row['error']}")
            continue
        flops = bench.step_flops(model, task, b)
        row |= {
            "run_steps_per_s": rate,
            "compile_s": compile_s,
            "efficiency": rate * flops / (peak_gflops * 1e9) if peak_gflops > 0 else None,
        }
        rows.append(row)
        log(f"gpu-check: {m} batch {b} x {runs} runs: {rate:,.0f} run-steps/s "
            f"(compile {compile_s:.1f} s)")  # fmt: skip
    return rows, []


def _run_steps(profile_name: str) -> int:
    """Run-steps that ``make reproduce`` trains under ``profile_name`` from nothing."""
    import tempfile

    from . import experiments
    from .runner import plan

    exps = [experiments.get(n) for n in experiments.names(only_all=True)]
    with tempfile.TemporaryDirectory() as empty:
        return plan(get_profile(profile_name), exps, Path(empty)).counts()["run_steps_to_train"]


def paper_slice(sizes: CheckSizes, default_rate: float | None) -> dict:
    """One ``fig4`` cell of the ``paper`` profile (``slice_model``, p = 0.5), ``slice_runs``
    runs for ``slice_steps`` steps: its rate, and the projected hours of the ``paper``
    profile and of ``make reproduce`` (the default profile, at ``default_rate``: the
    throughput grid's best MMoE rate at batch 32)."""
    paper = get_profile("paper")
    cfg = dataclasses.replace(paper.train, steps=sizes.slice_steps, eval_every=sizes.slice_steps)
    n_dev = jax.local_device_count()
    runs = _padded(sizes.slice_runs, n_dev)
    rate, compile_s = bench.engine_rate(
        ModelConfig.of(sizes.slice_model), paper.task, cfg, runs, n_dev, repeats=1
    )
    out = {
        "cell": f"fig4 {sizes.slice_model} p=0.5",
        "runs": runs,
        "steps": sizes.slice_steps,
        "batch": cfg.batch_size,
        "run_steps_per_s": rate,
        "compile_s": compile_s,
        "paper_run_steps": _run_steps("paper"),
        "reproduce_run_steps": _run_steps("default"),
    }
    out["paper_projected_h"] = out["paper_run_steps"] / rate / 3600
    out["reproduce_projected_h"] = (
        out["reproduce_run_steps"] / default_rate / 3600 if default_rate else None
    )
    return out


def agreement(sizes: CheckSizes, results: Path) -> dict:
    """The first ``agree_runs`` runs of a stored ``fig4`` cell retrained on this backend:
    each side's task-1 final-loss IQM with its 95% bootstrap CI; ``agrees``: the intervals
    overlap. ``{"skipped": why}`` where ``results`` lacks the cell."""
    from .runner import _cell_path, read_npz

    profile = get_profile(sizes.agree_profile)
    spec = profile.spec(ModelConfig.of(sizes.agree_model), sizes.agree_corr)
    path = _cell_path(results, spec.key())
    if not path.exists():
        return {"skipped": f"no stored cell {spec.key()} in {results}"}
    stored, _ = read_npz(path, spec.key())
    n = min(sizes.agree_runs, len(stored["final"]))
    out = train_many(
        run_keys(spec.seed, n), spec.corr_array(), spec.lr, model=spec.model, task=spec.task,
        cfg=spec.train, objective=spec.objective,
    )  # fmt: skip
    here, there = out["final"][:, 0], np.asarray(stored["final"][:n, 0], np.float64)
    a, b = stats.iqm_ci(here), stats.iqm_ci(there)
    return {
        "cell": spec.key(),
        "profile": profile.name,
        "runs": n,
        "steps": spec.train.steps,
        "wall_s": float(out["wall_s"]),
        "here_iqm": [stats.iqm(here), *a],
        "stored_iqm": [stats.iqm(there), *b],
        "max_abs_diff": float(np.nanmax(np.abs(here - there))),
        "agrees": bool(a[0] <= b[1] and b[0] <= a[1]),
    }


def run_check(sizes: CheckSizes, results: Path, log=print) -> dict:
    """Every measurement of the check, as one JSON-ready dict (see the module docstring)."""
    t0 = time.perf_counter()
    report = {"schema": SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["device"] = device_info()
    log(f"gpu-check: {report['device']['device_count']} x {report['device']['device_kind']} "
        f"({report['device']['backend']}), jax {report['device']['versions']['jax']}")  # fmt: skip
    report["matmul_gflops"] = bench.peak_gflops(sizes.matmul)
    log(f"gpu-check: float32 matmul {report['matmul_gflops']:,.0f} GFLOP/s")
    report["agreement"] = agreement(sizes, results)
    report["throughput"], report["skipped"] = throughput(sizes, report["matmul_gflops"], log)
    mmoe32 = [
        r["run_steps_per_s"]
        for r in report["throughput"]
        if r["model"] == "mmoe" and r["batch"] == 32 and "error" not in r
    ]
    report["paper_slice"] = paper_slice(sizes, max(mmoe32, default=None))
    report["wall_s"] = time.perf_counter() - t0
    return report


def summary(report: dict) -> str:
    """The report in a few lines."""
    d = report["device"]
    lines = [
        f"device: {d['device_count']} x {d['device_kind']} ({d['backend']}), "
        f"jax {d['versions']['jax']}; float32 matmul {report['matmul_gflops']:,.0f} GFLOP/s",
        "model | batch | runs | run-steps/s | compile s | efficiency",
    ]
    for r in report["throughput"]:
        if "error" in r:
            lines.append(f"{r['model']} | {r['batch']} | {r['runs']} | {r['error']}")
            continue
        eff = "–" if r["efficiency"] is None else f"{r['efficiency']:.3f}"
        lines.append(
            f"{r['model']} | {r['batch']} | {r['runs']} | {r['run_steps_per_s']:,.0f} | "
            f"{r['compile_s']:.1f} | {eff}"
        )
    if report["skipped"]:
        lines.append(f"skipped (budget): {len(report['skipped'])} measurements")
    s = report["paper_slice"]
    rep = s["reproduce_projected_h"]
    lines.append(
        f"paper slice ({s['cell']}, {s['runs']} runs x {s['steps']} steps, batch {s['batch']}): "
        f"{s['run_steps_per_s']:,.0f} run-steps/s; paper profile ≈ {s['paper_projected_h']:.1f} h"
        + ("" if rep is None else f", make reproduce ≈ {rep:.1f} h")
    )
    a = report["agreement"]
    if "skipped" in a:
        lines.append(f"agreement: skipped ({a['skipped']})")
    else:
        lines.append(
            f"agreement ({a['profile']} cell, {a['runs']} runs x {a['steps']} steps): IQM here "
            f"{a['here_iqm'][0]:.4f} [{a['here_iqm'][1]:.4f}, {a['here_iqm'][2]:.4f}], stored "
            f"{a['stored_iqm'][0]:.4f} [{a['stored_iqm'][1]:.4f}, {a['stored_iqm'][2]:.4f}]: "
            + ("agree" if a["agrees"] else "DISAGREE")
        )
    lines.append(f"check took {report['wall_s']:.0f} s")
    return "\n".join(lines)
