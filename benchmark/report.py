"""The summary of stored results, the claims' verdicts, and their markdown.

Reads stored results only (never trains). The experiments are passed in (the command line
takes them from the registry), so this module stays below the experiment files.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from . import stats
from .protocol import REGIME_PROFILES, Experiment, Profile, Verdict, get_profile, regime
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
    "readme_blocks",
    "block_names",
    "verdicts_markdown",
    "experiment_blocks",
    "render_readme",
    "TEST_TIME",
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


def claims_by_regime(results: Path, experiments: list[Experiment]) -> tuple[list[str], list]:
    """The claims of every experiment stored in a finite data regime, decided in each
    regime of :data:`~benchmark.protocol.REGIME_PROFILES` where it is stored.

    Args:
      results: the folder of the profiles' folders (``results/``).
    Returns:
      the regimes' labels (``"stream"``, ``"1e5 points"``), and records ``{"claim",
      "words", "source", "verdicts": {label: (holds, evidence)}}``, a label absent where
      the experiment is not stored in that regime.
    """
    labels = [regime(get_profile(n)) for n in REGIME_PROFILES]
    stored = {
        n: [e.name for e in stored_experiments(results / n, experiments)] for n in REGIME_PROFILES
    }
    finite = {e for n in REGIME_PROFILES[1:] for e in stored[n]}
    rows: dict[str, dict] = {}
    for exp in experiments:
        if exp.name not in finite or not exp.claims:
            continue
        for name, label in zip(REGIME_PROFILES, labels, strict=True):
            if exp.name not in stored[name]:
                continue
            for c in _verdicts(exp, load_experiment(results / name, exp.name)):
                row = rows.setdefault(
                    c["claim"], {k: c[k] for k in ("claim", "words", "source")} | {"verdicts": {}}
                )
                row["verdicts"][label] = (c["holds"], c["evidence"])
    return labels, list(rows.values())


def regimes_markdown(labels: list[str], rows: list[dict]) -> str:
    """:func:`claims_by_regime` as a markdown table, a column per regime."""
    mark = {True: "**yes**", False: "no", None: "undecided"}
    lines = [
        "| claim | source | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for r in rows:
        cells = [r["words"], r["source"]]
        for label in labels:
            v = r["verdicts"].get(label)
            cells.append("not trained" if v is None else f"{mark[v[0]]}: {v[1]}")
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)


def readme_regimes(results: Path, experiments: list[Experiment]) -> str:
    """The README's table of the claims in each data regime."""
    labels, rows = claims_by_regime(results, experiments)
    if not rows:
        return (
            "No experiment with claims is stored in a finite regime yet (`make extend` "
            "trains `fig3` and `fig4` on 10^5 points per task).\n"
        )
    return regimes_markdown(labels, rows) + "\n"


def training_time(root: Path, experiments: list[Experiment]) -> list[dict]:
    """What training the stored experiments took, each run counted once, in the order of
    ``experiments``: a cell shared with an earlier experiment counts there; a cell that a
    later experiment asks more runs of counts its extra runs (not as a new cell) there.

    Returns records ``{"experiment", "cells", "extended", "cell_runs", "runs", "run_steps",
    "train_s"}``: ``cells`` counts its new cells, ``extended`` the earlier cells it adds
    runs to, ``cell_runs`` the distinct run counts of its new cells; ``train_s`` is the
    wall time of the training calls (compilation included) that made those runs, as the
    cells recorded it, on whichever machines trained them.
    """
    seen: dict[str, int] = {}
    rows = []
    for exp in stored_experiments(root, experiments):
        manifest = json.loads((root / exp.name / "manifest.json").read_text())
        row = {"experiment": exp.name, "cells": 0, "extended": 0, "cell_runs": set()}
        row |= {"runs": 0, "run_steps": 0, "train_s": 0.0}
        for r in manifest["cells"]:
            new = r["n_runs"] - seen.get(r["key"], 0)
            if new <= 0:
                continue
            if r["key"] in seen:  # a cell extended here counts its runs only
                row["extended"] += 1
            else:
                row["cells"] += 1
                row["cell_runs"].add(r["n_runs"])
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


# ----------------------------------------------------------------------------- README.md
# The README's numbers are generated: each block between a line ``<!-- generated: NAME -->``
# and a line ``<!-- /generated -->`` is rewritten from the stored results (and, for the
# test count, from the last measurement of the suite), and a test fails where the README
# differs from what this code writes (`make report` rewrites it).

TEST_TIME = "docs/test_time.json"  # beside the README: the suite's count and time
# Set by `make test-time` (tools/time_tests.py) in the run that records the count, where the
# test comparing the recorded count with the collected one skips itself.
COUNTING_RUN = "MTL_BENCHMARK_COUNTING_RUN"
_OPEN = "<!-- generated:"
_BLOCK = re.compile(  # a block's body holds no other opener: an unclosed one is an error
    r"^(<!-- generated: (?P<name>[a-z0-9_]+(?:\.[a-z0-9_]+)?) -->\n)"
    r"(?P<body>(?:(?!^<!-- generated:).)*?)^(<!-- /generated -->)$",
    re.M | re.S,
)


def _num(n: float) -> str:
    """``5 100``: thousands apart, as the README writes them."""
    return f"{n:,.0f}".replace(",", " ")


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min ({seconds / 3600:.1f} h)"


def _manifests(root: Path, experiments: list[Experiment]) -> dict[str, dict]:
    return {
        e.name: json.loads((root / e.name / "manifest.json").read_text())
        for e in stored_experiments(root, experiments)
    }


def _cores(manifests: dict[str, dict]) -> str:
    counts = {m.get("hardware", {}).get("cpu_count") for m in manifests.values()}
    return f"{counts.pop()} CPU cores" if len(counts) == 1 and None not in counts else "CPU"


_MARK = {True: "**yes**", False: "no", None: "undecided"}  # a claim's verdict in a table


def _row(cells: list[str]) -> str:
    """A markdown table row, each ``|`` inside a cell escaped."""
    return "| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |"


def readme_claims(root: Path, experiments: list[Experiment]) -> str:
    """The README's claims table: every claim of the stored experiments, its verdict and
    the interval that decides it."""
    manifests = _manifests(root, experiments)
    rows, runs, steps = [], {}, set()
    for exp in stored_experiments(root, experiments):
        if not exp.claims:
            continue
        m = manifests[exp.name]
        runs[exp.name] = max(c["n_runs"] for c in m["cells"])
        profile_steps = m["profile"]["train"]["steps"]
        steps.add(profile_steps)
        notes = [] if exp.in_all else ["`make extend`"]
        # an experiment whose cells train other steps than the profile's says so
        other = sorted({c["steps"] for c in m["cells"]} - {profile_steps})
        notes += [f"{n // 1000}k steps" for n in other]
        for c in _verdicts(exp, load_experiment(root, exp.name)):
            where = c["source"] + (f" ({', '.join(notes)})" if notes else "")
            rows.append(_row([c["words"], where, _MARK[c["holds"]], c["evidence"]]))
    if not rows:
        return "No experiment with claims is stored yet.\n"
    by_runs = Counter(runs.values())
    common = by_runs.most_common(1)[0][0]
    parts = [
        f"{n} runs per cell for {', '.join(e for e, r in runs.items() if r == n)}"
        for n in sorted(by_runs, reverse=True)
        if n != common
    ]
    parts.append(f"{common} for the rest" if parts else f"{common} runs per cell")
    at = f" at {steps.pop() // 1000}k steps" if len(steps) == 1 else ""
    head = f"| claim | source | reproduces{at} | deciding interval (paired; {'; '.join(parts)}) |"
    return "\n".join([head, "|---|---|---|---|", *rows]) + "\n"


def _time_rows(root: Path, experiments: list[Experiment]):
    """:func:`training_time`'s rows, split into ``run all``'s and the others."""
    in_all = {e.name: e.in_all for e in experiments}
    rows = training_time(root, experiments)
    return [r for r in rows if in_all[r["experiment"]]], [
        r for r in rows if not in_all[r["experiment"]]
    ]


def _total(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) for k in ("cells", "runs", "run_steps", "train_s")}


def _size(row: dict) -> str:
    """What a :func:`training_time` row trained: ``3 cells × 200 runs``, or ``6 cells``
    where their run counts differ, and the earlier cells it added runs to."""
    parts = []
    if row["cells"] or not row["extended"]:
        parts.append(f"{_num(row['cells'])} cells")
        if len(row["cell_runs"]) == 1 and not row["extended"]:
            parts[0] += f" × {_num(next(iter(row['cell_runs'])))} runs"
    if row["extended"]:
        n = row["extended"]
        parts.append(f"more runs of {_num(n)} earlier cell{'s' if n > 1 else ''}")
    return ", and ".join(parts)


def readme_time(root: Path, experiments: list[Experiment]) -> str:
    """The README's training-time table: each stored experiment's new cells and runs and
    the time their cells recorded, each run counted once; ``make reproduce``'s total."""
    manifests = _manifests(root, experiments)
    main, extra = _time_rows(root, experiments)

    def row(r: dict, what: str) -> str:
        return (
            f"| `{r['experiment']}`{what}: {_size(r)} | {_num(r['runs'])} | "
            f"{r['train_s'] / 60:.1f} min ({_num(r['run_steps'] / 1e6)} M run-steps) |"
        )

    lines = [f"| experiment | new runs | training time ({_cores(manifests)}) |", "|---|---|---|"]
    lines += [row(r, "") for r in main if r["runs"]]
    reuse = [f"`{r['experiment']}`" for r in main if not r["runs"]]
    if reuse:
        lines.append(f"| {', '.join(reuse)} | 0: the cells above | 0 |")
    t = _total(main)
    lines.append(
        f"| **`make reproduce`** | {_num(t['runs'])} | **{_hours(t['train_s'])}**, "
        f"{_num(t['run_steps'] / 1e6)} M run-steps |"
    )
    lines += [row(r, " (`make extend`)") for r in extra if r["runs"]]
    return "\n".join(lines) + "\n"


def readme_cost(root: Path, experiments: list[Experiment]) -> str:
    """The README's sentence on what a run from an empty folder costs."""
    manifests = _manifests(root, experiments)
    main, extra = _time_rows(root, experiments)
    t, e = _total(main), _total(extra)
    text = (
        f"From an empty folder (`python -m benchmark run all --out DIR`), it trains "
        f"{_num(t['runs'])} runs ({_num(t['run_steps'] / 1e6)} M run-steps): "
        f"**{t['train_s'] / 3600:.1f} hours on {_cores(manifests)}**, as the committed "
        f"cells recorded it"
    )
    if e["runs"]:
        names = ", ".join(f"`{r['experiment']}`" for r in extra if r["runs"])
        text += (
            f"; `make extend`'s stored studies ({names}) add {_num(e['runs'])} runs, "
            f"{e['train_s'] / 3600:.1f} hours"
        )
    return text + ".\n"


def readme_tests(measured: dict) -> str:
    """The README's test count, from the suite's last measurement (``TEST_TIME``)."""
    text = f"`make test` runs {_num(measured['tests'])} tests"
    if measured.get("wall_s"):
        text += (
            f", {measured['wall_s'] / 60:.1f} min on {measured['cpu_count']} CPU cores when "
            f"`make test-time` last timed them ({measured['date']}, the install not included)"
        )
    else:
        text += " (`make test-time` times the suite and writes its time here)"
    return text + ".\n"


def readme_blocks(
    root: Path, experiments: list[Experiment], tests: dict | None = None, names=None
) -> dict[str, str]:
    """The README's generated blocks among ``names`` (default: every one), by name:
    ``claims``, ``time``, ``cost`` and ``regimes`` from the results in ``root``; ``tests``
    from ``tests`` (:data:`TEST_TIME`'s content), where given."""
    makers = {
        "claims": lambda: readme_claims(root, experiments),
        "time": lambda: readme_time(root, experiments),
        "cost": lambda: readme_cost(root, experiments),
        "regimes": lambda: readme_regimes(root.parent, experiments),
    }
    if tests is not None:
        makers["tests"] = lambda: readme_tests(tests)
    return {n: make() for n, make in makers.items() if names is None or n in names}


def block_names(text: str) -> list[str]:
    """The names of the generated blocks in ``text``, in order. A ValueError names the
    line of an opener that opens no well-formed block (a name outside ``[a-z0-9_.]``, no
    closing line, or another opener before it)."""
    starts = {m.start() for m in _BLOCK.finditer(text)}
    for m in re.finditer(rf"^{re.escape(_OPEN)}.*$", text, re.M):
        if m.start() not in starts:
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(
                f"line {line}: {m.group(0)!r} opens no generated block: a name of "
                "[a-z0-9_] (EXPERIMENT.FUNCTION for an experiment's table) closed by a line "
                "'<!-- /generated -->'"
            )
    return [m["name"] for m in _BLOCK.finditer(text)]


def verdicts_markdown(exp: Experiment, res: Results) -> str:
    """An experiment's claims decided on its stored cells (all or some): the claim, whether
    it reproduces, and the interval that decides it."""
    lines = ["| claim | reproduces | deciding interval |", "|---|---|---|"]
    for c in _verdicts(exp, res, partial=True):
        lines.append(_row([f"`{c['claim']}`: {c['words']}", _MARK[c["holds"]], c["evidence"]]))
    return "\n".join(lines) + "\n"


def experiment_blocks(
    root: Path, profile: Profile, experiments: list[Experiment], names: list[str]
) -> dict[str, str]:
    """The generated blocks among ``names`` that an experiment writes, by name:
    ``EXPERIMENT.FUNCTION`` is that function of its :attr:`Experiment.tables`, and
    ``EXPERIMENT.claims`` its claims' verdicts (:func:`verdicts_markdown`), each from the
    cells of it that ``root`` stores under ``profile`` (all or some). A name no experiment
    writes is left out (:func:`render_readme` then names it)."""
    by = {e.name: e for e in experiments}
    blocks, loaded = {}, {}
    for name in dict.fromkeys(names):
        exp_name, _, table = name.partition(".")
        exp = by.get(exp_name)
        fns = {f.__name__: f for f in exp.tables} if exp else {}  # unique: Experiment checks
        if exp is None or (table not in fns and not (table == "claims" and exp.claims)):
            continue
        if exp_name not in loaded:
            loaded[exp_name] = load_stored_cells(root, profile, exp)[0]
        res = loaded[exp_name]
        if not res.cells:
            blocks[name] = f"No cell of `{exp_name}` is stored yet.\n"
        elif table == "claims":
            blocks[name] = verdicts_markdown(exp, res)
        else:
            blocks[name] = fns[table](res).rstrip("\n") + "\n"
    return blocks


def render_readme(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the body of every generated block replaced by ``blocks[name]``; a
    ValueError names a block that ``blocks`` lacks, or a malformed one (:func:`block_names`)."""
    block_names(text)

    def fill(m: re.Match) -> str:
        name = m["name"]
        if name not in blocks:
            raise ValueError(
                f"generated block {name!r} has no generator; known: {', '.join(blocks)}"
            )
        return m.group(1) + blocks[name] + m.group(4)

    return _BLOCK.sub(fill, text)
