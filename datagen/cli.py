"""``python -m datagen``: sample data, draw Figure 2, describe and calibrate presets."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .presets import PRESETS, get_preset

FIG2_STEM = "fig2_label_correlation"


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _writable_file(path: str, param: str) -> Path:
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CliError(f"{param} must be a file path, got the directory {path}")
    if not parent.is_dir():
        raise CliError(f"{param}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{param}: directory {parent} is not writable")
    return out


def _writable_dir(path: str, param: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{param}: cannot create directory {path}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise CliError(f"{param}: directory {path} is not writable")
    return out


def _spec(args):
    overrides = {}
    if getattr(args, "d", None) is not None:
        overrides["d"] = args.d
    return get_preset(args.preset, **overrides)


def cmd_sample(args) -> None:
    import jax

    from .core import sample, task_weights, validate_correlation

    if args.n <= 0:
        raise CliError(f"--n must be a positive integer, got {args.n}")
    out = _writable_file(args.out, "--out")
    spec = _spec(args)
    if args.R is not None:
        try:
            corr = np.asarray(json.loads(args.R), np.float64)
        except json.JSONDecodeError as e:
            raise CliError(f"--R must be a JSON matrix like [[1,0.5],[0.5,1]]: {e}") from None
    else:
        corr = args.p
    r = validate_correlation(corr, n_tasks=None if args.R else args.tasks, d=spec.d)
    kw, kd = jax.random.split(jax.random.key(args.seed))
    w = task_weights(kw, spec, r)
    x, y = sample(kd, spec, args.n, w)
    meta = {"spec": spec.to_dict(), "R": r.tolist(), "seed": args.seed, "n": args.n}
    try:
        with open(out, "wb") as f:
            np.savez(f, x=np.asarray(x), y=np.asarray(y), w=np.asarray(w), meta=json.dumps(meta))
    except OSError as e:
        raise CliError(f"--out: cannot write {out}: {e.strerror}") from None
    print(f"wrote {out}: x {x.shape}, y {y.shape}, w {w.shape}")


def cmd_corr_curve(args) -> None:
    from .curve import corr_curve, plot_corr_curve, write_curve_csv

    if args.trials < 2:
        raise CliError(f"--trials must be an integer >= 2, got {args.trials}")
    if args.n < 2:
        raise CliError(f"--n must be an integer >= 2, got {args.n}")
    fig_dir = _writable_dir(args.figure, "--figure") if args.figure else None
    spec = _spec(args)
    t0 = time.perf_counter()
    curve = corr_curve(spec, tuple(args.cosines), trials=args.trials, n=args.n, seed=args.seed)
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps(curve))
    else:
        print(f"preset {spec.name}: {args.trials} trials x {args.n} points, {elapsed:.1f} s")
        print(f"{'cosine':>8} {'pearson mean':>13} {'std':>8}")
        for p, m, s in zip(
            curve["cosine"], curve["pearson_mean"], curve["pearson_std"], strict=True
        ):
            print(f"{p:8.3f} {m:13.4f} {s:8.4f}")
    if fig_dir is not None:
        write_curve_csv(curve, fig_dir / f"{FIG2_STEM}.csv")
        _save_fig2(curve, fig_dir, plot_corr_curve, spec.name)
        if not args.json:
            print(f"wrote {fig_dir / FIG2_STEM}.png and .csv")


def _save_fig2(curve, fig_dir: Path, plot, preset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    plot(ax, curve, title=f"Label correlation vs task-weight cosine ({preset})")
    fig.tight_layout()
    fig.savefig(fig_dir / f"{FIG2_STEM}.png")
    plt.close(fig)


def cmd_figure(args) -> None:
    from .curve import plot_corr_curve, read_curve_csv

    fig_dir = _writable_dir(args.figures, "--figures")
    curve = read_curve_csv(fig_dir / f"{FIG2_STEM}.csv")
    _save_fig2(curve, fig_dir, plot_corr_curve, "kdd18")
    print(f"redrew {fig_dir / FIG2_STEM}.png from its CSV")


def cmd_describe(args) -> None:
    from .core import label_correlation

    spec = _spec(args)
    info = spec.to_dict()
    info["m"] = spec.m
    info["label_corr_at"] = {str(p): round(label_correlation(spec, p), 4) for p in (0.5, 0.9, 1.0)}
    if args.json:
        print(json.dumps(info))
        return
    for k, v in info.items():
        print(f"{k:>14}: {v}")


def cmd_calibrate(args) -> None:
    from .calibrate import FIG2_COSINES, FIG2_PEARSON, calibrate

    cal = calibrate(n_seeds=args.seeds)
    stored = PRESETS["kdd18"]
    same = cal.alpha == stored.alpha and cal.beta == stored.beta
    print(f"best of {args.seeds} seeded draws: seed {cal.seed}, frequency scale {cal.scale:.4f}")
    print(f"KDD18_ALPHA = {cal.alpha}")
    print(f"KDD18_BETA = {cal.beta}")
    print(f"{'cosine':>8} {'paper':>7} {'fitted':>8}")
    for p, t, f in zip(FIG2_COSINES, FIG2_PEARSON, cal.fitted, strict=True):
        print(f"{p:8.2f} {t:7.3f} {f:8.4f}")
    print(f"largest gap to Figure 2: {cal.max_abs_error:.4f} (tolerance 0.03)")
    print("matches the stored kdd18 preset" if same else "DIFFERS from the stored kdd18 preset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datagen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_preset(p):
        p.add_argument("--preset", default="kdd18", help=f"one of {', '.join(PRESETS)}")
        p.add_argument("--d", type=int, default=None, help="override the input dimension")

    p = sub.add_parser("sample", help="write x (n, d), y (n, K), w (d, K) to an .npz")
    add_preset(p)
    p.add_argument("--p", type=float, default=0.5, help="cosine of the task weights, in [-1, 1]")
    p.add_argument("--R", default=None, help="K-task cosine matrix as JSON (overrides --p)")
    p.add_argument("--tasks", type=int, default=2, help="K, when --p is given")
    p.add_argument("--n", type=int, default=1000, help="number of points, > 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .npz path")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("corr-curve", help="label correlation against cosine (Figure 2)")
    add_preset(p)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cosines",
        type=float,
        nargs="+",
        default=[0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--figure", default=None, help="directory for the PNG and CSV of Figure 2")
    p.set_defaults(func=cmd_corr_curve)

    p = sub.add_parser("figure", help="redraw Figure 2 from its stored CSV")
    p.add_argument("--figures", default="figures")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("describe", help="print a preset's constants")
    add_preset(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("calibrate", help="re-derive the kdd18 alpha and beta from Figure 2")
    p.add_argument("--seeds", type=int, default=100, help="number of seeded draws to search")
    p.set_defaults(func=cmd_calibrate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
