"""End to end: the smoke profile runs every experiment; figures, report, summary, resume,
shards, config mismatch and corrupt files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark import cli
from benchmark.engine import default_group
from benchmark.experiments import PLE_CORRS, experiments, get_profile
from benchmark.report import EXPERIMENTS, build_summary, check_claims
from benchmark.runner import (
    ResultsError,
    load_cell,
    load_experiment,
    merge,
    parse_shard,
    plan,
    run,
)

SMOKE = get_profile("smoke")
ALL = list(EXPERIMENTS)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "smoke"
    res = run(SMOKE, ALL, root, progress=False)
    assert res["skipped"] == 0 and res["trained"] > 0
    assert sorted(res["assembled"]) == sorted(ALL)
    return root


def test_every_experiment_has_its_cells(smoke_root):
    exps = experiments(SMOKE)
    for name in ALL:
        manifest, cells = load_experiment(smoke_root, name)
        assert len(cells) == len(exps[name].cells)
        for key in ("profile", "versions", "git_commit", "hardware", "timings", "eval_steps"):
            assert key in manifest
        for meta, arrays in cells:
            n = meta["n_runs"]
            assert arrays["curves"].shape == (n, SMOKE.train.n_evals, 2)
            assert arrays["final"].shape == (n, 2)
            assert arrays["diverged"].shape == (n,)
            np.testing.assert_array_equal(arrays["final"], arrays["curves"][:, -1])


def test_shared_cells_are_the_same_runs(smoke_root):
    # mtl_gain's Shared-Bottom at p=0.5 is fig4's first runs: trained once, served twice.
    _, a = load_cell(smoke_root, "fig4", "shared_bottom", 0.5)
    _, b = load_cell(smoke_root, "mtl_gain", "shared_bottom", 0.5)
    n = b["final"].shape[0]
    np.testing.assert_array_equal(a["final"][:n], b["final"])
    # relatedness contains the fig4 and mtl_gain correlations.
    assert {0.5, 0.9, 1.0} | set(PLE_CORRS) <= set(SMOKE.correlations)


def test_resume_skips_finished_pieces(smoke_root):
    res = run(SMOKE, ALL, smoke_root, progress=False)
    assert res["trained"] == 0
    _, chunks = plan(SMOKE, ALL)
    assert res["skipped"] == len(chunks)


def test_resume_after_interruption(tmp_path, smoke_root):
    root = tmp_path / "r"
    run(SMOKE, ["fig3"], root, progress=False)
    chunk_files = sorted((root / "chunks").glob("*/*.npz"))
    before = {f: f.read_bytes() for f in chunk_files}
    victim = chunk_files[0]
    victim.unlink()  # as if the run had been killed before this piece was written
    res = run(SMOKE, ["fig3"], root, progress=False)
    assert res["trained"] == 1 and res["skipped"] == len(chunk_files) - 1
    _, a = load_cell(root, "fig3", "shared_bottom", 0.5)
    _, b = load_cell(smoke_root, "fig3", "shared_bottom", 0.5)
    np.testing.assert_allclose(a["final"], b["final"], rtol=1e-5)
    for f in chunk_files[1:]:
        assert f.read_bytes() == before[f]


def test_config_mismatch_is_refused(tmp_path):
    root = tmp_path / "r"
    run(SMOKE, ["fig3"], root, progress=False)
    other = get_profile("smoke")
    import dataclasses

    other = dataclasses.replace(other, lr=1e-2)
    with pytest.raises(ResultsError, match=r"different 'smoke' config.*lr.*--out"):
        run(other, ["fig3"], root, progress=False)


def test_corrupt_file_gets_clear_error(tmp_path):
    root = tmp_path / "r"
    run(SMOKE, ["fig3"], root, progress=False)
    f = sorted((root / "fig3").glob("*.npz"))[0]
    f.write_bytes(b"not an npz at all")
    with pytest.raises(ResultsError, match=r"corrupt results file .*delete it and rerun"):
        load_experiment(root, "fig3")
    assert cli.main(["figures", "--results", str(root), "--out", str(tmp_path / "f")]) == 2


def test_truncated_chunk_gets_clear_error(tmp_path):
    root = tmp_path / "r"
    run(SMOKE, ["fig3"], root, progress=False)
    f = sorted((root / "chunks").glob("*/*.npz"))[0]
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ResultsError, match="corrupt results file"):
        run(SMOKE, ["fig3"], root, progress=False)


def test_shards_merge_to_the_same_results(tmp_path, smoke_root):
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run(SMOKE, ["fig3"], a, shard=(0, 2), progress=False)
    rb = run(SMOKE, ["fig3"], b, shard=(1, 2), progress=False)
    assert ra["trained"] > 0 and rb["trained"] > 0
    assert ra["assembled"] == [] and rb["assembled"] == []
    res = merge([a, b], tmp_path / "m", SMOKE, ["fig3"])
    assert res["assembled"] == ["fig3"]
    for p in (0.5, 0.9, 1.0):
        _, x = load_cell(tmp_path / "m", "fig3", "shared_bottom", p)
        _, y = load_cell(smoke_root, "fig3", "shared_bottom", p)
        np.testing.assert_allclose(x["final"], y["final"], rtol=1e-5)


CLUSTER_VARS = ("SLURM_", "OMPI_", "PMI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR")
REPO = Path(__file__).resolve().parents[1]


def _cli_env() -> dict:
    """A child's environment: CPU only, and no cluster for jax.distributed to detect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _free_port() -> int:
    import socket

    # The coordinator binds [::]:port where the host has IPv6, 0.0.0.0:port otherwise.
    try:
        sock = socket.socket(socket.AF_INET6)
        sock.bind(("::", 0))
    except OSError:
        sock = socket.socket(socket.AF_INET)
        sock.bind(("", 0))
    with sock:
        return sock.getsockname()[1]


@pytest.mark.slow
def test_jax_distributed_processes_train_the_shards(tmp_path, smoke_root):
    # Two processes join one jax.distributed job on this host; each trains its shard of the
    # chunks on its own devices, and the merged shards equal the single-process results.
    address = f"127.0.0.1:{_free_port()}"
    base = [sys.executable, "-m", "benchmark", "run", "fig3", "--profile", "smoke"]
    log_files = [tmp_path / f"log{i}" for i in range(2)]
    procs = []
    try:
        for i in range(2):
            with open(log_files[i], "w") as out:
                procs.append(
                    subprocess.Popen(
                        base + ["--distributed", "--coordinator", address]
                        + ["--num-processes", "2", "--process-id", str(i), "--no-progress"]
                        + ["--out", str(tmp_path / f"s{i}")],
                        stdout=out, stderr=subprocess.STDOUT, env=_cli_env(), cwd=REPO,
                    )
                )  # fmt: skip
        deadline = time.monotonic() + 600  # one deadline for the whole job
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, f in zip(procs, log_files, strict=True):
        log = f.read_text()
        assert proc.returncode == 0, log[-3000:]
        assert "this shard is done" in log
    shard_dirs = [tmp_path / f"s{i}" for i in range(2)]
    assert all(any((d / "chunks").glob("*/*.npz")) for d in shard_dirs)
    res = merge(shard_dirs, tmp_path / "m", SMOKE, ["fig3"])
    assert res["assembled"] == ["fig3"]
    for p in (0.5, 0.9, 1.0):
        _, x = load_cell(tmp_path / "m", "fig3", "shared_bottom", p)
        _, y = load_cell(smoke_root, "fig3", "shared_bottom", p)
        np.testing.assert_allclose(x["final"], y["final"], rtol=1e-5)


def test_summary_schema(smoke_root):
    records = build_summary(smoke_root)
    keys = {"mean", "std", "iqm", "iqm_ci", "q10", "q25", "median", "q75", "q90", "min"}
    assert records
    seen = set()
    for r in records:
        assert set(r) == {
            "experiment",
            "model",
            "correlation",
            "task",
            "n_runs",
            "n_diverged",
            "final_loss",
        }
        assert r["experiment"] in EXPERIMENTS and r["task"] in (1, 2)
        assert set(r["final_loss"]) == keys
        assert len(r["final_loss"]["iqm_ci"]) == 2
        assert isinstance(r["n_runs"], int) and r["n_runs"] > 0
        assert 0 <= r["n_diverged"] <= r["n_runs"]
        f = r["final_loss"]
        assert f["min"] <= f["q10"] <= f["median"] <= f["q90"]
        seen.add((r["experiment"], r["model"], r["correlation"], r["task"]))
    assert len(seen) == len(records)
    assert ("fig3", "shared_bottom", 0.5, 1) in seen


def test_cli_run_figures_report(smoke_root, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert cli.main(["figures", "--results", str(smoke_root), "--out", str(figs)]) == 0
    for name in (
        "fig3_shared_bottom",
        "fig4_models",
        "fig5_histograms",
        "relatedness",
        "mtl_gain",
        "gates",
    ):
        assert (figs / f"{name}.png").stat().st_size > 10_000
        assert (figs / f"{name}.csv").read_text().count("\n") > 2
    summary = json.loads((smoke_root / "summary.json").read_text())
    assert isinstance(summary, list) and summary
    capsys.readouterr()
    assert cli.main(["report", "--results", str(smoke_root)]) == 0
    out = capsys.readouterr().out
    assert "| experiment | model |" in out and "claim" in out
    claims = check_claims(smoke_root)
    assert len(claims) >= 8
    assert all(c["holds"] in (True, False, None) for c in claims)


def test_cli_list_json(capsys):
    assert cli.main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"architectures", "experiments"}
    assert out["experiments"] == ALL
    for info in out["architectures"].values():
        assert set(info) == {"params", "description", "paper"}
        assert isinstance(info["params"], int) and info["params"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope", "--profile", "smoke"], "unknown experiment nope; known experiments"),
        (["run", "fig3", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", "fig3", "--profile", "smoke", "--shard", "2/2"], "--shard"),
        (["run", "fig3", "--profile", "smoke", "--distributed", "--shard", "0/2"], "drop --shard"),
        (
            ["run", "fig3", "--profile", "smoke", "--distributed", "--num-processes", "2"],
            "--coordinator, --num-processes and --process-id go together",
        ),
        (
            ["run", "fig3", "--profile", "smoke", "--num-processes", "2"],
            "--coordinator, --num-processes and --process-id need --distributed",
        ),
        (
            ["run", "fig3", "--profile", "smoke", "--distributed", "--coordinator", "h:1"]
            + ["--num-processes", "2", "--process-id", "2"],
            "--process-id must be in [0, --num-processes)",
        ),
        (["figures", "--results", "/nonexistent/results"], "no results folder"),
        (["bench", "--models", "nope"], "unknown architecture 'nope'"),
        (["bench", "--runs", "0"], "--runs must be a positive integer"),
        (["bench", "--groups", "0"], "--groups takes positive integers or 'all', got '0'"),
        (["bench", "--groups", "some"], "--groups takes positive integers or 'all'"),
    ],
)
def test_cli_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_distributed_outside_a_cluster_says_what_to_pass():
    # A fresh process (this one has started JAX already, which initialize would refuse).
    res = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "fig3", "--profile", "smoke", "--distributed"],
        capture_output=True, text=True, env=_cli_env(), cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, res.stderr[-2000:]
    assert err[0].startswith("error: --distributed: jax.distributed.initialize failed")
    assert "pass --coordinator host:port, --num-processes and --process-id" in err[0]
    assert "before any JAX" not in err[0]


def test_profiles_are_consistent():
    for name in ("smoke", "quick", "default", "paper"):
        prof = get_profile(name)
        assert {0.5, 0.9, 1.0} | set(PLE_CORRS) <= set(prof.correlations)
        assert len(prof.correlations) >= 7
    default = get_profile("default")
    assert default.paper_runs == 200
    assert len(default.correlations) >= 11 and min(default.correlations) == 0.0
    assert math.isclose(max(default.correlations), 1.0)
    # Sweep cells reuse the paper cells' first chunks: runs must be whole chunks.
    assert default.paper_runs % default.chunk == 0 and default.sweep_runs % default.chunk == 0


def test_bench_json_schema(capsys):
    """`bench --json` prints one JSON object with the documented keys; no timing asserts."""
    argv = ["bench", "--quick", "--json", "--runs", "2", "--models", "shared_bottom"]
    assert cli.main(argv + ["--groups", "1", "all"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"peak_gflops", "cores", "architectures"} <= set(out)
    assert out["peak_gflops"] > 0 and out["cores"] >= 1
    entry = out["architectures"]["shared_bottom"]
    for key in (
        "engine_run_steps_per_s",
        "naive_run_steps_per_s",
        "speedup_vs_naive",
        "achieved_gflops",
        "efficiency",
        "compile_s",
        "peak_rss_mb",
    ):
        assert isinstance(entry[key], float) and math.isfinite(entry[key]) and entry[key] > 0
    # FLOPs per step from XLA's cost analysis: at least the forward matmul, 2*B*d*113.
    assert entry["flops_per_run_step"] >= 2 * 128 * 100 * 113
    # The efficiency divides by the best of the peak readings, which are all reported.
    assert out["peak_gflops"] == max(out["peak_gflops_readings"])
    assert math.isclose(entry["efficiency"], entry["achieved_gflops"] / out["peak_gflops"])
    mem = entry["in_memory"]
    for key in ("engine_run_steps_per_s", "naive_run_steps_per_s", "speedup_vs_naive"):
        assert isinstance(mem[key], float) and math.isfinite(mem[key]) and mem[key] > 0
    assert math.isclose(mem["efficiency"], mem["achieved_gflops"] / out["peak_gflops"])
    assert 0.0 <= entry["data_generation_share"] < 1.0
    # --quick skips the 1-core process; the full bench fills these two.
    assert entry["engine_run_steps_per_s_1_core"] is None and entry["scaling_vs_1_core"] is None
    # The engine's run-group size, and the sweep over the sizes asked for.
    assert out["group"] == default_group()
    sweep = out["group_sweep"]["shared_bottom"]
    assert set(sweep) == {"1", "all"} and all(v > 0 for v in sweep.values())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_bench_one_core_probe_runs_pinned():
    """The 1-core side of the scaling runs in a child pinned to one core with one device."""
    from benchmark.bench import one_core_rate
    from benchmark.engine import TrainConfig

    cfg = TrainConfig(steps=10, batch_size=8, eval_every=10, n_test=16)
    rate = one_core_rate("shared_bottom", cfg, 2)  # the child asserts its own pinning
    assert isinstance(rate, float) and math.isfinite(rate) and rate > 0
