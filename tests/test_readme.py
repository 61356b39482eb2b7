"""The README's numbers cannot go stale: its generated blocks (the claims, the training
time, the cost, the test count) are what the stored results and the suite's measurement
give, and that measurement counts the tests pytest collects."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli, experiments, protocol, runner
from benchmark.experiments import many_tasks
from benchmark.report import (
    COUNTING_RUN,
    TEST_TIME,
    block_names,
    experiment_blocks,
    readme_blocks,
    render_readme,
)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEFAULT = REPO / "results" / "default"


def _every():
    return [experiments.get(n) for n in experiments.names()]


def _measured() -> dict:
    return json.loads((REPO / TEST_TIME).read_text())


def _documents() -> dict[Path, str]:
    """The README and every doc with a generated block."""
    files = [README, *sorted((REPO / "docs").glob("*.md"))]
    return {p: t for p in files if block_names(t := p.read_text())}


def test_the_readme_and_docs_hold_what_the_stored_results_give():
    docs = _documents()
    names = {n for text in docs.values() for n in block_names(text)}
    assert {"claims", "time", "cost", "tests"} <= set(block_names(README.read_text()))
    assert {"data_regime.where_markdown", "data_regime.effect_markdown",
            "many_tasks.loss_markdown", "many_tasks.claims"} <= names  # fmt: skip
    blocks = readme_blocks(DEFAULT, _every(), _measured(), names)
    blocks |= experiment_blocks(DEFAULT, protocol.get_profile("default"), _every(), names)
    for path, text in docs.items():
        want = render_readme(text, blocks)
        name = path.relative_to(REPO).as_posix()
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(True), want.splitlines(True), name, "generated", n=0
            )
        )
        assert want == text, f"{name} is stale; run `make report` to rewrite it:\n{diff[:3000]}"


def test_the_measured_count_is_the_collected_count():
    if os.environ.get(COUNTING_RUN):  # `make test-time` measures the count in this very run
        pytest.skip("the run that records the count")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    found = re.search(r"^(\d+) tests? collected", res.stdout, re.M)
    assert found, res.stdout[-2000:] + res.stderr[-2000:]
    collected, recorded = int(found.group(1)), _measured()["tests"]
    assert recorded == collected, (
        f"{TEST_TIME} records {recorded} tests, pytest collects {collected}: run "
        "`make test-time` (it runs the suite, records its count and time, and rewrites the "
        "README's)"
    )


def test_render_readme_fills_every_block_and_only_them():
    text = "a\n<!-- generated: x -->\nold\nlines\n<!-- /generated -->\nb\n<!-- generated: x -->\n"
    text += "<!-- /generated -->\n"
    out = render_readme(text, {"x": "new\n"})
    assert out == "a\n<!-- generated: x -->\nnew\n<!-- /generated -->\nb\n" \
        "<!-- generated: x -->\nnew\n<!-- /generated -->\n"  # fmt: skip
    assert render_readme(out, {"x": "new\n"}) == out
    with pytest.raises(ValueError, match="'x' has no generator"):
        render_readme(text, {"y": ""})


def test_a_malformed_block_is_an_error_not_a_silent_skip():
    """An opener with a name outside [a-z0-9_.], or without its closing line before the
    next opener, names its line; rendering refuses it too, so nothing is half-rewritten."""
    good = "<!-- generated: x -->\nold\n<!-- /generated -->\n"
    assert block_names(good + good) == ["x", "x"]
    for bad, line in (
        ("<!-- generated: Bad-Name -->\n<!-- /generated -->\n", 1),
        ("<!-- generated: x -->\nno end\n" + good, 1),
        (good + "<!-- generated: y -->\n", 4),
    ):
        with pytest.raises(ValueError, match=f"line {line}: .* opens no generated block"):
            block_names(bad)
        with pytest.raises(ValueError, match="opens no generated block"):
            render_readme(bad, {"x": "new\n", "y": ""})


def test_report_readme_rewrites_the_blocks_in_place(tmp_path, capsys):
    readme = tmp_path / "README.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / TEST_TIME).write_text(json.dumps({"tests": 7, "wall_s": 600.0, "cpu_count": 2,
                                                   "date": "2026-01-01"}))  # fmt: skip
    readme.write_text("# x\n<!-- generated: tests -->\nstale\n<!-- /generated -->\nend\n")
    doc, plain = tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md"
    doc.write_text("<!-- generated: many_tasks.loss_markdown -->\nold\n<!-- /generated -->\n")
    plain.write_text("# no generated block\n")
    results = tmp_path / "results"  # the stored cells; one small experiment to report
    results.mkdir()
    for name in ("cells", "fig3"):
        (results / name).symlink_to(DEFAULT / name)
    argv = ["report", "--results", str(results), "--readme", str(readme)]
    assert cli.main([*argv, "--out", str(tmp_path / "report.md")]) == 0
    assert readme.read_text() == (
        "# x\n<!-- generated: tests -->\n`make test` runs 7 tests, 10.0 min on 2 CPU cores when "
        "`make test-time` last timed them (2026-01-01, the install not included).\n"
        "<!-- /generated -->\nend\n"
    )
    stored = runner.load_stored_cells(
        results, protocol.get_profile("default"), experiments.get("many_tasks")
    )[0]
    table = many_tasks.loss_markdown(stored) if stored.cells else "No cell of `many_tasks` is"
    assert doc.read_text().startswith(
        "<!-- generated: many_tasks.loss_markdown -->\n" + table
    ) and doc.read_text().endswith("\n<!-- /generated -->\n")
    assert plain.read_text() == "# no generated block\n"
    err = capsys.readouterr().err
    assert "README.md: generated blocks rewritten" in err and "a.md: generated blocks" in err
    assert "b.md" not in err
    # A block it cannot fill stops it before any file is written, the README included.
    stale = "# x\n<!-- generated: tests -->\nstale\n<!-- /generated -->\nend\n"
    readme.write_text(stale)
    doc.write_text("<!-- generated: many_tasks.nope -->\n<!-- /generated -->\n")
    assert cli.main(argv) == 2
    assert "'many_tasks.nope' has no generator" in capsys.readouterr().err
    assert readme.read_text() == stale
    doc.unlink()
    (tmp_path / TEST_TIME).unlink()
    assert cli.main(argv) == 2
    assert "`make test-time` writes it" in capsys.readouterr().err
    # A results folder with nothing finished (a typo) rewrites nothing.
    empty = ["report", "--results", str(tmp_path / "nothing"), "--readme", str(readme)]
    assert cli.main(empty) == 2
    assert "holds no finished experiment" in capsys.readouterr().err
    assert readme.read_text() == stale


def test_the_claims_are_decided_in_each_data_regime_stored(tmp_path):
    """The regimes' table: the claims of the experiments stored in a finite regime, decided
    in every regime that stores them. Here `n1e5` holds a copy of the stream's fig4, so its
    verdicts equal the stream's; fig3, stored in the stream only, is left out."""
    from benchmark.report import claims_by_regime, readme_regimes, regimes_markdown

    results = tmp_path / "results"
    results.mkdir()
    assert "No experiment" in readme_regimes(results, _every())
    (results / "default").symlink_to(DEFAULT)
    (results / "n1e5").mkdir()
    for name in ("fig4", "cells"):
        (results / "n1e5" / name).symlink_to(DEFAULT / name)
    labels, rows = claims_by_regime(results, _every())
    assert labels == ["stream", "1e5 points"]
    fig4 = [c.name for c in experiments.get("fig4").claims]
    assert [r["claim"] for r in rows] == fig4
    for r in rows:
        assert r["verdicts"]["stream"] == r["verdicts"]["1e5 points"]
    table = regimes_markdown(labels, rows)
    assert table.count("\n") == len(fig4) + 1 and "| stream | 1e5 points |" in table


def test_the_readme_claims_table_tells_each_claim_apart_and_names_other_budgets():
    """Every row of the README's claims table reads differently (a claim decided in two
    regimes names its regime), and an experiment trained for other steps than the profile's
    (`many_tasks`: a quarter) says so beside its source; the profile's own say nothing."""
    from benchmark.report import readme_claims

    table = readme_claims(DEFAULT, _every())
    head, _, *rows = table.strip().splitlines()
    assert "reproduces at 160k steps" in head
    words = [r.split(" | ")[0] for r in rows]
    assert len(set(words)) == len(words)
    mt = [r for r in rows if "(in the stream)" in r or "(on 1e5 points per task)" in r]
    assert len(mt) == len(many_tasks.CLAIMS) == 8
    assert all("(`make extend`, 40k steps)" in r for r in mt)
    assert not any("k steps" in r.split(" | ")[1] for r in rows if r not in mt)


def test_the_single_task_baselines_task_1_is_the_same_run_at_every_correlation():
    """Why `data_regime` trains its baseline at p = 0 and 1 only: in every stored pair, task
    1's curves, final and early-stopped losses are equal bit for bit."""
    import numpy as np

    from benchmark import protocol, runner
    from benchmark.experiments import data_regime as dr

    prof = protocol.get_profile("default")
    res, _ = runner.load_stored_cells(DEFAULT, prof, experiments.get("data_regime"))
    by: dict = {}
    for c in res.cells:
        if c.meta["model"] == dr.BASELINE:
            by.setdefault(c.meta.get("n_train"), {})[c.x] = c
    pairs = [(d[0.0], d[1.0]) for d in by.values() if 0.0 in d and 1.0 in d]
    assert pairs, "no stored single-task pair"
    for a, b in pairs:
        for key in ("curves", "final", "best"):
            assert np.array_equal(a.arrays[key][..., 0], b.arrays[key][..., 0], equal_nan=True)


def _slug(heading: str) -> str:
    """A markdown heading's anchor, as GitHub writes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    """A link to a file names one in the repository, and its ``#anchor`` a heading there;
    a renamed section breaks the test, not the reader's link."""
    docs = [README, *sorted((REPO / "docs").glob("*.md"))]
    headings = {
        p.resolve(): {_slug(h) for h in re.findall(r"^#+ (.*)$", p.read_text(), re.M)} for p in docs
    }
    broken, checked = [], 0
    for doc in docs:
        for target, anchor in re.findall(r"\]\(([^)#\s:]*)(?:#([^)\s]+))?\)", doc.read_text()):
            path = (doc.parent / target).resolve() if target else doc.resolve()
            checked += 1
            if not path.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and path in headings and anchor not in headings[path]:
                broken.append(f"{doc.name}: {target}#{anchor}")
    assert checked > 50 and not broken, broken
