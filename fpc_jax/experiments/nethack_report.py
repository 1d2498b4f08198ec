"""NetHack's own outputs beside the shared ``summary.csv``: ``scores.csv`` (in-game score gained
and deepest Dlvl, per run) and ``fig_nethack.png`` (score curves from the Close and Far starts,
deepest-Dlvl histograms before and after fine-tuning; the paper shows score and depth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.experiments import plotting

SCORE_COLUMNS = [
    "method",
    "seed",
    "score_far_pretrained",
    "score_far_min",
    "score_far_final",
    "score_close_final",
    "max_depth_far_final",
    "max_depth_close_final",
]


def score_rows(labels, curves: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per run: the Far score at the first, lowest and last evaluation, the Close score
    and the mean deepest Dlvl per episode at the last one."""
    far, close = curves["eval/score_far"], curves["eval/score_close"]  # (evals, runs)
    rows = []
    for i, (method, s) in enumerate(labels):
        rows.append(
            {
                "method": method,
                "seed": s,
                "score_far_pretrained": float(far[0, i]),
                "score_far_min": float(far[:, i].min()),
                "score_far_final": float(far[-1, i]),
                "score_close_final": float(close[-1, i]),
                "max_depth_far_final": float(curves["eval/max_depth_far"][-1, i].mean()),
                "max_depth_close_final": float(curves["eval/max_depth_close"][-1, i].mean()),
            }
        )
    return rows


def score_table(cfg, rows) -> list[str]:
    cols = SCORE_COLUMNS[2:]
    lines = [f"{'method':>8} " + " ".join(f"{c:>21}" for c in cols)]
    for m in cfg.methods:
        sel = [r for r in rows if r["method"] == m]
        lines.append(f"{m:>8} " + " ".join(f"{np.mean([r[c] for r in sel]):>21.2f}" for c in cols))
    return lines


def plot_nethack(cfg, labels, curves: dict[str, np.ndarray], out_dir: Path) -> None:
    methods = list(cfg.methods)
    idx = {m: [i for i, (mm, _) in enumerate(labels) if mm == m] for m in methods}
    x = np.arange(curves["eval/score_far"].shape[0]) * cfg.steps_per_chunk
    fig, axes = plotting.figure(4)
    for m in methods:
        plotting.band(axes[0, 0], x, curves["eval/score_far"][:, idx[m]].T, m)
        plotting.band(axes[0, 1], x, curves["eval/score_close"][:, idx[m]].T, m)
    axes[0, 0].set(
        title=f"score gained from Dlvl {cfg.far_depth} starts [Far]",
        xlabel="env steps",
        ylabel="in-game score per episode",
    )
    axes[0, 1].set(title="score gained from the game start [Close]", xlabel="env steps")
    axes[0, 0].legend(fontsize=7)
    depth = curves["eval/max_depth_close"]  # (evals, runs, episodes)
    top = int(max(depth.max(), curves["eval/max_depth_far"].max(), cfg.far_depth + 1))
    bins = np.arange(1, top + 2)
    width = 0.8 / max(len(methods), 1)
    for j, (ax, key, title) in enumerate(
        (
            (axes[0, 2], "eval/max_depth_far", "Far starts"),
            (axes[0, 3], "eval/max_depth_close", "game start"),
        )
    ):
        for k, m in enumerate(methods):
            first = np.histogram(curves[key][0, idx[m]].ravel(), bins)[0]
            last = np.histogram(curves[key][-1, idx[m]].ravel(), bins)[0]
            pos = bins[:-1] + (k - (len(methods) - 1) / 2) * width
            (bar,) = ax.bar(pos, last / max(last.sum(), 1), width, label=f"{m} (final)")[:1]
            ax.step(
                bins[:-1],
                first / max(first.sum(), 1),
                where="mid",
                color=bar.get_facecolor(),
                alpha=0.6,
                linestyle=":" if j else "--",
            )
        ax.set(
            title=f"deepest Dlvl, {title}\n(bars: final eval, lines: first = pi*)",
            xlabel="Dlvl",
            xticks=bins[:-1],
        )
    axes[0, 2].set_ylabel("fraction of episodes")
    axes[0, 2].legend(fontsize=7)
    fig.suptitle(
        f"{cfg.name}: NetHack score and depth during fine-tuning "
        f"({plotting.seeds_label(cfg.seeds)})"
    )
    plotting.save(fig, out_dir / "fig_nethack.png")
