"""``fig_diagnostics.png``: the FPC diagnostics of a study (fpc_jax/retention/diagnostics.py), one
panel per quantity, a line per method with a band over its runs. Drawn by every fine-tuning run
(``study_report.plot_study``: seed mean, 90% CI) and by ``fpc-jax report`` (IQM, 90% stratified
bootstrap CI over the merged runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.experiments import plotting
from fpc_jax.experiments.bootstrap import _seed, bootstrap_ci, iqm

PANELS: tuple[tuple[str, str], ...] = (
    ("far_coverage", "Far stages: share of training steps"),
    ("far_kl", "KL(pi* || pi) on Far states"),
    ("far_logp", "log pi(a ~ pi*) on Far states"),
    ("far_value_gap", "critic - pi*'s critic on Far states"),
    ("actor_trunk_dist", "actor trunk: |theta - theta*| / |theta*|"),
    ("actor_far_head_dist", "actor Far heads: relative distance"),
    ("critic_trunk_dist", "critic trunk: relative distance"),
    ("critic_far_head_dist", "critic Far heads: relative distance"),
)
"""(name, title) of each panel; ``far_coverage`` is the row's next chunk of training."""

Band = Callable[..., None]  # band(ax, x, ys (runs, len(x)), label, color)


def run_series(curves: dict[str, np.ndarray], runs: Sequence[int], far: Sequence[int]) -> dict:
    """``{name: (runs, evals)}`` of the diagnostics in a curves file, for the run columns ``runs``:
    ``far_coverage`` (the Far stages' share of the training steps of the chunk after each
    evaluation; NaN on the final row), ``far_logp_star`` and every ``diag/<name>``."""
    idx = list(runs)
    out: dict[str, np.ndarray] = {}
    cov = curves.get("train_coverage")
    if cov is not None and np.ndim(cov) == 3 and far:
        out["far_coverage"] = np.asarray(cov)[:, idx][:, :, list(far)].sum(-1).T
    for k, v in curves.items():
        if k.startswith("diag/"):
            out[k.removeprefix("diag/")] = np.asarray(v, np.float64)[:, idx].T
    return out


def plot_diagnostics(
    groups: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]],
    path: Path,
    title: str,
    band: Band = plotting.band,
) -> bool:
    """Draw ``groups`` = [(method label, x (evals,), run_series output)] into ``path``; False
    (nothing written) when no group has a diagnostic. Panels no group has are left out."""
    names = [(n, t) for n, t in PANELS if any(n in s and _finite(s[n]) for _, _, s in groups)]
    if not names:
        return False
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plotting.figure(ncols, nrows, width=3.6, height=2.9)
    for ax, (name, panel) in zip(axes.flat, names, strict=False):
        for i, (label, x, series) in enumerate(groups):
            ys = series.get(name)
            if ys is None or not _finite(ys):
                continue
            xs = np.asarray(x, np.float64)
            if name == "far_coverage":  # chunk i's training lies between evaluations i and i+1
                xs, ys = (xs[:-1] + xs[1:]) / 2, ys[:, :-1]
            keep = np.isfinite(ys).all(0)
            band(ax, xs[keep], ys[:, keep], label, color=f"C{i % 10}")
            if name == "far_logp" and "far_logp_star" in series:
                ref = np.nanmean(series["far_logp_star"])
                ax.axhline(ref, color="k", ls=":", lw=1)
        if name == "far_kl":  # pi*'s own KL is 0; forgetting runs span decades
            ax.set_yscale("symlog", linthresh=0.1)
        ax.set(title=panel, xlabel="env steps")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    if any(n == "far_logp" for n, _ in names):
        ax = list(axes.flat)[[n for n, _ in names].index("far_logp")]
        ax.text(0.02, 0.02, "dotted: pi* itself", transform=ax.transAxes, fontsize=7)
    fig.suptitle(title, fontsize=10)
    plotting.save(fig, path)
    return True


def plot_report(study: Any, reps: int, seed: int, path: Path) -> bool:
    """``fig_diagnostics.png`` of ``fpc-jax report``'s merged runs (a ``report.Study``): per
    method the IQM and 90% bootstrap band of each diagnostic on the eval grid of its shortest run;
    False where no run has diagnostics."""
    groups = []
    for m in study.methods:
        sel = [r for r in study.runs if r.method == m and r.diag]
        if not sel:
            continue
        grid = min((r.x for r in sel), key=lambda x: x[-1])
        names = set.intersection(*(set(r.diag) for r in sel))
        series = {k: np.stack([np.interp(grid, r.x, r.diag[k]) for r in sel]) for k in names}
        groups.append((f"{m} ({len(sel)})", grid, series))

    def band(ax, x, ys, label, color=None):
        p, lo, hi = bootstrap_ci(ys, iqm, reps, _seed(seed, label, "diag"))
        ax.plot(x, p, label=label, color=color)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)

    title = "FPC diagnostics per method (runs): IQM over runs, 90% bootstrap band"
    return plot_diagnostics(groups, path, title, band=band)


def _finite(ys: np.ndarray) -> bool:
    return bool(np.isfinite(np.asarray(ys, np.float64)).any())
