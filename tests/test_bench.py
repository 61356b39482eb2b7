"""The bench: its JSON schema (no timing asserts) and its 1-core probe."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmark import cli
from benchmark.engine import default_group


def test_bench_json_schema(capsys):
    """`bench --json` prints one JSON object with the documented keys; no timing asserts."""
    argv = ["bench", "--quick", "--json", "--runs", "2", "--models", "shared_bottom"]
    assert cli.main(argv + ["--groups", "1", "all", "--objectives", "pcgrad", "rlw"]) == 0
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
    assert entry["flops_per_run_step"] >= 2 * out["batch_size"] * 100 * 113
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
    for regime in ("group_sweep", "group_sweep_stream"):
        sweep = out[regime]["shared_bottom"]
        assert set(sweep) == {"1", "all"} and all(v > 0 for v in sweep.values())
    # The objectives' cost: the engine's step with each, against equal weights.
    cost = out["objective_cost"]["shared_bottom"]
    assert list(cost) == ["equal", "pcgrad", "rlw"] and cost["equal"]["ratio"] == 1.0
    assert all(r["run_steps_per_s"] > 0 and r["ratio"] > 0 for r in cost.values())


def test_bench_measures_an_objective_only_where_it_trains():
    from benchmark.bench import _trains

    assert _trains("mmoe", "mgda_ub") and _trains("cgc", "pcgrad")
    assert not _trains("cgc", "mgda_ub")  # no registered representation


def test_bench_rejects_an_unknown_objective(capsys):
    assert cli.main(["bench", "--quick", "--objectives", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown objective 'nope'" in err


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_bench_one_core_probe_runs_pinned():
    """The 1-core side of the scaling runs in a child pinned to one core with one device."""
    from benchmark.bench import one_core_rate
    from benchmark.engine import TrainConfig

    cfg = TrainConfig(steps=10, batch_size=8, eval_every=10, n_test=16)
    rate = one_core_rate("shared_bottom", cfg, 2)  # the child asserts its own pinning
    assert isinstance(rate, float) and math.isfinite(rate) and rate > 0
