"""The bench: its JSON schema (no timing asserts), its one-line errors, its child processes
(the 1-core probe, the comparison against a git revision)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from benchmark import bench, cli
from benchmark.engine import default_group

REPO = Path(__file__).resolve().parents[1]
# Tiny sizes: every measurement runs, in about a minute.
TINY = ["--runs", "2", "--steps", "10", "--batch", "8", "--models", "shared_bottom"]


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _one_line_error(capsys, *parts):
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert "usage:" not in err
    for part in parts:
        assert part in err, err
    return err


def test_bench_json_schema(capsys):
    """`bench --quick --json` prints one JSON object with the documented keys."""
    argv = ["bench", "--quick", "--json", *TINY, "--n-train", "64"]
    flags = ["--groups", "1", "all", "--objectives", "pcgrad", "rlw", "--tasks", "2", "3"]
    assert cli.main(argv + flags) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["peak_gflops"] > 0 and out["cores"] >= 1 and out["devices"] >= 1
    assert (out["steps"], out["batch_size"], out["finite_set_n_train"]) == (10, 8, 64)
    assert out["runs"] >= 2 and out["runs"] % out["devices"] == 0  # whole runs per device
    entry = out["architectures"]["shared_bottom"]
    for key in (
        "engine_run_steps_per_s",
        "engine_samples_per_s",
        "naive_run_steps_per_s",
        "speedup_vs_naive",
        "achieved_gflops",
        "efficiency",
        "compile_s",
        "peak_rss_mb",
        "paper_protocol_hours_extrapolated",
    ):
        assert _positive(entry[key]), key
    # FLOPs per step from XLA's cost analysis: at least the forward matmul, 2*B*d*113.
    assert entry["flops_per_run_step"] >= 2 * out["batch_size"] * 100 * 113
    # The efficiency divides by the best of the peak readings, which are all reported.
    assert out["peak_gflops"] == max(out["peak_gflops_readings"])
    assert math.isclose(entry["efficiency"], entry["achieved_gflops"] / out["peak_gflops"])
    finite = entry["finite_set"]
    assert finite["n_train"] == 64 and _positive(finite["engine_run_steps_per_s"])
    ratio = finite["engine_run_steps_per_s"] / entry["engine_run_steps_per_s"]
    assert math.isclose(finite["ratio_to_streaming"], ratio)
    share = entry["data_share"]
    assert _positive(share["sampled_run_steps_per_s"]) and _positive(share["fed_run_steps_per_s"])
    assert 0.0 <= share["share"] < 1.0
    assert math.isclose(share["fed_efficiency"], share["fed_achieved_gflops"] / out["peak_gflops"])
    # --quick skips the 1-core process; the full bench fills these two.
    assert entry["engine_run_steps_per_s_1_core"] is None and entry["scaling_vs_1_core"] is None
    # The engine's run-group size, and the sweep over the sizes asked for.
    assert out["group"] == default_group()
    sweep = out["group_sweep"]["shared_bottom"]
    assert set(sweep) == {"1", "all"} and all(v > 0 for v in sweep.values())
    # The objectives' cost: the engine's step with each, against equal weights.
    cost = out["objective_cost"]["shared_bottom"]
    assert list(cost) == ["equal", "pcgrad", "rlw"] and cost["equal"]["ratio"] == 1.0
    assert all(r["run_steps_per_s"] > 0 and r["ratio"] > 0 for r in cost.values())
    # The cost of K tasks, for the many-task architectures measured (here Shared-Bottom).
    scaling = out["task_scaling"]
    assert set(scaling) <= set(bench.TASK_MODELS) and scaling
    assert all(set(r) == {"2", "3"} and min(r.values()) > 0 for r in scaling.values())


def test_bench_refuses_runs_beyond_memory_in_one_line(capsys, monkeypatch):
    """Too many runs: one line naming --runs and its range, before anything is allocated."""
    monkeypatch.setattr(bench, "peak_gflops", lambda *a: pytest.fail("measured"))
    assert cli.main(["bench", "--runs", "100000000000", "--models", "shared_bottom"]) == 2
    err = _one_line_error(capsys, "--runs must be in [1, ", "got 100000000000", "available")
    hi = int(err.split("[1, ")[1].split("]")[0])
    assert 1 <= hi < 100_000_000_000


def test_check_fits_names_the_flag_and_its_range():
    bench.check_fits(100, flag="--runs", value=10, lo=1, what="x", available=100)  # fits
    with pytest.raises(ValueError, match=r"^--runs must be in \[1, 25\] on this machine, got 100"):
        bench.check_fits(400, flag="--runs", value=100, lo=1, what="x", available=100)
    with pytest.raises(ValueError, match=r"--n-train must be in \[32, 2500\]"):
        bench.check_fits(4000, flag="--n-train", value=10_000, lo=32, what="x", available=1000)
    with pytest.raises(ValueError, match=r"not even --n-train 32 fits"):
        bench.check_fits(10**9, flag="--n-train", value=64, lo=32, what="x", available=10)
    with pytest.raises(ValueError, match=r"must be in \[1, 7\]"):  # the structural cap
        bench.check_fits(1, flag="--runs", value=8, lo=1, what="x", cap=7, available=100)


@pytest.mark.parametrize(
    "argv, parts",
    [
        (["--models", "nosuch"], ["--models: unknown architecture 'nosuch'", "shared_bottom"]),
        (["--runs", "abc"], ["--runs", "invalid int value: 'abc'"]),
        (["--runs", "0"], ["--runs must be a positive integer"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
        (["--batch", "8", "--n-train", "4"], ["--n-train must be an integer >= --batch (8)"]),
        (["--rounds", "2"], ["--rounds goes with --against"]),
        (["--against", "HEAD", "--memory"], ["--against compares", "drop --memory"]),
        (["--profile-step", "nope"], ["--profile-step: unknown architecture 'nope'"]),
        (["--quick", "--objectives", "nope"], ["unknown objective 'nope'"]),
        (["--tasks", "1"], ["--tasks", "a number of tasks K in [2, 64], got '1'"]),
        (["--against", "HEAD", "--tasks", "4"], ["--against compares", "--tasks"]),
    ],
)
def test_bench_argument_errors_are_one_line(argv, parts, capsys):
    assert cli.main(["bench", *argv]) == 2
    _one_line_error(capsys, *parts)


def test_bench_measures_an_objective_only_where_it_trains():
    assert bench.trains("mmoe", "mgda_ub") and bench.trains("cgc", "pcgrad")
    assert not bench.trains("cgc", "mgda_ub")  # no registered representation


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_bench_one_core_probe_runs_pinned():
    """The 1-core side of the scaling runs in a child pinned to one core with one device."""
    rate = bench.one_core_rate("shared_bottom", runs=2, steps=10, batch=8)  # checks pinning
    assert _positive(rate)


def _worktrees() -> set[str]:
    """The folders of this repository's worktrees."""
    out = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], cwd=REPO, capture_output=True, text=True
    ).stdout
    return {line for line in out.splitlines() if line.startswith("worktree ")}


def _head_has(text: str, path: str) -> bool:
    res = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True, text=True)
    return res.returncode == 0 and text in res.stdout


@pytest.mark.skipif(
    not _head_has('"--engine-only"', "benchmark/cli.py"),
    reason="needs a git checkout whose HEAD's bench has --engine-only",
)
def test_bench_against_a_revision_runs_both_in_children(capsys):
    """`bench --against HEAD`: this tree and a git worktree checkout of HEAD, each timed by
    `python -m benchmark bench --json` in a child; the checkout is removed afterwards."""
    before = _worktrees()
    argv = ["bench", "--against", "HEAD", "--rounds", "1", "--engine-only", "--json", *TINY]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert out["against"] == "HEAD" and out["commit"] == head.stdout.strip()
    assert out["flags"] == ["--engine-only", *TINY] and out["rounds"] == 1
    entry = out["architectures"]["shared_bottom"]
    assert _positive(entry["this_run_steps_per_s"]) and _positive(entry["rev_run_steps_per_s"])
    assert math.isclose(
        entry["speedup"], entry["this_run_steps_per_s"] / entry["rev_run_steps_per_s"]
    )
    assert _worktrees() == before


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout")
def test_bench_against_an_unknown_revision_is_one_line(capsys):
    before = _worktrees()
    assert cli.main(["bench", "--against", "no-such-revision", "--engine-only", *TINY]) == 2
    _one_line_error(capsys, "--against: 'no-such-revision' is not a git revision")
    assert _worktrees() == before


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout")
def test_bench_against_removes_the_checkout_when_a_child_fails(capsys):
    """A flag the revision's bench refuses: one line with the child's error; no worktree left."""
    before = _worktrees()
    argv = ["bench", "--against", "HEAD", "--rounds", "1", "--models", "shared_bottom"]
    assert cli.main(argv + ["--runs", "100000000000"]) == 2
    _one_line_error(capsys, "failed (exit status 2): --runs must be in [1, ")
    assert _worktrees() == before
