"""End to end: the smoke profile runs every experiment; cells reused by spec, extending
without retraining, dry runs, figures, report, summary, resume, interrupts, shards, merge,
K = 3 tasks, and the command line's errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import numpy as np
import pytest

from benchmark import cli, experiments, models, runner, stats
from benchmark.protocol import PAPER_CORRS, PLE_CORRS, get_profile
from benchmark.report import build_summary, check_claims, stored_experiments
from benchmark.runner import ResultsError, load_experiment, merge, parse_shard, plan, run

SMOKE = get_profile("smoke")
DEFAULT = get_profile("default")
ALL = experiments.names(only_all=True)
REPO = Path(__file__).resolve().parents[1]


def _exps(names):
    return [experiments.get(n) for n in names]


def _every():
    return _exps(experiments.names())


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "smoke"
    res = run(SMOKE, _exps(ALL), root, progress=False)
    assert res["skipped"] == 0 and res["trained"] > 0
    assert sorted(res["assembled"]) == sorted(ALL)
    return root


@pytest.fixture
def new_arch():
    """A new architecture, as one new file in benchmark/models/ would register it."""
    name = "test_new_arch"

    @models.register(name, description="a test architecture", paper="none", label="New")
    class New(nn.Module):
        n_tasks: int = 2
        units: int = 4

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.n_tasks)(nn.relu(nn.Dense(self.units)(x))), None

    yield name
    models._REGISTRY.pop(name, None)


def test_every_experiment_has_its_cells(smoke_root):
    for name in ALL:
        res = load_experiment(smoke_root, name)
        cells = experiments.get(name).cells(SMOKE)
        assert [c.meta["key"] for c in res.cells] == [c.key() for c in cells]
        for key in ("profile", "versions", "git_commit", "hardware", "timings", "eval_steps"):
            assert key in res.manifest
        for cell in res.cells:
            n = cell.meta["n_runs"]
            assert cell.arrays["curves"].shape == (n, SMOKE.train.n_evals, 2)
            assert cell.final.shape == (n, 2) and cell.arrays["diverged"].shape == (n,)
            np.testing.assert_array_equal(cell.final, cell.arrays["curves"][:, -1])


def test_a_cell_shared_by_experiments_is_trained_once(smoke_root):
    # mtl_gain's Shared-Bottom at p=0.5 is fig4's: one spec, one file, the first runs.
    a = load_experiment(smoke_root, "fig4").by_model()["shared_bottom"][0.5]
    b = load_experiment(smoke_root, "mtl_gain").by_model()["shared_bottom"][0.5]
    assert a.meta["key"] == b.meta["key"]
    n = b.final.shape[0]
    np.testing.assert_array_equal(a.final[:n], b.final)
    keys = {c.key() for e in _exps(ALL) for c in e.cells(SMOKE)}
    assert {f.stem for f in (smoke_root / "cells").glob("*.npz")} == keys
    assert {0.5, 0.9, 1.0} | set(PLE_CORRS) <= set(SMOKE.correlations)


def test_cell_files_record_spec_commit_and_versions(smoke_root):
    f = next((smoke_root / "cells").glob("*.npz"))
    _, meta = runner.read_npz(f)
    assert meta["key"] == f.stem
    assert set(meta["spec"]) == {"model", "task", "corr", "train", "lr", "objective", "seed",
                                 "numerics"}  # fmt: skip
    assert meta["versions"]["jax"] and meta["git_commits"]
    chunk = next((smoke_root / "chunks").glob("*/*.npz"))
    _, cmeta = runner.read_npz(chunk)
    assert cmeta["spec"] == runner.read_npz(smoke_root / "cells" / f"{cmeta['key']}.npz")[1]["spec"]
    assert "git_commit" in cmeta and cmeta["versions"]["numpy"]


def test_rerun_trains_nothing(smoke_root):
    assert plan(SMOKE, _exps(ALL), smoke_root).counts()["runs_to_train"] == 0
    res = run(SMOKE, _exps(ALL), smoke_root, progress=False)
    assert res["trained"] == 0


def test_cells_count_as_finished_work_without_chunks(tmp_path, smoke_root):
    # A clone has the committed cell files but no training chunks.
    root = tmp_path / "clone"
    shutil.copytree(smoke_root, root, ignore=shutil.ignore_patterns("chunks"))
    assert plan(SMOKE, _exps(ALL), root).counts()["runs_to_train"] == 0


def test_resume_after_interruption(tmp_path, smoke_root):
    root = tmp_path / "r"
    run(SMOKE, _exps(["fig3"]), root, progress=False)
    shutil.rmtree(root / "cells")  # as if killed before any cell was complete
    chunk_files = sorted((root / "chunks").glob("*/*.npz"))
    before = {f: f.read_bytes() for f in chunk_files}
    chunk_files[0].unlink()
    res = run(SMOKE, _exps(["fig3"]), root, progress=False)
    assert res["trained"] == 1 and res["skipped"] == len(chunk_files) - 1
    a = load_experiment(root, "fig3").by_series()
    b = load_experiment(smoke_root, "fig3").by_series()
    for series, by_x in a.items():
        for x, cell in by_x.items():
            np.testing.assert_allclose(cell.final, b[series][x].final, rtol=1e-5)
    for f in chunk_files[1:]:
        assert f.read_bytes() == before[f]


def _stop_on_call(monkeypatch, n, stop=None):
    """Patch the runner's training calls so that call ``n`` stops the run: a
    KeyboardInterrupt before it trains, or ``stop()`` (a signal) once it has trained.
    Returns the real function."""
    real = runner._train_chunks
    calls = {"n": 0}

    def patched(call, root_):
        calls["n"] += 1
        if calls["n"] == n and stop is None:
            raise KeyboardInterrupt
        out = real(call, root_)
        if calls["n"] == n:
            stop()
        return out

    monkeypatch.setattr(runner, "_train_chunks", patched)
    return real


def test_interrupt_prints_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    real = _stop_on_call(monkeypatch, 3)
    argv = ["run", "fig3", "--profile", "smoke", "--out", str(root), "--no-progress", "--fuse", "0"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 chunk(s) saved" in err and "resume" in err
    # The first cell's two chunks were done: its cell file is written already (what a long
    # run commits as it goes); the experiment's manifest waits for its last cell.
    assert SMOKE.paper_runs == 2 * SMOKE.chunk
    written = [f.stem for f in (root / "cells").glob("*.npz")]
    assert len(written) == 1 and written[0] in {c.key() for c in _exps(["fig3"])[0].cells(SMOKE)}
    assert not (root / "fig3" / "manifest.json").exists()
    monkeypatch.setattr(runner, "_train_chunks", real)
    res = run(SMOKE, _exps(["fig3"]), root, progress=False)
    assert res["skipped"] == 0 and res["trained"] == 4 and res["assembled"] == ["fig3"]


def test_an_interrupt_keeps_finished_runs_in_the_cell_files(tmp_path, smoke_root, monkeypatch):
    """Interrupted mid-cell, the cell file keeps the runs of its finished leading chunks:
    a clone with the cell files only (no chunks) resumes from them and ends with the same
    numbers as an uninterrupted run."""
    root = tmp_path / "r"
    real = _stop_on_call(monkeypatch, 2)
    with pytest.raises(runner.Interrupted):
        run(SMOKE, _exps(["fig3"]), root, progress=False, fuse=0)
    first = _exps(["fig3"])[0].cells(SMOKE)[0]
    assert runner.stored_runs(root, first.key()) == SMOKE.chunk < first.n_runs
    meta = runner.read_meta(root / "cells" / f"{first.key()}.npz")
    assert meta["split"] == {"n": first.n_runs, "size": SMOKE.chunk}
    shutil.rmtree(root / "chunks")  # what a commit of cells/ keeps
    monkeypatch.setattr(runner, "_train_chunks", real)
    p = plan(SMOKE, _exps(["fig3"]), root)
    cells = _exps(["fig3"])[0].cells(SMOKE)
    assert p.counts()["runs_to_train"] == sum(c.n_runs for c in cells) - SMOKE.chunk
    res = run(SMOKE, _exps(["fig3"]), root, progress=False)
    assert res["assembled"] == ["fig3"]
    a = load_experiment(root, "fig3").by_series()
    b = load_experiment(smoke_root, "fig3").by_series()
    for series, by_x in a.items():
        for x, cell in by_x.items():
            assert cell.meta["n_runs"] == b[series][x].meta["n_runs"]
            np.testing.assert_allclose(cell.final, b[series][x].final, rtol=1e-5)


def test_sigterm_stops_like_ctrl_c(tmp_path, monkeypatch, capsys):
    """`kill` (SIGTERM), as a batch scheduler sends it, saves the finished work and exits
    130, as Ctrl-C does; the previous handler is restored afterwards."""
    import signal

    root = tmp_path / "r"
    _stop_on_call(monkeypatch, 1, stop=lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    argv = ["run", "fig3", "--profile", "smoke", "--out", str(root), "--no-progress", "--fuse", "0"]
    assert cli.main(argv) == 130
    assert "1 chunk(s) saved" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before
    first = _exps(["fig3"])[0].cells(SMOKE)[0]
    assert runner.stored_runs(root, first.key()) == SMOKE.chunk


def test_a_partial_cell_keeps_its_split():
    """A cell folded after some of its chunks keeps their split, so the chunks still to
    come (on disk from a fused call or another shard) keep their meaning."""
    spec = _exps(["fig3"])[0].cells(SMOKE)[0].spec
    first = runner._chunks(spec, 32, 200, 20)
    assert [c.size for c in first] == [19] * 9  # 171 runs, of which the cell keeps 168
    assert runner._chunks(spec, 146, 200, 20)[0].size == 18  # a fresh split from run 146
    kept = runner._chunks(spec, 146, 200, 20, size=19)
    assert kept == first[6:]


def test_a_chunk_of_another_split_is_not_reused(tmp_path):
    """A chunk file with the right start but another size (the cell was split otherwise
    before) does not count as done: the chunk is trained again, not misread."""
    cell = _exps(["fig3"])[0].cells(SMOKE)[0]
    root = tmp_path / "r"
    big = runner.Chunk(cell.spec, 0, cell.n_runs)
    runner._train_chunks([big], root)
    assert big.done(root)
    half = runner.Chunk(cell.spec, 0, cell.n_runs // 2)
    assert half.path(root) == big.path(root) and not half.done(root)
    todo = runner._chunks(cell.spec, 0, cell.n_runs, SMOKE.chunk)
    assert todo[0] == half and not any(c.done(root) for c in todo)


def test_fused_chunks_train_as_one_call_and_match(tmp_path, smoke_root, monkeypatch):
    """Chunks of one program (every spec field but p, lr and seed) train in one call and
    give each chunk its own file, with the numbers of chunk-by-chunk training."""
    exps = _exps(["fig4"])
    chunks = plan(SMOKE, exps, tmp_path / "x").chunks
    calls = runner.fused(chunks, 10_000)
    assert len(calls) == 3  # one per architecture: its three correlations fused
    assert sorted(c.spec.key() for call in calls for c in call) == sorted(
        c.spec.key() for c in chunks
    )
    assert all(len({c.spec.model for c in call}) == 1 for call in calls)
    assert [len(call) for call in runner.fused(chunks, SMOKE.chunk)] == [1] * len(chunks)
    assert runner.fused(chunks, 0) == [[c] for c in chunks]
    sizes = []
    from benchmark import engine

    original = engine.train_many

    def counting(keys, *a, **k):
        sizes.append(int(keys.shape[0]))
        return original(keys, *a, **k)

    monkeypatch.setattr(engine, "train_many", counting)
    root = tmp_path / "fused"
    res = run(SMOKE, exps, root, progress=False, fuse=10_000)
    assert res["trained"] == len(chunks) and len(sizes) == 3
    a, b = load_experiment(root, "fig4").by_model(), load_experiment(smoke_root, "fig4").by_model()
    for m, by_p in a.items():
        for p_, cell in by_p.items():
            np.testing.assert_allclose(cell.final, b[m][p_].final, rtol=1e-4, atol=1e-6)
    _, meta = runner.read_npz(next((root / "chunks").glob("*/*.npz")))
    assert meta["fused_runs"] == sum(c.size for c in chunks) // 3
    with pytest.raises(ValueError, match="fuse must be a number of runs >= 0"):
        run(SMOKE, exps, root, progress=False, fuse=-1)


def test_more_runs_extend_a_cell_without_retraining(tmp_path, smoke_root):
    root = tmp_path / "r"
    shutil.copytree(smoke_root, root, ignore=shutil.ignore_patterns("chunks"))
    bigger = dataclasses.replace(SMOKE, paper_runs=SMOKE.paper_runs + SMOKE.chunk)
    counts = plan(bigger, _exps(["fig3"]), root).counts()
    assert counts["runs_to_train"] == 3 * SMOKE.chunk  # one chunk per cell, nothing redone
    run(bigger, _exps(["fig3"]), root, progress=False)
    old, new = load_experiment(smoke_root, "fig3"), load_experiment(root, "fig3")
    for a, b in zip(old.cells, new.cells, strict=True):
        assert b.final.shape[0] == bigger.paper_runs
        np.testing.assert_array_equal(a.final, b.final[: SMOKE.paper_runs])


def test_a_new_architecture_trains_only_its_cells(tmp_path, smoke_root, new_arch, capsys):
    root = tmp_path / "r"
    shutil.copytree(smoke_root, root, ignore=shutil.ignore_patterns("chunks"))
    counts = plan(SMOKE, _exps(ALL), root).counts()
    n_corr = len(SMOKE.correlations)
    assert counts["cells_to_train"] == n_corr
    assert counts["runs_to_train"] == n_corr * SMOKE.sweep_runs
    assert counts["run_steps_to_train"] == n_corr * SMOKE.sweep_runs * SMOKE.train.steps
    # Figures name the registered architecture that has no results yet (`figures` draws
    # every experiment with cli.draw; relatedness's alone here).
    figs = tmp_path / "f"
    cli.draw(root, figs, _exps(["relatedness"]))
    err = capsys.readouterr().err
    assert f"no results yet for {new_arch}" in err and f"--models {new_arch}" in err
    argv = ["run", "relatedness", "--profile", "smoke", "--out", str(root), "--models", new_arch]
    assert cli.main(argv + ["--no-progress", "--figures", str(figs)]) == 0
    assert f"trained {n_corr} chunks" in capsys.readouterr().out
    res = load_experiment(root, "relatedness")
    assert {c.series for c in res.cells if c.meta["model"] == new_arch} == {"New"}
    assert "New" in (figs / "relatedness.csv").read_text()
    assert plan(SMOKE, _exps(ALL), root).counts()["runs_to_train"] == 0
    # The experiments that reuse relatedness's cells take in the new ones with it.
    manifest = root / "gradient_conflict" / "manifest.json"
    assert new_arch in {c.meta["model"] for c in load_experiment(root, "gradient_conflict").cells}
    assert new_arch in (figs / "gradient_conflict.csv").read_text()
    figures = ["figures", "--profile", "smoke", "--results", str(root), "--figures", str(figs)]
    assert cli.main(figures) == 0
    assert "no results yet" not in capsys.readouterr().err
    # A manifest left behind (assembled before the cells were): the note says what to run.
    stale = json.loads(manifest.read_text())
    stale["cells"] = [c for c in stale["cells"] if c["model"] != new_arch]
    manifest.write_text(json.dumps(stale))
    cli.draw(root, figs, _exps(["gradient_conflict"]))
    err = capsys.readouterr().err
    assert f"gradient_conflict: no results yet for {new_arch}; their cells are stored; " in err
    assert "`python -m benchmark run gradient_conflict --profile smoke` assembles them" in err
    assert cli.main(["run", "gradient_conflict", "--profile", "smoke", "--out", str(root),
                     "--figures", str(figs)]) == 0  # fmt: skip
    assert "trained 0 chunks" in capsys.readouterr().out
    assert new_arch in {c.meta["model"] for c in load_experiment(root, "gradient_conflict").cells}


def _stored_numerics(root: Path) -> int:
    _, meta = runner.read_npz(next((root / "cells").glob("*.npz")))
    return meta["spec"]["numerics"]


def test_default_dry_run_on_the_committed_results(new_arch, capsys, monkeypatch):
    from benchmark import engine

    root = REPO / "results" / "default"
    # The committed cells' numerics version: with it, only what is missing trains.
    monkeypatch.setattr(engine, "NUMERICS_VERSION", _stored_numerics(root))
    exps = _exps(ALL)
    old = [m for m in models.names() if m != new_arch]
    before = plan(DEFAULT, exps, root, models=old)
    stored = sum(min(runner.stored_runs(root, k), n) for k, (_, n) in before.need.items())
    assert stored > 0
    assert cli.main(["run", "all", "--dry-run", "--json", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    counts = json.loads(out)
    # The stored cells count as done, and a new architecture adds exactly its own cells
    # on top of what the rest still needs: 12 correlations x 20 runs.
    n = len(DEFAULT.correlations) * DEFAULT.sweep_runs
    assert counts["runs_to_train"] == before.counts()["runs_to_train"] + n
    assert counts["cells_to_train"] == before.counts()["cells_to_train"] + len(DEFAULT.correlations)
    assert counts["run_steps_to_train"] == counts["runs_to_train"] * DEFAULT.train.steps


def test_another_numerics_version_reuses_nothing(monkeypatch):
    from benchmark import engine

    root = REPO / "results" / "default"
    monkeypatch.setattr(engine, "NUMERICS_VERSION", _stored_numerics(root) + 100)
    p = plan(DEFAULT, _exps(ALL), root)
    assert p.counts()["runs_to_train"] == sum(n for _, n in p.need.values()) > 0


def test_dry_run_writes_nothing(tmp_path):
    root = tmp_path / "fresh"
    assert cli.main(["run", "--profile", "smoke", "--out", str(root), "--dry-run"]) == 0
    assert not root.exists()


def test_editing_a_preset_constant_plans_every_affected_cell(monkeypatch):
    import datagen.presets

    root = REPO / "results" / "default"
    from benchmark import engine

    monkeypatch.setattr(engine, "NUMERICS_VERSION", _stored_numerics(root))
    exps = _exps(ALL)
    before = plan(DEFAULT, exps, root).counts()["runs_to_train"]  # the new archs' runs
    spec = datagen.presets.PRESETS["kdd18"]
    edited = spec.replace(alpha=(spec.alpha[0] + 1e-4,) + spec.alpha[1:])
    monkeypatch.setitem(datagen.presets.PRESETS, "kdd18", edited)
    p = plan(DEFAULT, exps, root)
    assert len(p.need) == len({c.key() for e in exps for c in e.cells(DEFAULT)})
    assert p.counts()["runs_to_train"] == sum(n for _, n in p.need.values())
    # The preset's name is a label only: renaming it changes nothing.
    monkeypatch.setitem(datagen.presets.PRESETS, "kdd18", spec.replace(name="renamed"))
    assert plan(DEFAULT, exps, root).counts()["runs_to_train"] == before
    assert p.counts()["runs_to_train"] > before


def test_the_committed_default_results_load(tmp_path):
    """Every complete experiment in results/default loads, `make extend`'s included, and
    figures/ holds exactly the numbers its stored cells give (while the default profile
    trains, the complete ones)."""
    root = REPO / "results" / "default"
    stored = stored_experiments(root, _every())
    if not stored:
        pytest.skip("results/default holds no complete experiment yet")
    for exp in stored:
        res = load_experiment(root, exp.name)
        # final is (runs, tasks), the tasks its cell names (many_tasks: 2 to 16; else 2)
        assert res.cells and all(c.final.shape[1] == c.meta["n_tasks"] for c in res.cells)
        assert exp.name != "many_tasks" or {c.final.shape[1] for c in res.cells} == {2, 4, 8, 16}
        if exp.name in ("fig3", "fig4"):
            assert all(c.meta["n_runs"] == DEFAULT.paper_runs for c in res.cells)
    written = cli.draw(root, tmp_path, stored)
    csvs = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert written and csvs
    for name in csvs:
        assert (tmp_path / name).read_text() == (REPO / "figures" / name).read_text(), name


def test_three_tasks_end_to_end(tmp_path):
    root = tmp_path / "k3"
    res = run(SMOKE, _exps(["three_tasks"]), root, progress=False)
    assert res["assembled"] == ["three_tasks"]
    loaded = load_experiment(root, "three_tasks")
    for cell in loaded.cells:
        assert cell.final.shape == (SMOKE.sweep_runs, 3)
        assert cell.meta["n_tasks"] == 3 and len(cell.meta["corr"]) == 3
    records = build_summary(root, _exps(["three_tasks"]))
    assert {r["task"] for r in records} == {1, 2, 3}
    written = cli.draw(root, tmp_path / "f", _exps(["three_tasks"]))
    assert (tmp_path / "f" / "three_tasks.csv").read_text().count("\n") > 3
    assert written[0].stat().st_size > 10_000


def test_diverged_runs_are_excluded_for_every_task(tmp_path, smoke_root):
    root = tmp_path / "r"
    shutil.copytree(smoke_root, root, ignore=shutil.ignore_patterns("chunks"))
    cell = load_experiment(root, "fig3").cells[0]
    path = root / "cells" / f"{cell.meta['key']}.npz"
    arrays, meta = runner.read_npz(path)
    arrays["diverged"][0] = True  # finite losses, but the run diverged at some step
    runner.write_npz(path, arrays, meta)
    loaded = load_experiment(root, "fig3").cells[0]
    assert np.isnan(loaded.final[0]).all() and np.isfinite(loaded.final[1:]).all()
    records = [r for r in build_summary(root, _exps(["fig3"])) if r["x"] == cell.x]
    assert [r["n_diverged"] for r in records] == [1, 1]


def test_summary_schema(smoke_root):
    records = build_summary(smoke_root, _every())
    keys = {"mean", "std", "iqm", "iqm_ci", "q10", "q25", "median", "q75", "q90", "min"}
    seen = set()
    for r in records:
        assert set(r) == {"experiment", "series", "model", "objective", "x", "corr", "task",
                          "n_runs", "n_diverged", "final_loss"}  # fmt: skip
        assert r["experiment"] in ALL and r["task"] in (1, 2) and r["objective"] == "equal"
        assert set(r["final_loss"]) == keys
        assert isinstance(r["n_runs"], int) and r["n_runs"] > 0
        assert 0 <= r["n_diverged"] <= r["n_runs"]
        f = r["final_loss"]
        assert f["min"] <= f["q10"] <= f["median"] <= f["q90"]
        seen.add((r["experiment"], r["series"], r["x"], r["task"]))
    assert len(seen) == len(records)
    assert ("fig3", "Shared-Bottom (bottom_units=16)", 0.5, 1) in seen


def test_cli_figures_and_report(smoke_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default folders are relative to the working directory
    (tmp_path / "results").mkdir()
    shutil.copytree(smoke_root, tmp_path / "results" / "smoke")
    assert cli.main(["figures", "--profile", "smoke"]) == 0
    figs = tmp_path / "results" / "smoke" / "figures"  # not figures/: that is default's
    assert not (tmp_path / "figures").exists()
    for name in ("fig3_shared_bottom", "fig4_models", "fig5_histograms", "relatedness",
                 "mtl_gain", "gates", "prob_improvement", "relatedness_improvement"):  # fmt: skip
        assert (figs / f"{name}.png").stat().st_size > 10_000
        assert (figs / f"{name}.csv").read_text().count("\n") > 2
    # Every pair of the sweep's architectures at every correlation, once, inside its CI.
    res = load_experiment(tmp_path / "results" / "smoke", "relatedness")
    by = res.by_series()
    with open(figs / "relatedness_improvement.csv") as f:
        rows = list(csv.DictReader(f))
    n, xs = len(by), {x for v in by.values() for x in v}
    assert len(rows) == n * (n - 1) // 2 * len(xs) and n >= 2
    for r in rows:
        p, lo, hi = float(r["p_a_better"]), float(r["ci_lo"]), float(r["ci_hi"])
        assert 0 <= lo <= p <= hi <= 1
        x = round(float(r["correlation"]), 6)
        a, b = by[r["a"]][x].final.mean(-1), by[r["b"]][x].final.mean(-1)
        assert p == pytest.approx(stats.prob_better(a, b), abs=1e-5)
    capsys.readouterr()
    assert cli.main(["report", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "| experiment | series |" in out and "| claim | source |" in out
    assert "## Training time" in out and "| **total** |" in out
    claims = check_claims(tmp_path / "results" / "smoke", _every())
    declared = [c.name for e in _exps(ALL) for c in e.claims]
    assert [c["claim"] for c in claims] == declared and len(declared) >= 10
    for c in claims:
        assert isinstance(c["holds"], bool) and c["evidence"] and c["rule"]


def test_report_partial_lists_the_experiments_still_training(smoke_root, capsys):
    """`objectives` is not part of `run all`, but its equal-weight cells are relatedness
    cells: the smoke results hold some of its cells. `report --partial` says how many, and
    tests its claim on them (undecided: no other objective is stored)."""
    from benchmark.report import in_progress
    from benchmark.runner import load_stored_cells

    exp = experiments.get("objectives")
    res, n = load_stored_cells(smoke_root, SMOKE, exp)
    assert n == len(exp.cells(SMOKE)) and 0 < len(res.cells) < n and res.manifest["partial"]
    assert {c.objective for c in res.cells} == {"equal"}
    related = {c.meta["key"]: c for c in load_experiment(smoke_root, "relatedness").cells}
    for c in res.cells:  # the same runs as the experiment that trained them
        np.testing.assert_array_equal(c.final, related[c.meta["key"]].final)
    rows = {r["experiment"]: r for r in in_progress(smoke_root, _every(), SMOKE)}
    assert not set(rows) & set(ALL)  # complete experiments are not in progress
    assert (rows["objectives"]["stored"], rows["objectives"]["cells"]) == (len(res.cells), n)
    assert [c["holds"] for c in rows["objectives"]["claims"]] == [None]
    capsys.readouterr()
    argv = ["report", "--profile", "smoke", "--results", str(smoke_root)]
    assert cli.main(argv) == 0
    assert "still training" not in capsys.readouterr().out
    assert cli.main([*argv, "--partial"]) == 0
    out = capsys.readouterr().out
    assert f"**objectives**: {len(res.cells)} of {n} cells stored" in out


def test_figures_partial_draws_the_experiments_still_training(smoke_root, tmp_path, capsys):
    """`figures --partial` draws `objectives` from the cells stored so far into
    <figures>/partial/, says so in the caption, and leaves the complete experiments'
    figures where they are. A figure that needs a missing cell is skipped with a note."""
    from benchmark.experiments import objectives as exp_mod
    from benchmark.runner import load_stored_cells

    exp = experiments.get("objectives")
    res, n = load_stored_cells(smoke_root, SMOKE, exp)
    figs = tmp_path / "figs"
    argv = ["figures", "--profile", "smoke", "--results", str(smoke_root), "--figures", str(figs)]
    assert cli.main(argv) == 0
    assert not (figs / cli.PARTIAL).exists()  # only with --partial
    capsys.readouterr()
    assert cli.main([*argv, "--partial"]) == 0
    assert "partial/objectives.png" in capsys.readouterr().out
    part = figs / cli.PARTIAL
    assert sorted(f.stem for f in part.glob("*.png")) == ["objectives", "objectives_conflict"]
    assert (part / "objectives.png").stat().st_size > 10_000
    with open(part / "objectives.csv") as f:
        rows = list(csv.DictReader(f))
    by = {(c.meta["model"], round(c.x, 6)): c.final.mean(-1) for c in res.cells}
    assert len(rows) == len(res.cells) == len(by) < n
    for r in rows:  # the stored cells' numbers, and nothing else
        assert r["objective"] == "equal"
        vals = by[(r["model"], round(float(r["correlation"]), 6))]
        assert float(r["iqm"]) == pytest.approx(stats.iqm(vals), rel=1e-5)
    assert (figs / "relatedness.png").exists() and not (part / "relatedness.png").exists()
    # only equal weights is stored: no objective to set against it across the grid
    assert (part / "objectives_vs_equal.csv").read_text().splitlines() == [
        ",".join(exp_mod.VS_EQUAL)
    ]

    captions = []

    def needs_every_cell(res, out, caption):
        captions.append(caption)
        raise KeyError("mmoe")

    broken = dataclasses.replace(exp, figures=(needs_every_cell,))
    assert cli.draw_partial(smoke_root, tmp_path / "other", [broken], SMOKE) == []
    assert captions == [f"profile smoke · {SMOKE.train.steps:,} steps · batch "
                        f"{SMOKE.train.batch_size} · {SMOKE.sweep_runs} runs per point · "
                        f"partial: {len(res.cells)} of {n} cells"]  # fmt: skip
    assert "needs_every_cell needs cells that are not stored yet" in capsys.readouterr().err


def test_partial_needs_no_complete_experiment(smoke_root, tmp_path, capsys):
    """A folder that holds cells but no complete experiment (a first study still training):
    `figures` and `report` refuse it, and with --partial draw and report what is stored."""
    root = tmp_path / "smoke"
    shutil.copytree(smoke_root / "cells", root / "cells")
    figs = tmp_path / "figs"
    argv = ["figures", "--profile", "smoke", "--results", str(root), "--figures", str(figs)]
    assert cli.main(argv) == 2
    assert "no stored experiments" in capsys.readouterr().err
    assert cli.main([*argv, "--partial"]) == 0
    assert (figs / cli.PARTIAL / "relatedness.png").exists()
    assert not (root / "summary.json").exists()  # a summary of complete experiments only
    capsys.readouterr()
    assert cli.main(["report", "--profile", "smoke", "--results", str(root), "--partial"]) == 0
    out = capsys.readouterr().out
    assert "**relatedness**:" in out and "## The papers' claims" not in out


def test_the_device_check_runs_end_to_end_on_the_cpu(smoke_root, tmp_path, capsys):
    """`gpu-check --tiny` on the CPU: every section of its JSON, and the retrained smoke
    cell agrees with the stored one (on the same backend, bit for bit)."""
    argv = ["gpu-check", "--tiny", "--out", str(tmp_path / "gc"), "--results", str(smoke_root)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "run-steps/s" in out and "agree" in out
    report = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert report["schema"] == 1 and report["device"]["backend"] == "cpu"
    assert report["matmul_gflops"] > 0 and report["skipped"] == []
    (row,) = report["throughput"]
    assert row["model"] == "shared_bottom" and row["run_steps_per_s"] > 0
    assert 0 < row["efficiency"] < 1 and row["compile_s"] > 0
    s = report["paper_slice"]
    assert s["paper_run_steps"] > s["reproduce_run_steps"] > 0 and s["paper_projected_h"] > 0
    a = report["agreement"]
    assert a["agrees"] and a["max_abs_diff"] == 0.0 and a["profile"] == "smoke"
    assert cli.main([*argv, "--budget", "0"]) == 2
    assert "--budget must be" in capsys.readouterr().err


def test_training_time_counts_each_cell_once(smoke_root):
    from benchmark.report import training_time

    rows = training_time(smoke_root, _exps(ALL))
    assert [r["experiment"] for r in rows] == ALL
    runs: dict = {}
    for c in (c for e in _exps(ALL) for c in e.cells(SMOKE)):
        runs[c.key()] = max(runs.get(c.key(), 0), c.n_runs)
    assert sum(r["runs"] for r in rows) == sum(runs.values())
    assert sum(r["cells"] for r in rows) == len(runs)
    assert sum(r["run_steps"] for r in rows) == sum(runs.values()) * SMOKE.train.steps
    assert rows[0]["train_s"] > 0 and all(r["train_s"] >= 0 for r in rows)
    # The fig3/fig4 cells that relatedness shares count there: it adds only the others.
    earlier = {c.key() for e in _exps(ALL[: ALL.index("relatedness")]) for c in e.cells(SMOKE)}
    own = [c for c in experiments.get("relatedness").cells(SMOKE) if c.key() not in earlier]
    assert 0 < rows[ALL.index("relatedness")]["runs"] == sum(c.n_runs for c in own)
    assert rows[0]["cell_runs"] == {c.n_runs for c in experiments.get(ALL[0]).cells(SMOKE)}


def test_the_time_table_names_a_run_count_only_where_every_new_cell_has_it():
    from benchmark.report import _size

    row = {"cells": 3, "extended": 0, "cell_runs": {200}}
    assert _size(row) == "3 cells × 200 runs"
    # 6 cells of 20 or 80 runs, and 120 runs added to 2 cells of an earlier experiment:
    # 360 runs over 6 cells is no "× 60 runs".
    row = {"cells": 6, "extended": 2, "cell_runs": {20, 80}}
    assert _size(row) == "6 cells, and more runs of 2 earlier cells"
    assert _size({"cells": 4, "extended": 0, "cell_runs": {20, 80}}) == "4 cells"
    assert _size({"cells": 0, "extended": 1, "cell_runs": set()}) == "more runs of 1 earlier cell"


def test_cli_list_json(capsys):
    assert cli.main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"architectures", "experiments", "objectives", "profiles"}
    assert list(out["experiments"]) == experiments.names()
    assert [n for n, e in out["experiments"].items() if e["in_all"]] == ALL
    assert list(out["architectures"]) == models.names()
    for info in out["architectures"].values():
        assert set(info) == {"params", "label", "description", "paper"}
        assert isinstance(info["params"], int) and info["params"] > 0
    from benchmark import objectives

    assert list(out["objectives"]) == objectives.names() and "equal" in out["objectives"]
    for info in out["objectives"].values():
        assert {"description", "paper"} <= set(info) and info["description"] and info["paper"]


def test_shards_merge_to_the_same_results(tmp_path, smoke_root):
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run(SMOKE, _exps(["fig3"]), a, shard=(0, 2), progress=False)
    rb = run(SMOKE, _exps(["fig3"]), b, shard=(1, 2), progress=False)
    assert ra["trained"] > 0 and rb["trained"] > 0
    assert ra["assembled"] == [] and rb["assembled"] == []
    res = merge([a, b], tmp_path / "m", SMOKE, _exps(["fig3"]))
    assert res["assembled"] == ["fig3"]
    _assert_same_fig3(tmp_path / "m", smoke_root)


def test_a_chunk_keeps_its_shard_when_cells_are_stored(tmp_path, smoke_root):
    """A shard cut after completing a cell, then rerun, trains the same chunks as before
    minus that cell's: which shard trains a chunk never depends on what is on disk."""
    exps = _exps(ALL)
    root = tmp_path / "r"

    def shards():
        return [{(c.spec.key(), c.start) for c in plan(SMOKE, exps, root, (i, 3)).chunks}
                for i in range(3)]  # fmt: skip

    before = shards()
    every = {(c.spec.key(), c.start) for c in plan(SMOKE, exps, root).chunks}
    assert set().union(*before) == every and sum(map(len, before)) == len(every)
    assert all(before)  # each shard has work
    done = next((smoke_root / "cells").glob("*.npz"))
    (root / "cells").mkdir(parents=True)
    shutil.copy(done, root / "cells" / done.name)
    after = shards()
    for a, b in zip(before, after, strict=True):
        assert b == {c for c in a if c[0] != done.stem}


def _assert_same_fig3(root, reference):
    got, want = load_experiment(root, "fig3").cells, load_experiment(reference, "fig3").cells
    for x, y in zip(got, want, strict=True):
        assert x.meta["key"] == y.meta["key"]
        np.testing.assert_allclose(x.final, y.final, rtol=1e-5)


def test_a_failed_merge_writes_nothing(tmp_path, smoke_root, capsys):
    dest = tmp_path / "m"
    bad = tmp_path / "bad"
    (bad / "chunks" / "x").mkdir(parents=True)
    (bad / "chunks" / "x" / "000000.npz").write_bytes(b"garbage")
    argv = ["merge", str(smoke_root), str(bad), "--out", str(dest), "--profile", "smoke"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt results file" in err
    assert not dest.exists()
    assert cli.main(["merge", str(tmp_path / "missing"), "--out", str(dest)]) == 2
    assert "is not a folder" in capsys.readouterr().err and not dest.exists()


def test_corrupt_file_gets_clear_error(tmp_path, smoke_root):
    root = tmp_path / "r"
    shutil.copytree(smoke_root, root)
    key = load_experiment(root, "fig3").cells[0].meta["key"]
    (root / "cells" / f"{key}.npz").write_bytes(b"not an npz at all")
    with pytest.raises(ResultsError, match=r"corrupt results file .*delete it and rerun"):
        load_experiment(root, "fig3")
    argv = ["figures", "--profile", "smoke", "--results", str(root)]
    assert cli.main(argv + ["--figures", str(tmp_path / "f")]) == 2


CLUSTER_VARS = ("SLURM_", "OMPI_", "PMI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR")


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
    res = merge(shard_dirs, tmp_path / "m", SMOKE, _exps(["fig3"]))
    assert res["assembled"] == ["fig3"]
    _assert_same_fig3(tmp_path / "m", smoke_root)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope", "--profile", "smoke"], "unknown experiment nope; known experiments"),
        (["run", "fig3", "--profile", "huge"], "unknown profile 'huge' for --profile"),
        (["run", "fig3", "--profile", "smoke", "--models", "nope"], "--models: unknown"),
        (["run", "fig3", "--profile", "smoke", "--json"], "--json goes with --dry-run"),
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
        (["figures", "--profile", "huge"], "unknown profile 'huge' for --profile"),
        (["report", "--results", "/nonexistent/results"], "no stored experiments"),
        (["bench", "--models", "nope"], "unknown architecture 'nope'"),
        (["bench", "--runs", "0"], "--runs must be a positive integer"),
        (["bench", "--groups", "0"], "--groups takes positive integers or 'all', got '0'"),
        (["bench", "--groups", "some"], "--groups takes positive integers or 'all'"),
        # argparse's own errors: one line too, never the usage block
        ([], "the following arguments are required: command"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["run", "fig3", "--fuse", "-1"], "argument --fuse: a number of runs >= 0 or auto"),
        (["run", "fig3", "--fuse", "abc"], "argument --fuse: a number of runs >= 0 or auto"),
        (["run", "--num-processes", "abc"], "argument --num-processes: must be an integer >= 1"),
        (["run", "--process-id", "-1"], "argument --process-id: must be an integer >= 0"),
        (["run", "fig3", "--models"], "argument --models: expected at least one argument"),
        (["merge", "a"], "the following arguments are required: --out"),
        (["run", "fig3", "--bogus"], "unrecognized arguments: --bogus"),
        (["figures", "--bogus"], "unrecognized arguments: --bogus"),
        (["report", "--bogus"], "unrecognized arguments: --bogus"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["bench", "--bogus"], "unrecognized arguments: --bogus"),
        # errors that name their flag
        (["run", "fig3", "--profile", "smoke", "--shard", "-1/2"], "--shard i/n needs"),
        (["run", "fig3", "--profile", "smoke", "--dry-run", "--out", "/dev/null"], "--out: /dev"),
        (["run", "fig3", "--profile", "smoke", "--dry-run", "--figures", "/dev/null"], "--figures"),
        (["figures", "--figures", "/dev/null"], "--figures: /dev/null exists and is not a"),
        (["merge", "a", "--out", "/dev/null"], "--out: /dev/null exists and is not a directory"),
        # a selection with nothing in it
        (
            ["run", "fig3", "--profile", "smoke", "--models", "mmoe", "--dry-run"],
            "--models: fig3 has no cells of mmoe (its architectures: shared_bottom)",
        ),
    ],
)
def test_cli_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # a failed command writes nothing


def test_every_option_shows_its_default_in_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest in ("help",) or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings} has no description"
        text = p.format_help()
        assert "(default:" in text, name


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


def test_profiles_are_consistent():
    for name in ("smoke", "quick", "default", "paper"):
        prof = get_profile(name)
        assert {0.5, 0.9, 1.0} | set(PLE_CORRS) <= set(prof.correlations)
        assert len(prof.correlations) >= 7
    assert DEFAULT.paper_runs == 200
    # The default trains at the protocol the budget study chose (results/late/).
    late = get_profile("late")
    assert (DEFAULT.train, DEFAULT.lr) == (late.train, late.lr)
    assert len(DEFAULT.correlations) >= 11 and min(DEFAULT.correlations) == 0.0
    assert math.isclose(max(DEFAULT.correlations), 1.0)
    # Sweep cells reuse the paper cells' first chunks: runs must be whole chunks.
    assert DEFAULT.paper_runs % DEFAULT.chunk == 0 and DEFAULT.sweep_runs % DEFAULT.chunk == 0


def _tree(*roots: Path) -> dict:
    """Every file under ``roots``: its bytes and its time stamp."""
    return {
        f: (f.read_bytes(), f.stat().st_mtime_ns)
        for r in roots
        for f in sorted(r.rglob("*") if r.is_dir() else [r])
        if f.is_file()
    }


def test_a_run_that_trains_nothing_rewrites_nothing(tmp_path, capsys):
    """What `make reproduce` does on a clone: every cell is stored, so nothing trains, and
    the manifests (which record the run that trained them), the summary, the figures and
    the report are left as they are, bytes and time stamps."""
    root, figs, report = tmp_path / "r", tmp_path / "f", tmp_path / "report.md"
    argv = ["run", "fig3", "--profile", "smoke", "--out", str(root), "--figures", str(figs)]
    argv.append("--no-progress")
    report_argv = ["report", "--profile", "smoke", "--results", str(root), "--out", str(report)]
    assert cli.main(argv) == 0 and cli.main(report_argv) == 0
    path = root / "fig3" / "manifest.json"
    manifest = json.loads(path.read_text())  # as committed by another machine, long ago
    manifest.update(git_commit="0" * 40, created="2000-01-01T00:00:00Z")
    manifest["timings"]["this_invocation_s"] = 5456.77
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    for f in _tree(tmp_path):
        os.utime(f, ns=(10**18, 10**18))
    before = _tree(tmp_path)
    capsys.readouterr()
    assert cli.main(argv) == 0 and cli.main(report_argv) == 0
    assert "trained 0 chunks" in capsys.readouterr().out
    after = _tree(tmp_path)
    assert sorted(after) == sorted(before)
    changed = [str(f.relative_to(tmp_path)) for f in before if after[f] != before[f]]
    assert not changed, f"rewritten: {changed}"
    assert json.loads(path.read_text())["timings"]["this_invocation_s"] == 5456.77


def test_counters_count_the_runs_stored_in_cell_files(tmp_path, monkeypatch, capsys):
    """After an interrupt folded its finished chunks into the cell files, and on a clone
    (cell files, no chunks), the dry run and the rerun count the runs already stored."""
    root = tmp_path / "r"
    real = _stop_on_call(monkeypatch, 3)
    argv = ["run", "fig3", "--profile", "smoke", "--out", str(root), "--no-progress"]
    assert cli.main([*argv, "--fuse", "0"]) == 130
    shutil.rmtree(root / "chunks")  # what a commit of cells/ keeps
    monkeypatch.setattr(runner, "_train_chunks", real)
    cells = _exps(["fig3"])[0].cells(SMOKE)
    total = sum(c.n_runs for c in cells)
    capsys.readouterr()
    assert cli.main([*argv, "--dry-run", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    stored = (counts["runs_stored"], counts["cells_stored"], counts["cells"])
    assert stored == (2 * SMOKE.chunk, 1, len(cells))
    assert counts["runs_to_train"] == total - 2 * SMOKE.chunk
    assert cli.main([*argv, "--dry-run"]) == 0
    assert f"; {2 * SMOKE.chunk} runs already stored (1 of 3 cells complete)" in (
        capsys.readouterr().out
    )
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"({total - 2 * SMOKE.chunk} runs)" in out
    assert f"{2 * SMOKE.chunk} runs were stored already (1 of 3 cells complete)" in out
    # A clone with everything stored: every run counts, none trains.
    shutil.rmtree(root / "chunks")
    assert cli.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would train 0 runs" in out and f"{total} runs already stored (3 of 3" in out
    assert cli.main(argv) == 0
    assert f"{total} runs were stored already (3 of 3 cells complete)" in capsys.readouterr().out


def test_progress_in_a_log_is_a_plain_line_with_the_time_left(tmp_path, monkeypatch, capsys):
    """Where stderr is not a terminal, progress is a plain line of runs done and time left
    (tqdm would write every refresh of its bar into the log)."""
    monkeypatch.setattr(runner, "LOG_EVERY_S", 0.0)
    res = run(SMOKE, _exps(["fig3"]), tmp_path / "r", progress=True, fuse=0)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    total = sum(c.size for c in plan(SMOKE, _exps(["fig3"]), tmp_path / "x").chunks)
    lines = err.splitlines()
    assert lines[0].startswith(f"smoke: {total} runs to train")
    assert len(lines) == 1 + res["trained"]  # a line per call at LOG_EVERY_S = 0
    assert lines[-1].startswith(f"smoke: {total}/{total} runs (100%), ")
    assert all(" spent, about " in line and " left" in line for line in lines[1:])


def test_models_without_cells_in_an_experiment_get_a_note(tmp_path, capsys):
    argv = ["run", "fig3", "fig4", "--profile", "smoke", "--models", "mmoe", "--dry-run"]
    argv += ["--out", str(tmp_path / "r")]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "note: fig3 has no cells of mmoe (its architectures: shared_bottom)\n"
    assert f"in {len(PAPER_CORRS)} cells" in out


def test_a_merge_of_another_profiles_shards_is_refused(tmp_path, capsys):
    """Shards trained under one profile, merged under another: none of their pieces is a
    cell the other profile uses. The merge names the flag and the profile they belong to,
    and writes nothing; a merge that completes nothing says what each experiment lacks."""
    shard = tmp_path / "s0"
    run(SMOKE, _exps(["fig3"]), shard, shard=(0, 2), progress=False)
    dest = tmp_path / "m"
    assert cli.main(["merge", str(shard), "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"merge source {shard}: none of its " in err
    assert "under --profile default; they were trained under --profile smoke" in err
    assert not dest.exists()
    argv = ["merge", str(shard), "--out", str(dest), "--profile", "smoke", "--experiments", "fig3"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "assembled: none" in out
    assert err.startswith(f"note: no experiment is complete in {dest} (cells complete: fig3 ")
    assert "merge the other shards too" in err


def test_a_caption_gives_the_range_of_runs_where_the_cells_differ():
    """`stream_gap` trains 80 runs in four arms and 20 in the rest: its caption says
    20–80; an experiment whose cells agree gives their one count."""
    prof = SMOKE.to_dict()

    def res(*counts):
        cells = [runner.CellResult({"n_runs": n, "steps": SMOKE.train.steps}, {}) for n in counts]
        return runner.Results("x", {}, cells)

    assert "· 20–80 runs per point" in cli._caption(prof, res(20, 80, 20))
    assert "· 20 runs per point" in cli._caption(prof, res(20, 20))
