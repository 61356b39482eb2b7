"""``python -m benchmark``: list, run, merge, figures, report, bench.

The top layer: it takes the experiments from the registry and hands them to the runner,
the report and the experiments' own figure functions.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from datagen.cli import OneLineParser, creatable_dir, int_in, writable_file

from .runner import Interrupted, ResultsError


def _experiments(args_names: list[str]) -> list:
    from . import experiments

    if not args_names or args_names == ["all"]:
        return [experiments.get(n) for n in experiments.names(only_all=True)]
    return [experiments.get(n) for n in dict.fromkeys(args_names)]


def _every_experiment() -> list:
    from . import experiments

    return [experiments.get(n) for n in experiments.names()]


def _results_root(args, profile) -> Path:
    return Path(args.results) if args.results else Path("results") / profile.name


def figures_dir(profile_name: str) -> Path:
    """Where a profile's figures go: ``figures/`` for default, else ``results/<p>/figures``."""
    if profile_name == "default":
        return Path("figures")
    return Path("results") / profile_name / "figures"


def _check_models(models: list[str] | None, flag: str = "--models") -> list[str] | None:
    if not models:
        return None
    from .models import names

    unknown = [m for m in models if m not in names()]
    if unknown:
        raise ValueError(
            f"{flag}: unknown architecture {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(names())}"
        )
    return list(dict.fromkeys(models))


def _check_selection(exps: list, profile, models: list[str]) -> None:
    """``--models`` against the experiments' cells: a ValueError if no experiment has a
    cell of any of them (nothing to train, say why), a note for each that has none."""
    have = {e.name: list(dict.fromkeys(c.model.name for c in e.cells(profile))) for e in exps}
    extra = {e.name for e in exps if e.extra_cells(profile, models)}  # trains them on request
    without = [n for n, archs in have.items() if not set(archs) & set(models) and n not in extra]

    def why(n: str) -> str:
        return f"{n} has no cells of {', '.join(models)} (its architectures: {', '.join(have[n])})"

    if len(without) == len(exps):
        raise ValueError(f"--models: {'; '.join(why(n) for n in without)}")
    for n in without:
        print(f"note: {why(n)}", file=sys.stderr)


def cmd_list(args) -> None:
    from . import objectives
    from .models import get, names, param_count
    from .protocol import PROFILES

    archs = {}
    for n in names():
        arch = get(n)
        archs[n] = {
            "params": param_count(arch.cls()),
            "label": arch.label,
            "description": arch.description,
            "paper": arch.paper,
        }
    exps = {
        e.name: {
            "description": e.description,
            "in_all": e.in_all,
            "claims": [c.name for c in e.claims],
        }
        for e in _every_experiment()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "architectures": archs,
                    "experiments": exps,
                    "objectives": objectives.describe(),
                    "profiles": list(PROFILES),
                }
            )
        )
        return
    print("architectures (parameters at the paper defaults, d = 100, K = 2):")
    width = max(map(len, archs))
    for n, a in archs.items():
        print(f"  {n:<{width}} {a['params']:>6}  {a['description']}  [{a['paper']}]")
    print("experiments (* = part of `run all`):")
    width = max(map(len, exps))
    for n, e in exps.items():
        print(f"  {n:<{width}} {'*' if e['in_all'] else ' '} {e['description']}")
    print("profiles: " + ", ".join(PROFILES))


# A shard that finishes early waits for the others at JAX's shutdown barrier; JAX's default
# 5 minutes would end the job's slower shards. A week is longer than any profile's shard.
SHUTDOWN_TIMEOUT_S = 7 * 24 * 3600


def _job_flags(args) -> list:
    """``--coordinator``, ``--num-processes`` and ``--process-id`` (None where not given)."""
    return [args.coordinator, args.num_processes, args.process_id]


def _check_job_flags(args) -> None:
    given = _job_flags(args)
    if not args.distributed:
        if any(v is not None for v in given):
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
        return
    if args.shard is not None:
        raise ValueError("--distributed takes the shard from the job; drop --shard")
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError(
            "--coordinator, --num-processes and --process-id go together (or give none, "
            "and JAX reads them from the cluster's environment)"
        )
    if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
        raise ValueError(
            f"--process-id must be in [0, --num-processes), got {args.process_id} "
            f"of {args.num_processes}"
        )


def _join_distributed(args) -> tuple[int, int]:
    """Join the job with ``jax.distributed``; this process's shard ``(index, count)``.

    Without ``--coordinator``, JAX reads the cluster's environment (SLURM, Open MPI, ...).
    Each process trains its shard of the chunks on its own devices. The runs are
    independent, so the processes exchange only JAX's heartbeats and its shutdown barrier:
    a process that crashes ends the others too, and a rerun resumes every shard.
    """
    import jax

    try:
        jax.distributed.initialize(
            args.coordinator,
            args.num_processes,
            args.process_id,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
        )
    except (RuntimeError, ValueError) as e:
        hint = ""
        if args.coordinator is None:
            hint = (
                "; outside a cluster that JAX recognises, pass --coordinator host:port, "
                "--num-processes and --process-id"
            )
        raise ValueError(f"--distributed: jax.distributed.initialize failed ({e}){hint}") from None
    return jax.process_index(), jax.process_count()


def cmd_run(args) -> None:
    from .protocol import get_profile
    from .runner import parse_shard, plan, run

    profile = get_profile(args.profile)
    exps = _experiments(args.experiments)
    models = _check_models(args.models)
    if models:
        _check_selection(exps, profile, models)
    _check_job_flags(args)
    if args.json and not args.dry_run:
        raise ValueError("--json goes with --dry-run")
    shard = (0, 1) if args.distributed else parse_shard(args.shard)
    root = Path(args.out) if args.out else Path("results") / profile.name
    creatable_dir(str(root), "--out")
    if args.figures and not args.no_figures:
        creatable_dir(args.figures, "--figures")
    if args.dry_run:
        counts = plan(profile, exps, root, shard, models).counts()
        if args.json:
            print(json.dumps(counts))
        else:
            print(
                f"{profile.name}: would train {counts['runs_to_train']} runs "
                f"({counts['run_steps_to_train']:,} run-steps) in {counts['cells_to_train']} "
                f"cells, {counts['chunks_to_train']} chunks; {counts['runs_stored']} runs "
                f"already stored ({counts['cells_stored']} of {counts['cells']} cells "
                f"complete); results in {root}"
            )
        return
    if args.distributed:
        shard = _join_distributed(args)
        if not args.out and shard[1] > 1:
            root = Path("results") / f"{profile.name}-shard{shard[0]}of{shard[1]}"
    t0 = time.perf_counter()
    res = run(
        profile,
        exps,
        root,
        shard=shard,
        models=models,
        progress=not args.no_progress,
        fuse=args.fuse,
        also=_every_experiment(),  # those that reuse these cells take in what is new
    )
    print(
        f"{profile.name}: trained {res['trained']} chunks ({res['runs_trained']} runs) in "
        f"{time.perf_counter() - t0:.1f} s; {res['runs_stored']} runs were stored already "
        f"({res['cells_stored']} of {res['cells']} cells complete); results in {root}"
    )
    if res["assembled"]:
        _write_outputs(root, profile, res["assembled"], args.figures, args.no_figures)
    elif shard[1] > 1:
        print("this shard is done; combine the shards with `python -m benchmark merge`")


def _write_outputs(root: Path, profile, names, figures: str | None, no_figures: bool) -> None:
    from .report import write_summary

    print(f"summary: {write_summary(root, _every_experiment())}")
    if not no_figures:
        out = Path(figures) if figures else figures_dir(profile.name)
        for path in draw(root, out, [e for e in _every_experiment() if e.name in names]):
            print(f"figure: {path}")


def draw(root: Path, out: Path, exps: list, required: bool = True) -> list[Path]:
    """Draw the figures of every experiment of ``exps`` stored in ``root`` into ``out``;
    none stored is an error if ``required``."""
    from .models import names as arch_names
    from .protocol import PROFILES
    from .report import stored_experiments
    from .runner import load_experiment, stale_cells, stored_runs

    todo = stored_experiments(root, exps)
    if not todo and not required:
        return []
    if not todo:
        raise ResultsError(f"no stored experiments in {root}; run `python -m benchmark run`")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for exp in todo:
        res = load_experiment(root, exp.name)
        prof = res.manifest["profile"]
        caption = _caption(prof, res)
        for fn in exp.figures:
            written += fn(res, out, caption)
        current = PROFILES.get(prof["name"])
        stale = stale_cells(root, exp, current) if current else []
        if stale:
            print(
                f"note: {exp.name}: {len(stale)} stored cells come from specs the current "
                f"code no longer produces; `python -m benchmark run {exp.name} --profile "
                f"{prof['name']}` retrains them",
                file=sys.stderr,
            )
        drawn = {c.meta["model"] for c in res.cells}
        wanted = exp.cells(current) if current else ()
        missing = [m for m in arch_names() if m in {c.model.name for c in wanted} - drawn]
        if missing:
            stored = all(
                stored_runs(root, c.key()) >= c.n_runs for c in wanted if c.model.name in missing
            )
            what = (
                f"their cells are stored; `python -m benchmark run {exp.name} --profile "
                f"{prof['name']}` assembles them and trains nothing"
                if stored
                else f"`python -m benchmark run {exp.name} --profile {prof['name']} --models "
                f"{' '.join(missing)}` trains them"
            )
            print(
                f"note: {exp.name}: no results yet for {', '.join(missing)}; {what}",
                file=sys.stderr,
            )
    return written


def _caption(prof: dict, res, extra: str = "") -> str:
    """The profile, the steps (the cells' own where they all train another number of
    steps than the profile's, as ``many_tasks`` does), the batch and the runs per point
    (their range where the cells differ, as in ``stream_gap``)."""
    steps = {c.meta.get("steps", prof["train"]["steps"]) for c in res.cells}
    steps = steps.pop() if len(steps) == 1 else prof["train"]["steps"]
    runs = sorted({int(c.meta["n_runs"]) for c in res.cells})
    runs = f"{runs[0]}–{runs[-1]}" if len(runs) > 1 else f"{res.n_runs}"
    return (
        f"profile {prof['name']} · {steps:,} steps · batch "
        f"{prof['train']['batch_size']} · {runs} runs per point{extra}"
    )


PARTIAL = "partial"  # the subfolder of the figures folder for experiments still training


def draw_partial(root: Path, out: Path, exps: list, profile) -> list[Path]:
    """Draw the figures of the experiments of ``exps`` that ``root`` holds only some cells
    of (still training, or cut) into ``out/partial/``, from those cells only; each
    caption says how many of the experiment's cells are stored. An experiment whose
    figures need a cell that is missing is skipped with a note."""
    from .report import partly_stored

    written = []
    for exp, res, n in partly_stored(root, exps, profile):
        (out / PARTIAL).mkdir(parents=True, exist_ok=True)
        caption = _caption(
            res.manifest["profile"], res, f" · partial: {len(res.cells)} of {n} cells"
        )
        for fn in exp.figures:
            try:
                written += fn(res, out / PARTIAL, caption)
            except (KeyError, IndexError, ValueError) as e:  # a figure that needs every cell
                print(
                    f"note: {exp.name}: {fn.__name__} needs cells that are not stored yet "
                    f"({type(e).__name__}: {e})",
                    file=sys.stderr,
                )
    return written


def cmd_merge(args) -> None:
    from .protocol import get_profile
    from .report import write_summary
    from .runner import merge

    profile = get_profile(args.profile)
    creatable_dir(args.out, "--out")
    res = merge(
        [Path(s) for s in args.sources],
        Path(args.out),
        profile,
        _experiments(args.experiments),
        also=_every_experiment(),
    )
    print(f"copied {res['copied']} files; assembled: {', '.join(res['assembled']) or 'none'}")
    if res["assembled"]:
        print(f"summary: {write_summary(Path(args.out), _every_experiment())}")
    else:
        from .runner import stored_runs

        lacking = []
        for exp in _experiments(args.experiments):
            cells = exp.cells(profile)
            have = sum(stored_runs(Path(args.out), c.key()) >= c.n_runs for c in cells)
            lacking.append(f"{exp.name} {have} of {len(cells)}")
        print(
            f"note: no experiment is complete in {args.out} (cells complete: "
            f"{', '.join(lacking)}); merge the other shards too, or finish the cells with "
            f"`python -m benchmark run ... --profile {profile.name} --out {args.out}`",
            file=sys.stderr,
        )


def cmd_figures(args) -> None:
    from .protocol import get_profile
    from .report import stored_experiments, write_summary

    profile = get_profile(args.profile)
    root = _results_root(args, profile)
    out = Path(args.figures) if args.figures else figures_dir(profile.name)
    creatable_dir(str(out), "--figures")
    if not root.is_dir():
        raise ResultsError(f"no results folder {root}; run `python -m benchmark run` first")
    # With --partial, an experiment still training is enough to draw.
    written = draw(root, out, _every_experiment(), required=not args.partial)
    if args.partial:
        written += draw_partial(root, out, _every_experiment(), profile)
        if not written:
            raise ResultsError(f"no stored cells of any experiment in {root}")
    if stored_experiments(root, _every_experiment()):
        write_summary(root, _every_experiment())
    for path in written:
        print(f"figure: {path}")


def cmd_report(args) -> None:
    from .protocol import REGIME_PROFILES, get_profile
    from .report import (
        build_summary,
        check_claims,
        claims_by_regime,
        claims_markdown,
        in_progress,
        progress_markdown,
        regimes_markdown,
        stored_experiments,
        summary_markdown,
        time_markdown,
        training_time,
    )
    from .runner import write_bytes

    profile = get_profile(args.profile)
    root = _results_root(args, profile)
    if args.out:
        writable_file(args.out, "--out")
    if args.readme and not Path(args.readme).is_file():
        raise ValueError(f"--readme: no file {args.readme}")
    exps = _every_experiment()
    # With --partial, an experiment still training is enough to report.
    stored = stored_experiments(root, exps)
    if args.readme and not stored:
        raise ValueError(f"--readme: {root} holds no finished experiment to write it from")
    # Rendered first, so that a document it cannot fill stops it before any work; written
    # last, once the report is made.
    documents = _render_documents(Path(args.readme), root, profile, exps) if args.readme else {}
    records = build_summary(root, exps) if stored or not args.partial else []
    claims = check_claims(root, exps)
    parts = [f"## Results in {root}\n"]
    if claims:
        parts += ["## The papers' claims\n", claims_markdown(claims) + "\n"]
    if profile.name == REGIME_PROFILES[0] == root.name:  # beside the other regimes' folders
        labels, by_regime = claims_by_regime(root.parent, exps)
        if by_regime:
            parts += ["## The claims in each data regime\n", regimes_markdown(labels, by_regime)]
            parts[-1] += "\n"
    if args.partial and (rows := in_progress(root, exps, profile)):
        parts.append("## Experiments still training (claims on the stored cells only)\n")
        parts.append(progress_markdown(rows) + "\n")
    parts += ["## Training time\n", time_markdown(training_time(root, exps)) + "\n"]
    parts += ["## Every cell\n", summary_markdown(records)]
    text = "\n".join(parts) + "\n"
    _write_documents(documents)
    if args.out:
        write_bytes(Path(args.out), text.encode())  # left alone if it holds this already
        print(f"report: {args.out}")
    else:
        sys.stdout.write(text)


def _render_documents(readme: Path, root: Path, profile, exps: list) -> dict:
    """``{path: (text, new text)}``: ``readme`` and the ``docs/*.md`` beside it that hold
    generated blocks, each rewritten from the results in ``root`` and the suite's
    measurement (:data:`report.TEST_TIME`). A ValueError names the file and the block that
    cannot be filled, before anything is written."""
    from .report import TEST_TIME, block_names, experiment_blocks, readme_blocks, render_readme

    measured = readme.parent / TEST_TIME
    tests = json.loads(measured.read_text()) if measured.exists() else None
    texts = {}
    for path in [readme, *sorted((readme.parent / "docs").glob("*.md"))]:
        text = path.read_text()
        try:
            if block_names(text):
                texts[path] = text
        except ValueError as e:
            raise ValueError(f"--readme: {path}: {e}") from None
    if tests is None and any("<!-- generated: tests -->" in t for t in texts.values()):
        raise ValueError(
            f"--readme: {readme} has a generated test count and {measured} does not exist; "
            "`make test-time` writes it"
        )
    names = [n for text in texts.values() for n in block_names(text)]
    blocks = readme_blocks(root, exps, tests, names) | experiment_blocks(root, profile, exps, names)
    out = {}
    for path, text in texts.items():
        try:
            out[path] = (text, render_readme(text, blocks))
        except ValueError as e:
            raise ValueError(f"--readme: {path}: {e}") from None
    return out


def _write_documents(rendered: dict) -> None:
    """Write :func:`_render_documents`' files; a file that holds its text already is left
    alone. Says so on stderr (stdout holds the report)."""
    from .runner import write_bytes

    for path, (text, new) in rendered.items():
        write_bytes(path, new.encode())
        print(f"{path}: generated blocks {'rewritten' if new != text else 'up to date'}",
              file=sys.stderr)  # fmt: skip


def _bench_flags(args) -> list[str]:
    """The measurement flags given to ``bench``, as a child ``bench`` takes them."""
    flags = [f for f, on in (("--quick", args.quick), ("--engine-only", args.engine_only)) if on]
    for flag, value in (
        ("--runs", args.runs),
        ("--steps", args.steps),
        ("--batch", args.batch),
        ("--n-train", args.n_train),
    ):
        if value is not None:
            flags += [flag, str(value)]
    return flags + (["--models", *args.models] if args.models else [])


def cmd_bench(args) -> None:
    from . import bench
    from .objectives import get as get_objective

    models = _check_models(args.models)
    for flag in ("runs", "steps", "batch", "rounds"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be a positive integer, got {value}")
    batch = args.batch or bench.DEFAULT_BATCH
    n_train = bench.FINITE_N_TRAIN if args.n_train is None else args.n_train
    if n_train < batch:
        raise ValueError(f"--n-train must be an integer >= --batch ({batch}), got {n_train}")
    groups = bench.parse_groups(args.groups)
    for o in args.objectives or ():
        get_objective(o)  # unknown names fail here with the known list
    if args.rounds is not None and not args.against:
        raise ValueError("--rounds goes with --against")

    def log(s):
        print(s, file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.against:
        if args.memory or groups or args.objectives is not None or args.profile_step or args.tasks:
            raise ValueError(
                "--against compares the engine's streaming rates; drop --memory, --groups, "
                "--objectives, --tasks and --profile-step"
            )
        res = bench.compare(args.against, _bench_flags(args), args.rounds or 2, log)
    elif args.profile_step:
        (model,) = _check_models([args.profile_step], "--profile-step")
        if len(args.objectives or ()) > 1:
            raise ValueError("--profile-step takes one objective in --objectives")
        objective = (args.objectives or ["equal"])[0]
        runs, steps = args.runs or bench.LOOP_RUNS_PER_DEVICE, args.steps or 200
        total, rows = bench.profile_step(model, runs, steps, batch, objective)
        print(f"{model} ({objective}): one call, {runs} runs x {steps} steps on 1 device: "
              f"{total:.1f} ms")  # fmt: skip
        for ms, n, name, text in rows[:25]:
            print(f"{ms:8.1f} ms {100 * ms / total:5.1f}% {n:5d}x  {name}: {text}")
        return
    else:
        res = bench.measure(
            models or (["shared_bottom", "mmoe"] if args.quick else _ordered_models()),
            runs=args.runs or (64 if args.quick else 200),
            steps=args.steps or (200 if args.quick else 500),
            batch=batch,
            n_train=n_train,
            quick=args.quick,
            engine_only=args.engine_only,
            groups=groups,
            objectives=args.objectives,
            tasks=args.tasks or (),
            log=log,
        )
        if args.memory:
            res["memory_mb_by_runs"] = bench.memory_by_runs(batch=batch)
            log(
                "peak RSS of a fresh mmoe sweep, by runs S: "
                + ", ".join(f"S={k}: {v:.0f} MB" for k, v in res["memory_mb_by_runs"].items())
            )
    if args.json:
        print(json.dumps(res))


def _ordered_models() -> list[str]:
    from .models import names, ordered

    return ordered(names())


def _tasks_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 64:
        raise argparse.ArgumentTypeError(f"a number of tasks K in [2, 64], got {text!r}")
    return value


def _fuse_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a number of runs >= 0 or auto, got {text!r}")
    return value


def _add_profile(p) -> None:
    p.add_argument(
        "--profile",
        default="default",
        help="smoke, quick, default, late, n1e5 or paper (see `list`)",
    )


class _DescribedDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to an option's help unless the help describes it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "(default" in text else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # Every subparser is a OneLineParser too: a bad argument is one line, exit status 2.
    parser = OneLineParser(prog="python -m benchmark", description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="architectures, experiments and profiles", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "run", help="train experiments (resumes; skips finished work)", formatter_class=fmt
    )
    p.add_argument(
        "experiments",
        nargs="*",
        default=["all"],
        help="experiment names, or 'all' (every experiment of `run all`)",
    )
    _add_profile(p)
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help="train only these architectures' cells (default: every cell)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be trained and change nothing"
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print one JSON object")
    p.add_argument("--out", default=None, help="results folder (default: results/<profile>)")
    p.add_argument("--shard", default=None, help="i/n: train only this share of the chunks")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a jax.distributed job; this process trains shard "
        "process_index/process_count (default --out: results/<profile>-shard<i>of<n>)",
    )
    p.add_argument("--coordinator", default=None, help="with --distributed: host:port")
    p.add_argument(
        "--num-processes",
        type=int_in(1),
        default=None,
        help="with --distributed: processes in the job",
    )
    p.add_argument(
        "--process-id",
        type=int_in(0),
        default=None,
        help="with --distributed: this process's index",
    )
    p.add_argument(
        "--figures",
        default=None,
        help="figures folder (default: figures/ for default, else results/<profile>/figures)",
    )
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fuse",
        type=_fuse_arg,
        default="auto",
        metavar="RUNS",
        help="the most runs one training call holds, fusing the chunks of one architecture "
        "and config across correlations (0: a chunk per call; auto: 0 on a CPU; on an "
        "accelerator up to 8192 runs and 8 GiB of test inputs)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "merge", help="combine shard folders into one results folder", formatter_class=fmt
    )
    p.add_argument("sources", nargs="+", help="results folders of the shards")
    p.add_argument("--out", required=True, help="the combined results folder")
    _add_profile(p)
    p.add_argument(
        "--experiments",
        nargs="*",
        default=[],
        help="experiments to assemble (default: those of `run all`)",
    )
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "figures", help="redraw every figure from stored results", formatter_class=fmt
    )
    _add_profile(p)
    p.add_argument("--results", default=None, help="results folder (default: results/<profile>)")
    p.add_argument(
        "--figures",
        default=None,
        help="figures folder (default: figures/ for default, else results/<profile>/figures)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help=f"also draw the experiments still training, from their stored cells, into "
        f"<figures>/{PARTIAL}/",
    )
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser(
        "report", help="markdown: the claims' verdicts and every cell", formatter_class=fmt
    )
    _add_profile(p)
    p.add_argument("--results", default=None, help="results folder (default: results/<profile>)")
    p.add_argument(
        "--partial",
        action="store_true",
        help="also list the experiments still training, with their stored cells and their "
        "claims tested on those cells only",
    )
    p.add_argument(
        "--out",
        default=None,
        help="write the markdown to this file (left alone if it holds the same text) "
        "instead of printing it (default: print)",
    )
    p.add_argument(
        "--readme",
        default=None,
        help="also rewrite the generated blocks (<!-- generated: NAME --> ... "
        "<!-- /generated -->) of this README and of the docs/*.md beside it: the claims, the "
        "training time, the cost, the test count, and the experiments' tables, from these "
        "results and the suite's measurement, docs/test_time.json beside it (default: none)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "bench",
        help="how fast the engine trains: against a naive loop, the machine's peak, another "
        "revision (docs/performance.md)",
        formatter_class=_DescribedDefaults,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short measurement: S = 64, 200 steps, shared_bottom and mmoe, best of 2, "
        "no 1-core probe",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per sweep, S (default: 200; 64 with --quick); at most what this "
        "machine's memory holds",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="steps per run (default: 500; 200 with --quick)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="samples per step (default: 32, the batch the default profile trains at)",
    )
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        metavar="N",
        help="training-set size of the finite-set column (default: 10000000)",
    )
    p.add_argument(
        "--models",
        nargs="*",
        default=None,
        metavar="NAME",
        help="architectures (default: every one; shared_bottom and mmoe with --quick)",
    )
    p.add_argument(
        "--engine-only",
        action="store_true",
        help="time only the engine's streaming program (no peak, naive loop, finite set, "
        "data share or 1-core probe)",
    )
    p.add_argument(
        "--memory", action="store_true", help="also peak RSS of fresh mmoe sweeps, S = 25..200"
    )
    p.add_argument(
        "--groups",
        nargs="*",
        default=None,
        help="also time shared_bottom and mmoe at these runs per group (integers, or all) "
        "(default: none)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        type=_tasks_arg,
        metavar="K",
        default=None,
        help="also time the engine's streaming program with K tasks, for each K given "
        "(integers from 2 to 64), for the many-task architectures measured (default: none)",
    )
    p.add_argument(
        "--objectives",
        nargs="*",
        metavar="NAME",
        default=None,
        help="also time the engine's step with each of these objectives (none named: every "
        "registered one) against equal weights, for shared_bottom and mmoe (default: none)",
    )
    p.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="run this bench (with the flags given; --json) here and in a git worktree "
        "checkout of revision REV, alternately, and compare the engines' streaming rates "
        "(default: none)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="with --against: runs of each side (default: 2)",
    )
    p.add_argument(
        "--profile-step",
        metavar="MODEL",
        default=None,
        help="print where MODEL's compiled streaming step spends its time instead (one "
        "device; --runs default 10, --steps default 200; one objective of --objectives, "
        "equal if none) (default: none)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "gpu-check",
        help="measure this machine's accelerator in a few minutes; writes DIR/gpu_check.json",
        formatter_class=fmt,
    )
    p.add_argument("--out", required=True, help="folder of gpu_check.json")
    p.add_argument(
        "--results",
        default="results/default",
        help="stored results whose cell the check retrains (agreement)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the throughput grid (default: 150; with --tiny, 60)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="sizes that run on a CPU in seconds (the test's)"
    )
    p.set_defaults(func=cmd_gpu_check)
    return parser


def cmd_gpu_check(args) -> None:
    import dataclasses

    from . import gpu_check
    from .runner import write_json

    out = creatable_dir(args.out, "--out")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise ValueError(f"--budget must be a number of seconds > 0, got {args.budget}")
    sizes = gpu_check.TINY if args.tiny else gpu_check.CheckSizes()
    if args.budget is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget)
    report = gpu_check.run_check(sizes, Path(args.results), log=_stderr)
    path = out / "gpu_check.json"
    write_json(path, report)
    print(gpu_check.summary(report))
    print(f"written: {path}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_NOT_SET = object()


def _sigterm_interrupts():
    """Make SIGTERM (what ``kill`` and batch schedulers send) stop a command the way
    Ctrl-C does, so that training saves its finished work; returns the previous handler
    (``_NOT_SET`` off the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_SET

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its one line printed)
        return e.code if isinstance(e.code, int) else 2
    previous = _sigterm_interrupts()
    try:
        args.func(args)
    except Interrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if previous is not _NOT_SET:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0
