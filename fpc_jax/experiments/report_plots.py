"""The figures of ``fpc-jax report`` (``report.report`` draws them): a Figure-7-style bar chart of
IQM with 90% CIs per method and metric, and success curves with bootstrap bands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import ticker

from fpc_jax.experiments import plotting
from fpc_jax.experiments.bootstrap import ReportError, _seed, bootstrap_ci, iqm
from fpc_jax.experiments.report import APPLE_METRICS, CURVES_FILES, TITLES, Study


def plot_bars(study: Study, rows: list[dict], metrics: Sequence[str], path: Path) -> None:
    """Figure 7 of Agarwal et al. 2021: per metric a panel, per method a bar at the IQM with its
    90% CI as a whisker."""
    methods = study.methods
    fig, axes = plotting.figure(len(metrics), width=3.4, height=0.6 + 0.45 * len(methods))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    by = {(r["method"], r["metric"]): r for r in rows}
    ys = np.arange(len(methods))[::-1]
    for ax, k in zip(axes[0], metrics, strict=True):
        for y, m in zip(ys, methods, strict=True):
            r = by[(m, k)]
            if math.isnan(r["iqm"]):
                ax.text(0.02, y, "n/a", va="center", fontsize=8)
                continue
            err = [[r["iqm"] - r["iqm_lo"]], [r["iqm_hi"] - r["iqm"]]]
            ax.barh(y, r["iqm"], color=colors[m], alpha=0.75, height=0.7)
            ax.errorbar(r["iqm"], y, xerr=err, color="k", capsize=3, linewidth=1)
            ax.text(r["iqm_hi"] + 0.02, y, f"{r['iqm']:.2f}", va="center", fontsize=7)
        title = TITLES[k] if k in APPLE_METRICS else f"{TITLES[k]}\n({k})"
        ax.set(title=title, xlim=(0, 1.18), xlabel="IQM (90% CI)")
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ticks = [f"{m} ({by[(m, k)]['n']})" for m in methods]
        ax.set_yticks(ys, ticks if ax is axes[0, 0] else [""] * len(methods))
        ax.grid(axis="x", alpha=0.3)
    n = len(study.runs)
    fig.suptitle(f"IQM per method (runs) over {n} runs, 90% stratified bootstrap CI", fontsize=10)
    plotting.save(fig, path)


def plot_curves(study: Study, reps: int, seed: int, path: Path) -> tuple[bool, list[str]]:
    """Per-stage success over env steps (IQM and 90% bootstrap band per method, on the eval grid
    of each method's shortest run), plus the whole-sequence success; returns (drawn, notes on
    runs without curves)."""
    have = [r for r in study.runs if r.stages is not None]
    if not have:
        return False, [f"no {' or '.join(CURVES_FILES)} in any dir: no fig_curves.png"]
    notes = sorted(
        {
            f"no curves in {r.source.parent}: its runs are not in fig_curves.png"
            for r in study.runs
            if r.stages is None
        }
    )
    heads = {r.stages.shape[1] for r in have}
    if len(heads) > 1:
        raise ReportError(f"curves with different stage counts {sorted(heads)} cannot be merged")
    k = heads.pop()
    names = (
        study.stage_names if len(study.stage_names) == k else tuple(f"stage {s}" for s in range(k))
    )
    fig, axes = plotting.figure(k + 2, width=3.4, height=3.0)
    for i, m in enumerate(study.methods):
        sel = [r for r in have if r.method == m]
        if not sel:
            continue
        for s in range(k + 1):
            ys = [(r.x, r.stages[:, s] if s < k else r.all_solved) for r in sel]
            grid = min((x for x, _ in ys), key=lambda x: x[-1])  # the shortest run's evals
            if s == 0 and any(x[-1] > grid[-1] for x, _ in ys):
                notes.append(f"{m}: curves cut at {grid[-1]:.0f} env steps, its shortest run")
            arr = np.stack([np.interp(grid, x, y) for x, y in ys])
            if not np.isfinite(arr).all():
                continue
            p, lo, hi = bootstrap_ci(arr, iqm, reps, _seed(seed, m, str(s)))
            ax = axes[0, s]
            ax.plot(grid, p, color=f"C{i % 10}", label=f"{m} ({len(sel)})")
            ax.fill_between(grid, lo, hi, color=f"C{i % 10}", alpha=0.2, linewidth=0)
    for s, ax in enumerate(axes[0, : k + 1]):
        far = " [Far]" if s < k and names[s] in study.far_names else ""
        title = f"{names[s]}{far} alone" if s < k else "whole sequence: all stages solved"
        ax.set(title=title, xlabel="env steps", ylim=(-0.05, 1.05))
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("success (IQM, 90% CI)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, k + 1].axis("off")
    axes[0, k + 1].legend(handles, labels, title="method (runs)", loc="center left", fontsize=8)
    fig.suptitle(
        "Success during fine-tuning per method: IQM over runs, 90% bootstrap band", fontsize=10
    )
    plotting.save(fig, path)
    return True, notes
