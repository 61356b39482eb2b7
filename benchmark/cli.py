"""``python -m benchmark``: list, run, merge, figures, report, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .runner import ResultsError


def _experiment_names(args_names: list[str]) -> list[str]:
    from .report import EXPERIMENTS

    if not args_names or args_names == ["all"]:
        return list(EXPERIMENTS)
    return args_names


def cmd_list(args) -> None:
    from .experiments import PROFILES, experiments, get_profile, ordered
    from .models import get, names, param_count

    archs = {}
    for n in ordered(names()):
        arch = get(n)
        archs[n] = {
            "params": param_count(arch.cls()),
            "description": arch.description,
            "paper": arch.paper,
        }
    exps = experiments(get_profile("default"))
    if args.json:
        print(json.dumps({"architectures": archs, "experiments": list(exps)}))
        return
    print("architectures (parameters at the paper defaults, d = 100, K = 2):")
    for n, a in archs.items():
        print(f"  {n:<14} {a['params']:>6}  {a['description']}  [{a['paper']}]")
    print("experiments:")
    for e in exps.values():
        print(f"  {e.name:<12} {e.description}")
    print("profiles: " + ", ".join(PROFILES))


# A shard that finishes early waits for the others at JAX's shutdown barrier; JAX's default
# 5 minutes would end the job's slower shards. A week is longer than any profile's shard.
SHUTDOWN_TIMEOUT_S = 7 * 24 * 3600


def _job_flags(args) -> list:
    """``--coordinator``, ``--num-processes`` and ``--process-id`` (None where not given)."""
    return [args.coordinator, args.num_processes, args.process_id]


def _join_distributed(args) -> tuple[int, int]:
    """Join the job with ``jax.distributed``; this process's shard ``(index, count)``.

    Without ``--coordinator``, JAX reads the cluster's environment (SLURM, Open MPI, ...).
    Each process trains its shard of the chunks on its own devices. The runs are
    independent, so the processes exchange only JAX's heartbeats and its shutdown barrier:
    a process that crashes ends the others too, and a rerun resumes every shard.
    """
    import jax

    if args.shard is not None:
        raise ValueError("--distributed takes the shard from the job; drop --shard")
    given = _job_flags(args)
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
    from .experiments import get_profile
    from .plots import draw_all
    from .report import write_summary
    from .runner import parse_shard, run

    profile = get_profile(args.profile)
    if args.distributed:
        shard = _join_distributed(args)
    elif any(v is not None for v in _job_flags(args)):
        raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
    else:
        shard = parse_shard(args.shard)
    root = Path(args.out) if args.out else Path("results") / profile.name
    if args.distributed and not args.out and shard[1] > 1:
        root = Path("results") / f"{profile.name}-shard{shard[0]}of{shard[1]}"
    names = _experiment_names(args.experiments)
    t0 = time.perf_counter()
    res = run(profile, names, root, shard=shard, progress=not args.no_progress)
    print(
        f"{profile.name}: trained {res['trained']} chunks, skipped {res['skipped']} finished "
        f"ones, in {time.perf_counter() - t0:.1f} s; results in {root}"
    )
    if res["assembled"]:
        print(f"summary: {write_summary(root)}")
        if args.figures:
            for path in draw_all(root, Path(args.figures), res["assembled"]):
                print(f"figure: {path}")
    elif shard[1] > 1:
        print("this shard is done; combine the shards with `python -m benchmark merge`")


def cmd_merge(args) -> None:
    from .experiments import get_profile
    from .report import write_summary
    from .runner import merge

    profile = get_profile(args.profile)
    res = merge([Path(s) for s in args.sources], Path(args.out), profile,
                _experiment_names(args.experiments))  # fmt: skip
    print(f"copied {res['copied']} chunks; assembled: {', '.join(res['assembled']) or 'none'}")
    if res["assembled"]:
        print(f"summary: {write_summary(Path(args.out))}")


def cmd_figures(args) -> None:
    from .plots import draw_all
    from .report import write_summary

    root = Path(args.results)
    if not root.is_dir():
        raise ResultsError(f"no results folder {root}; run `python -m benchmark run` first")
    written = draw_all(root, Path(args.out))
    if not written:
        raise ResultsError(f"no assembled experiments in {root}; run `python -m benchmark run`")
    write_summary(root)
    for path in written:
        print(f"figure: {path}")


def cmd_report(args) -> None:
    from .report import build_summary, check_claims, claims_markdown, summary_markdown

    root = Path(args.results)
    records = build_summary(root)
    print(f"## Results in {root}\n")
    print(summary_markdown(records))
    claims = check_claims(root)
    if claims:
        print("\n## The papers' claims\n")
        print(claims_markdown(claims))


def cmd_bench(args) -> None:
    from .bench import main as bench_main

    bench_main(
        quick=args.quick,
        as_json=args.json,
        runs=args.runs,
        models=args.models,
        batch=args.batch,
        memory=args.memory,
        groups=args.groups,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="architectures and experiments")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="train experiments (resumes; skips finished pieces)")
    p.add_argument("experiments", nargs="*", help="experiment names, or 'all' (the default)")
    p.add_argument("--profile", default="default", help="smoke, quick, default or paper")
    p.add_argument("--out", default=None, help="results folder (default results/<profile>)")
    p.add_argument("--shard", default=None, help="i/n: train only this share of the pieces")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a jax.distributed job; this process trains shard process_index/process_count "
        "(default --out: results/<profile>-shard<i>of<n>)",
    )
    p.add_argument("--coordinator", default=None, help="with --distributed: host:port")
    p.add_argument("--num-processes", type=int, default=None, help="with --distributed")
    p.add_argument("--process-id", type=int, default=None, help="with --distributed")
    p.add_argument("--figures", default=None, help="also draw figures into this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("merge", help="combine shard folders into one results folder")
    p.add_argument("sources", nargs="+", help="results folders of the shards")
    p.add_argument("--out", required=True)
    p.add_argument("--profile", default="default")
    p.add_argument("--experiments", nargs="*", default=[])
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("figures", help="redraw every figure from stored results")
    p.add_argument("--results", default="results/default")
    p.add_argument("--out", default="figures")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("report", help="markdown table of results and the papers' claims")
    p.add_argument("--results", default="results/default")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="engine throughput against a naive loop and the peak")
    p.add_argument("--quick", action="store_true", help="a short measurement (< 90 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--runs", type=int, default=None, help="runs per sweep (default 200)")
    p.add_argument("--models", nargs="*", default=None, help="architectures (default all)")
    p.add_argument("--batch", type=int, default=128, help="batch size (the paper sizes: 128)")
    p.add_argument(
        "--memory", action="store_true", help="also peak RSS of fresh mmoe sweeps, S = 25..200"
    )
    p.add_argument(
        "--groups",
        nargs="*",
        default=None,
        help="also time shared_bottom and mmoe at these runs per group (integers, or all)",
    )
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
