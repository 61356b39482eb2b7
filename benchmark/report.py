"""The summary of stored results, the claims' verdicts, and their markdown.

Reads stored results only (never trains). The experiments are passed in (the command line
takes them from the registry), so this module stays below the experiment files.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import stats
from .protocol import Experiment, Profile, Verdict
from .runner import Results, ResultsError, load_experiment, load_stored_cells, write_json

__all__ = [
    "stored_experiments",
    "build_summary",
    "write_summary",
    "summary_markdown",
    "check_claims",
    "claims_markdown",
    "in_progress",
    "progress_markdown",
    "training_time",
    "time_markdown",
]


def stored_experiments(root: Path, experiments: list[Experiment]) -> list[Experiment]:
    """The experiments of ``experiments`` that have stored results in ``root``."""
    return [e for e in experiments if (root / e.name / "manifest.json").exists()]


def build_summary(root: Path, experiments: list[Experiment], seed: int = 0) -> list[dict]:
    """One record per (experiment, series, x, task), tasks numbered 1..K.

    Each record: ``{"experiment", "series", "model", "objective", "x", "corr", "task",
    "n_runs", "n_diverged", "final_loss": {mean, std, iqm, iqm_ci, q10, q25, median, q75,
    q90, min}}``; ``corr`` is ``p`` or the cosine matrix, ``x`` the cell's x-axis value.
    """
    exps = stored_experiments(root, experiments)
    if not exps:
        raise ResultsError(f"no stored experiments in {root}; run `python -m benchmark run`")
    records = []
    for exp in exps:
        res = load_experiment(root, exp.name)
        for cell in res.cells:
            final = cell.final  # (runs, K); diverged runs are NaN for every task
            for k in range(final.shape[1]):
                s = stats.summarize(final[:, k], seed=seed)
                records.append(
                    {
                        "experiment": exp.name,
                        "series": cell.series,
                        "model": cell.meta["model"],
                        "objective": cell.objective,
                        "x": cell.x,
                        "corr": cell.meta["corr"],
                        "task": k + 1,
                        "n_runs": s["n_runs"],
                        "n_diverged": s["n_diverged"],
                        "final_loss": s["final_loss"],
                    }
                )
    return records


def write_summary(root: Path, experiments: list[Experiment]) -> Path:
    """Write ``root/summary.json`` and return its path."""
    path = root / "summary.json"
    write_json(path, build_summary(root, experiments))
    return path


def summary_markdown(records: list[dict]) -> str:
    """A markdown table of the summary, one row per record."""
    lines = [
        "| experiment | series | x | task | runs | diverged | mean | IQM [95% CI] | median |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        f = r["final_loss"]
        lines.append(
            f"| {r['experiment']} | {r['series']} | {r['x']:g} | {r['task']} | "
            f"{r['n_runs']} | {r['n_diverged']} | {f['mean']:.4f} | {f['iqm']:.4f} "
            f"[{f['iqm_ci'][0]:.4f}, {f['iqm_ci'][1]:.4f}] | {f['median']:.4f} |"
        )
    return "\n".join(lines)


def check_claims(root: Path, experiments: list[Experiment]) -> list[dict]:
    """Every claim of the stored experiments with its verdict.

    Returns records ``{"claim", "source", "words", "rule", "holds", "evidence"}``.
    """
    out = []
    for exp in stored_experiments(root, experiments):
        if exp.claims:
            out += _verdicts(exp, load_experiment(root, exp.name))
    return out


def _verdicts(exp: Experiment, res: Results, partial: bool = False) -> list[dict]:
    out = []
    for claim in exp.claims:
        try:
            v = claim.test(res)
        except (KeyError, ValueError, IndexError, ZeroDivisionError):
            if not partial:
                raise
            v = Verdict(None, "needs cells not stored yet")
        out.append(
            {
                "claim": claim.name,
                "source": claim.source,
                "words": claim.words,
                "rule": claim.rule,
                "holds": v.holds,
                "evidence": v.evidence,
            }
        )
    return out


def partly_stored(root: Path, experiments: list[Experiment], profile: Profile):
    """The experiments of ``experiments`` without stored results whose cells ``root``
    partly holds (a run still training, or cut): yields ``(exp, results, n_cells)``, the
    results holding the stored cells only (:func:`runner.load_stored_cells`). An
    experiment the profile cannot size (``budget`` under smoke) is passed over; a corrupt
    cell file raises :class:`ResultsError`."""
    done = {e.name for e in stored_experiments(root, experiments)}
    for exp in experiments:
        if exp.name in done:
            continue
        try:
            res, n = load_stored_cells(root, profile, exp)
        except ResultsError:  # a corrupt cell file: say so
            raise
        except ValueError:  # the profile cannot size its cells (budget under smoke): none
            continue
        if res.cells:
            yield exp, res, n


def in_progress(root: Path, experiments: list[Experiment], profile: Profile) -> list[dict]:
    """The experiments of :func:`partly_stored`, with their claims tested on the stored
    cells only: such a verdict can change as cells land, unless the claim reads only
    stored cells.

    Returns records ``{"experiment", "stored", "cells", "claims"}``, ``claims`` as
    :func:`check_claims` gives them.
    """
    return [
        {
            "experiment": exp.name,
            "stored": len(res.cells),
            "cells": n,
            "claims": _verdicts(exp, res, partial=True),
        }
        for exp, res, n in partly_stored(root, experiments, profile)
    ]


def progress_markdown(rows: list[dict]) -> str:
    """:func:`in_progress` as markdown: a line per experiment, then its claims' table."""
    parts = []
    for r in rows:
        parts.append(f"- **{r['experiment']}**: {r['stored']} of {r['cells']} cells stored")
        if r["claims"]:
            parts.append("\n" + claims_markdown(r["claims"]) + "\n")
    return "\n".join(parts)


def claims_markdown(claims: list[dict]) -> str:
    """Claims as a markdown table."""
    mark = {True: "yes", False: "**no**", None: "n/a"}
    lines = ["| claim | source | reproduces here | rule | evidence |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| {c['words']} | {c['source']} | {mark[c['holds']]} | {c['rule']} | {c['evidence']} |"
        )
    return "\n".join(lines)


def training_time(root: Path, experiments: list[Experiment]) -> list[dict]:
    """What training the stored experiments took, each run counted once, in the order of
    ``experiments``: a cell shared with an earlier experiment counts there; a cell that a
    later experiment asks more runs of counts its extra runs (not as a new cell) there.

    Returns records ``{"experiment", "cells", "runs", "run_steps", "train_s"}``:
    ``train_s`` is the wall time of the training calls (compilation included) that made
    those runs, as the cells recorded it, on whichever machines trained them.
    """
    seen: dict[str, int] = {}
    rows = []
    for exp in stored_experiments(root, experiments):
        manifest = json.loads((root / exp.name / "manifest.json").read_text())
        row = {"experiment": exp.name, "cells": 0, "runs": 0, "run_steps": 0, "train_s": 0.0}
        for r in manifest["cells"]:
            new = r["n_runs"] - seen.get(r["key"], 0)
            if new <= 0:
                continue
            row["cells"] += r["key"] not in seen  # a cell extended here counts its runs only
            seen[r["key"]] = r["n_runs"]
            row["runs"] += new
            row["run_steps"] += new * r["steps"]
            row["train_s"] += r["train_wall_s"] * new / r["n_runs"]
        rows.append(row)
    return rows


def time_markdown(rows: list[dict]) -> str:
    """:func:`training_time` as a markdown table with a total row."""
    lines = [
        "| experiment | new cells | new runs | run-steps | training time | run-steps/s |",
        "|---|---|---|---|---|---|",
    ]
    total = {k: sum(r[k] for r in rows) for k in ("cells", "runs", "run_steps", "train_s")}
    for r in [*rows, {"experiment": "**total**", **total}]:
        rate = f"{r['run_steps'] / r['train_s']:,.0f}" if r["train_s"] > 0 else "–"
        lines.append(
            f"| {r['experiment']} | {r['cells']} | {r['runs']} | {r['run_steps']:,} | "
            f"{r['train_s'] / 60:.1f} min | {rate} |"
        )
    return "\n".join(lines)
