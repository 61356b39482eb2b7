"""Summary statistics, the paper's claims checked against stored results, and markdown.

Reads assembled results only (never retrains).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import stats
from .experiments import ordered
from .runner import ResultsError, load_experiment, write_json

__all__ = [
    "build_summary",
    "write_summary",
    "summary_markdown",
    "check_claims",
    "claims_markdown",
    "by_model",
    "mtl_gains",
]

EXPERIMENTS = ("fig3", "fig4", "relatedness", "mtl_gain", "gates")
FINAL_KEYS = ("mean", "std", "iqm", "iqm_ci", "q10", "q25", "median", "q75", "q90", "min")


def _assembled(root: Path) -> list[str]:
    return [e for e in EXPERIMENTS if (root / e / "manifest.json").exists()]


def build_summary(root: Path, seed: int = 0) -> list[dict]:
    """One record per (experiment, model, correlation, task), tasks numbered from 1.

    Each record: ``{"experiment", "model", "correlation", "task", "n_runs", "n_diverged",
    "final_loss": {mean, std, iqm, iqm_ci, q10, q25, median, q75, q90, min}}``.
    """
    names = _assembled(root)
    if not names:
        raise ResultsError(f"no assembled experiments in {root}; run `python -m benchmark run`")
    records = []
    for name in names:
        _, cells = load_experiment(root, name)
        for meta, arrays in sorted(cells, key=lambda c: (c[0]["model"], c[0]["p"])):
            final = arrays["final"]  # (runs, K)
            for k in range(final.shape[1]):
                s = stats.summarize(final[:, k], seed=seed)
                # A run that diverged anywhere counts as diverged for every task.
                s["n_diverged"] = int(max(s["n_diverged"], arrays["diverged"].sum()))
                records.append(
                    {
                        "experiment": name,
                        "model": meta["model"],
                        "correlation": float(meta["p"]),
                        "task": k + 1,
                        "n_runs": s["n_runs"],
                        "n_diverged": s["n_diverged"],
                        "final_loss": s["final_loss"],
                    }
                )
    return records


def write_summary(root: Path) -> Path:
    """Write ``root/summary.json`` and return its path."""
    path = root / "summary.json"
    write_json(path, build_summary(root))
    return path


def summary_markdown(records: list[dict]) -> str:
    """A markdown table of the summary, one row per record."""
    lines = [
        "| experiment | model | corr | task | runs | diverged | mean | IQM [95% CI] | median |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        f = r["final_loss"]
        lines.append(
            f"| {r['experiment']} | {r['model']} | {r['correlation']:g} | {r['task']} | "
            f"{r['n_runs']} | {r['n_diverged']} | {f['mean']:.4f} | {f['iqm']:.4f} "
            f"[{f['iqm_ci'][0]:.4f}, {f['iqm_ci'][1]:.4f}] | {f['median']:.4f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- claims


def by_model(cells) -> dict:
    """``{model: {p: arrays}}`` from ``[(cell_meta, arrays), ...]``."""
    out: dict[str, dict[float, dict]] = {}
    for meta, arrays in cells:
        out.setdefault(meta["model"], {})[round(meta["p"], 6)] = arrays
    return out


def mtl_gains(root: Path, seed: int = 0):
    """Paired per-run gains ``single_task - model`` per task: ``{model: (corrs, mean, lo, hi)}``."""
    _, cells = load_experiment(root, "mtl_gain")
    by = by_model(cells)
    if "single_task" not in by:
        raise ResultsError("mtl_gain results lack the single_task baseline")
    corrs = sorted(by["single_task"])
    out = {}
    for model in ordered(by):
        if model == "single_task":
            continue
        mean, lo, hi = (np.zeros((len(corrs), 2)) for _ in range(3))
        for i, p in enumerate(corrs):
            gain = by["single_task"][p]["final"] - by[model][p]["final"]  # (runs, K) paired
            for k in range(gain.shape[1]):
                g = gain[:, k][np.isfinite(gain[:, k])]
                mean[i, k] = g.mean() if g.size else np.nan
                res = stats.mean_ci(g, seed=seed)
                lo[i, k], hi[i, k] = res
        out[model] = (corrs, mean, lo, hi)
    return out


def _finals(root: Path, name: str) -> dict:
    return by_model(load_experiment(root, name)[1])


def _task1(arrays) -> np.ndarray:
    return arrays["final"][:, 0]


def check_claims(root: Path) -> list[dict]:
    """Each KDD18/PLE20 claim with a verdict and the numbers behind it.

    Returns records ``{"claim", "holds": bool | None, "evidence"}`` (None: not measurable
    from what is stored). Final losses are task 1's test MSE, as in the paper's plots.
    """
    claims = []

    def add(claim, holds, evidence):
        claims.append({"claim": claim, "holds": None if holds is None else bool(holds),
                       "evidence": evidence})  # fmt: skip

    names = _assembled(root)
    if "fig3" in names:
        sb = _finals(root, "fig3")["shared_bottom"]
        curves = {p: a["curves"][:, 1:, 0].mean(0) for p, a in sb.items()}
        ps = sorted(curves)
        every_step = all(np.all(curves[a] >= curves[b]) for a, b in zip(ps, ps[1:], strict=False))
        means = ", ".join(f"p={p:g}: {np.nanmean(_task1(sb[p])):.4f}" for p in ps)
        add(
            "Fig. 3: Shared-Bottom does worse as task correlation drops, at every step",
            every_step,
            f"final mean task-1 MSE {means}; ordering holds at every evaluated step: {every_step}",
        )
    if "fig4" in names:
        f4 = _finals(root, "fig4")
        ps = sorted(f4["mmoe"])
        iq = {m: {p: stats.iqm(_task1(f4[m][p])) for p in ps} for m in f4}
        mono = {m: all(iq[m][a] >= iq[m][b] for a, b in zip(ps, ps[1:], strict=False))
                for m in iq}  # fmt: skip
        add(
            "Fig. 4 (1): every model does better at higher correlation",
            all(mono.values()),
            "; ".join(
                f"{m}: " + ", ".join(f"{iq[m][p]:.4f}" for p in ps) + (" ✓" if mono[m] else " ✗")
                for m in ordered(iq)
            )
            + f" (IQM at p = {', '.join(f'{p:g}' for p in ps)})",
        )
        spread = {m: iq[m][ps[0]] - iq[m][ps[-1]] for m in iq}
        add(
            "Fig. 4 (2): MMoE's spread across correlations is smaller than OMoE's and SB's",
            spread["mmoe"] < min(spread["omoe"], spread["shared_bottom"]),
            "IQM(p=min) - IQM(p=max): "
            + ", ".join(f"{m} {spread[m]:.4f}" for m in ordered(spread)),
        )
        gap1 = abs(iq["mmoe"][ps[-1]] - iq["omoe"][ps[-1]])
        add(
            "Fig. 4 (2b): at correlation 1, MMoE and OMoE are almost equal",
            gap1 < 0.1 * iq["mmoe"][ps[-1]],
            f"IQM at p=1: MMoE {iq['mmoe'][ps[-1]]:.4f}, OMoE {iq['omoe'][ps[-1]]:.4f} "
            f"(gap {gap1:.4f}; 'almost equal' = within 10%)",
        )
        means = {m: {p: float(np.nanmean(_task1(f4[m][p]))) for p in ps} for m in f4}
        beats = all(means[m][p] < means["shared_bottom"][p] for m in ("mmoe", "omoe") for p in ps)
        pb = {
            (m, p): stats.prob_better(_task1(f4[m][p]), _task1(f4["shared_bottom"][p]))
            for m in ("mmoe", "omoe")
            for p in ps
        }
        add(
            "Fig. 4 (3): both MoE models beat Shared-Bottom at every correlation, on average",
            beats,
            "; ".join(
                f"p={p:g}: SB {means['shared_bottom'][p]:.4f}, OMoE {means['omoe'][p]:.4f}, "
                f"MMoE {means['mmoe'][p]:.4f}"
                for p in ps
            )
            + " (mean task-1 MSE); P(MoE better than SB): "
            + ", ".join(f"{m}@{p:g} {v:.2f}" for (m, p), v in pb.items()),
        )
        iqr = {m: {p: float(np.subtract(*np.nanpercentile(_task1(f4[m][p]), [75, 25])))
                   for p in ps} for m in f4}  # fmt: skip
        add(
            "Fig. 5 (1): SB's final losses spread much more than the MoE models' at every "
            "correlation",
            all(iqr["shared_bottom"][p] > max(iqr["mmoe"][p], iqr["omoe"][p]) for p in ps),
            "interquartile range of task-1 final MSE: "
            + "; ".join(
                f"p={p:g}: SB {iqr['shared_bottom'][p]:.4f}, OMoE {iqr['omoe'][p]:.4f}, "
                f"MMoE {iqr['mmoe'][p]:.4f}"
                for p in ps
            ),
        )
        add(
            "Fig. 5 (2): OMoE is as robust as MMoE at correlation 1 and less robust at 0.5",
            iqr["omoe"][ps[0]] > iqr["mmoe"][ps[0]]
            and iqr["omoe"][ps[-1]] <= 1.25 * iqr["mmoe"][ps[-1]],
            f"IQR OMoE/MMoE at p={ps[0]:g}: {iqr['omoe'][ps[0]]:.4f}/{iqr['mmoe'][ps[0]]:.4f}; "
            f"at p={ps[-1]:g}: {iqr['omoe'][ps[-1]]:.4f}/{iqr['mmoe'][ps[-1]]:.4f}",
        )
        best = {m: min(float(np.nanmin(_task1(f4[m][p]))) for p in ps) for m in f4}
        lo, hi = min(best.values()), max(best.values())
        add(
            "Fig. 5 (3): the best (lowest) losses of the three models are comparable",
            hi <= 1.5 * lo,
            "lowest task-1 final MSE: "
            + ", ".join(f"{m} {best[m]:.4f}" for m in ordered(best))
            + " ('comparable' = within a factor 1.5)",
        )
    if "mtl_gain" in names:
        gains = mtl_gains(root)
        corrs = next(iter(gains.values()))[0]
        if "ple" in gains:
            ple_best = all(
                gains["ple"][1][i, k] >= max(g[1][i, k] for g in gains.values())
                for i in range(len(corrs))
                for k in range(2)
            )
            add(
                "PLE20: PLE has the best MTL gain for both tasks at every correlation",
                ple_best,
                "; ".join(
                    f"p={p:g}: "
                    + ", ".join(
                        f"{m} {g[1][i, 0]:+.4f}/{g[1][i, 1]:+.4f}" for m, g in gains.items()
                    )
                    for i, p in enumerate(corrs)
                )
                + " (mean gain task 1/task 2)",
            )
        seesaw = [
            f"{m}@{p:g}"
            for m, g in gains.items()
            for i, p in enumerate(corrs)
            if g[1][i, 0] * g[1][i, 1] < 0
        ]
        add(
            "PLE20: SB/MMoE sometimes show a seesaw (one task gains, the other loses)",
            any(s.split("@")[0] in ("shared_bottom", "mmoe") for s in seesaw),
            "cells with opposite-sign mean gains: " + (", ".join(seesaw) or "none"),
        )
    return claims


def claims_markdown(claims: list[dict]) -> str:
    """Claims as a markdown table."""
    mark = {True: "yes", False: "**no**", None: "n/a"}
    lines = ["| claim | reproduces here | numbers |", "|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {mark[c['holds']]} | {c['evidence']} |")
    return "\n".join(lines)
