"""Results of a methods x seeds study (toy or Meta-World): summary rows, a printed table, and
Figure 4/5-shaped plots (each stage run alone, and the whole sequence; mean and 90% CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.experiments import plotting

SUMMARY_COLUMNS = [
    "method", "seed", "full_success_final", "stages_solved_final", "far_success_pretrained",
    "far_success_min", "far_success_final", "close_success_final",
]  # fmt: skip


def summarize(labels, curves, far, env) -> list[dict[str, Any]]:
    stage = curves["eval/stage_success"]  # (evals, runs, heads)
    far_curve = stage[:, :, list(far)].mean(-1)
    close = [k for k in range(env.num_heads) if k not in far]
    rows = []
    for i, (method, s) in enumerate(labels):
        rows.append({
            "method": method, "seed": s,
            "full_success_final": float(curves["eval/all_solved"][-1, i]),
            "stages_solved_final": float(curves["eval/stages_solved_frac"][-1, i]),
            "far_success_pretrained": float(far_curve[0, i]),
            "far_success_min": float(far_curve[:, i].min()),
            "far_success_final": float(far_curve[-1, i]),
            "close_success_final": float(stage[-1, i, close].mean()) if close else float("nan"),
        })  # fmt: skip
    return rows


def table(cfg: Any, rows) -> list[str]:
    cols = ("full_success_final", "far_success_pretrained", "far_success_min", "far_success_final")
    lines = [f"{'method':>8} " + " ".join(f"{c:>22}" for c in cols)]
    for m in cfg.methods:
        sel = [r for r in rows if r["method"] == m]
        lines.append(f"{m:>8} " + " ".join(f"{np.mean([r[c] for r in sel]):>22.3f}" for c in cols))
    return lines


def plot_study(cfg, env, labels, curves, x, far, out_dir: Path) -> None:
    """Figure 4/5-shaped plots: full-sequence success and each stage's success alone, per method
    (mean and 90% CI over seeds)."""
    methods = list(cfg.methods)
    idx = {m: [i for i, (mm, _) in enumerate(labels) if mm == m] for m in methods}
    fig, axes = plotting.figure(2)
    for m in methods:
        plotting.band(axes[0, 0], x, curves["eval/all_solved"][:, idx[m]].T, m)
        plotting.band(axes[0, 1], x, curves["eval/stages_solved_frac"][:, idx[m]].T, m)
    axes[0, 0].set(title="Full sequence: all stages solved", xlabel="env steps", ylim=(-0.05, 1.05))
    axes[0, 1].set(title="Stages solved / K", xlabel="env steps", ylim=(-0.05, 1.05))
    axes[0, 0].legend(fontsize=7)
    plotting.save(fig, out_dir / "fig_sequence.png")
    k = env.num_heads
    fig, axes = plotting.figure(k)
    for s in range(k):
        for m in methods:
            plotting.band(axes[0, s], x, curves["eval/stage_success"][:, idx[m], s].T, m)
        kind = "Far (pre-trained)" if s in far else "Close"
        axes[0, s].set(title=f"{env.stage_names[s]} alone [{kind}]", xlabel="env steps",
                       ylim=(-0.05, 1.05))  # fmt: skip
    axes[0, 0].set_ylabel("success")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{cfg.name}: per-stage success during fine-tuning ({cfg.seeds} seeds)")
    plotting.save(fig, out_dir / "fig_stages.png")
