"""``python -m datagen``: sample data, draw Figure 2, describe and calibrate presets."""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .presets import PRESETS, get_preset

FIG2_STEM = "fig2_label_correlation"
MAX_SEED = 2**63 - 1
INTERRUPTED = "interrupted; no partial output was written"


class CliError(ValueError):
    """A user error: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- argument types
# Each raises ArgumentTypeError, which argparse reports as "argument --flag: <message>", so
# every bad value gets one line that names its flag and the allowed values.


def _int_in(lo: int, hi: int | None = None):
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = allowed
    return parse


def _cosine(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in [-1, 1], got {text!r}")
    return value


def _preset(text: str) -> str:
    if text not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"unknown preset {text!r}; choose one of: {', '.join(PRESETS)}"
        )
    return text


def _matrix(text: str) -> np.ndarray:
    example = "a JSON (K, K) matrix like [[1,0.5],[0.5,1]]"
    try:
        arr = np.asarray(json.loads(text), np.float64)
    except (json.JSONDecodeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {example}, got {text!r}") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise argparse.ArgumentTypeError(f"must be {example}, got shape {arr.shape}")
    return arr


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), not a usage
    block; its subparsers are of this class too. ``python -m benchmark`` uses it as well.

    A value that starts with a minus and a digit (``--shard -1/2``, ``--fuse -1``) is a
    value, never an option, so that the option's own check rejects it by name.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


int_in = _int_in  # the integer argument type, shared with ``python -m benchmark``


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every option; None defaults are described in the help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required:
            return f"{text} (required)"
        if action.default is None or "(default" in text:
            return text
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- output files


def writable_file(path: str, param: str) -> Path:
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CliError(f"{param} must be a file path, got the directory {path}")
    if not parent.is_dir():
        raise CliError(f"{param}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{param}: directory {parent} is not writable")
    return out


def creatable_dir(path: str, param: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable directory; create nothing."""
    out = Path(path)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        if probe == out:
            raise CliError(f"{param}: {path} exists and is not a directory")
        raise CliError(f"{param}: cannot create directory {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK):
        raise CliError(f"{param}: directory {probe} is not writable")
    return out


@contextlib.contextmanager
def _atomic(path: Path, param: str):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success, and
    only if it differs from ``path``: a file that holds the same bytes is left alone (its
    time stamp too), so that redrawing what is stored changes nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if not (path.is_file() and filecmp.cmp(tmp, path, shallow=False)):
            os.replace(tmp, path)
    except OSError as e:
        raise CliError(f"{param}: cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- sizes
# Peak memory per value of x (n x d float32), measured: `sample` runs eagerly, each
# operation of the normal draws holding its own array (about 17 bytes); `corr-curve` is
# compiled and fused (about 5 bytes), with 25 trials in flight at once.
SAMPLE_BYTES_PER_VALUE = 20
CURVE_BYTES_PER_VALUE = 6
CURVE_TRIALS_AT_ONCE = 25  # curve.py's lax.map batch
MAX_VALUES = 2**32  # one draw's counters are uint32: more values would repeat draws


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


def _size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1000 or unit == "PB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1000
    raise AssertionError  # pragma: no cover


def _sizes(args, spec) -> str:
    d_flag = f"--d {spec.d}" if args.d is not None else f"--d (the preset's, {spec.d})"
    return f"--n {args.n} points of {d_flag} inputs"


def _check_memory(args, spec, values: int, bytes_per_value: int, what: str = "") -> None:
    """Refuse, naming --n and --d, ``values`` values of x in memory at once (each costing
    ``bytes_per_value`` at the peak) that this machine cannot hold, before allocating."""
    need, free = values * bytes_per_value, available_memory()
    if free is not None and need > free:
        raise CliError(
            f"{_sizes(args, spec)}{what} need about {_size(need)} of memory, more than the "
            f"{_size(free)} available; lower --n or --d"
        )


def _check_counter(args, spec) -> None:
    """Refuse a draw of more values of x than the generator's counters number."""
    if args.n * spec.d > MAX_VALUES:
        raise CliError(
            f"{_sizes(args, spec)} are {args.n * spec.d:.3g} values of x in one draw, more "
            "than the 2**32 that the generator's counters number; lower --n or --d"
        )


# ----------------------------------------------------------------------------- commands


def _spec(args):
    overrides = {}
    if getattr(args, "d", None) is not None:
        overrides["d"] = args.d
    return get_preset(args.preset, **overrides)


def cmd_sample(args) -> None:
    import jax

    from .core import sample, task_weights, validate_correlation

    out = writable_file(args.out, "--out")
    spec = _spec(args)
    if args.R is not None:
        corr, k, flag = args.R, args.R.shape[0], "--R"
    else:
        corr, k, flag = args.p, args.tasks, "--tasks"
    if spec.d < k:
        raise CliError(
            f"--d (the input dimension, or the preset's d) must be >= K={k}, the number of "
            f"tasks that {flag} asks for; got d={spec.d}"
        )
    try:
        r = validate_correlation(corr, n_tasks=None if args.R is not None else k, d=spec.d)
    except ValueError as e:
        raise CliError(f"{flag}: {e}") from None
    _check_memory(args, spec, args.n * spec.d, SAMPLE_BYTES_PER_VALUE)
    _check_counter(args, spec)
    file_bytes = 4 * args.n * (spec.d + 2 * k)  # x, y and a margin
    free_disk = shutil.disk_usage(out.resolve().parent).free
    if file_bytes > free_disk:
        raise CliError(
            f"--out: the file of --n {args.n} points would take about {_size(file_bytes)}, "
            f"more than the {_size(free_disk)} free on its disk; lower --n or --d"
        )
    kw, kd = jax.random.split(jax.random.key(args.seed))
    w = task_weights(kw, spec, r)
    x, y = sample(kd, spec, args.n, w)
    meta = {"spec": spec.to_dict(), "R": r.tolist(), "seed": args.seed, "n": args.n}
    with _atomic(out, "--out") as tmp, open(tmp, "wb") as f:
        np.savez(f, x=np.asarray(x), y=np.asarray(y), w=np.asarray(w), meta=json.dumps(meta))
    print(f"wrote {out}: x {x.shape}, y {y.shape}, w {w.shape}")


def cmd_corr_curve(args) -> None:
    from .curve import corr_curve, plot_corr_curve, write_curve_csv

    fig_dir = creatable_dir(args.figure, "--figures") if args.figure else None
    spec = _spec(args)
    at_once = min(args.trials, CURVE_TRIALS_AT_ONCE)
    values = at_once * args.n * spec.d
    _check_memory(args, spec, values, CURVE_BYTES_PER_VALUE, f", {at_once} trials at once,")
    _check_counter(args, spec)
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
        try:
            fig_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"--figures: cannot create directory {fig_dir}: {e.strerror}") from None
        csv_path = fig_dir / f"{FIG2_STEM}.csv"
        with _atomic(csv_path, "--figures") as tmp_csv:
            write_curve_csv(curve, tmp_csv)
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
    png = fig_dir / f"{FIG2_STEM}.png"
    try:
        with _atomic(png, "--figures") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def cmd_figure(args) -> None:
    from .curve import plot_corr_curve, read_curve_csv

    fig_dir = Path(args.figures)
    if not fig_dir.is_dir():
        raise CliError(f"--figures: {fig_dir} is not a directory")
    if not os.access(fig_dir, os.W_OK):
        raise CliError(f"--figures: directory {fig_dir} is not writable")
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


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m datagen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_):
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_HelpFormatter)
        p.set_defaults(func=func)
        return p

    def add_preset(p, min_d=1):
        p.add_argument(
            "--preset",
            type=_preset,
            default="kdd18",
            help=f"generator preset: {', '.join(PRESETS)}",
        )
        p.add_argument(
            "--d",
            type=_int_in(min_d),
            default=None,
            help=f"input dimension, an integer >= {min_d} (default: the preset's d)",
        )

    def add_seed(p, what):
        p.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help=f"root seed of {what}")

    p = add("sample", cmd_sample, "write x (n, d), y (n, K), w (d, K) and a JSON meta to an .npz")
    add_preset(p)
    p.add_argument(
        "--p", type=_cosine, default=0.5, help="cosine of every pair of task weights, in [-1, 1]"
    )
    p.add_argument(
        "--R",
        type=_matrix,
        default=None,
        help="K-task cosine matrix as JSON: symmetric, unit diagonal, positive semidefinite; "
        "overrides --p and --tasks (default: none, --p and --tasks are used)",
    )
    p.add_argument(
        "--tasks", type=_int_in(1), default=2, help="K, the number of tasks for --p, >= 1"
    )
    p.add_argument("--n", type=_int_in(1), default=1000, help="number of points, >= 1")
    add_seed(p, "the task weights and the data")
    p.add_argument("--out", required=True, help="output .npz file")

    p = add("corr-curve", cmd_corr_curve, "label correlation against cosine (Figure 2)")
    add_preset(p, min_d=2)
    p.add_argument(
        "--trials", type=_int_in(2), default=100, help="independent draws per cosine, >= 2"
    )
    p.add_argument("--n", type=_int_in(2), default=10_000, help="points per draw, >= 2")
    add_seed(p, "every draw")
    p.add_argument(
        "--cosines",
        type=_cosine,
        nargs="+",
        default=[0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0],
        help="task-weight cosines to evaluate, each in [-1, 1]",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--figures",
        dest="figure",
        default=None,
        help="directory to write the PNG and CSV of Figure 2 into (default: none, no files)",
    )

    p = add("figure", cmd_figure, "redraw Figure 2's PNG from its stored CSV")
    p.add_argument("--figures", default="figures", help=f"directory that holds {FIG2_STEM}.csv")

    p = add("describe", cmd_describe, "print a preset's constants")
    add_preset(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")

    p = add("calibrate", cmd_calibrate, "re-derive the kdd18 alpha and beta from Figure 2")
    p.add_argument(
        "--seeds", type=_int_in(1), default=100, help="number of seeded draws to search, >= 1"
    )
    return parser


def main(argv=None) -> int:
    """Run one command; returns the exit status (0, 2 for bad input, 130 on Ctrl-C)."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
            return e.code if isinstance(e.code, int) else 2
        args.func(args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (CliError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
