"""Results of a methods x seeds study (toy or Meta-World): summary rows, a printed table, and
Figure 4/5-shaped plots (each stage run alone, and the whole sequence; mean and 90% CI), plus the
FPC diagnostics (``fig_diagnostics.png``, fpc_jax/experiments/diagnostics_plot.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from fpc_jax.experiments import diagnostics_plot, plotting, results

SUCCESS_COLUMNS = (
    "full_success_final",
    "stages_solved_final",
    "far_success_pretrained",
    "far_success_min",
    "far_success_final",
    "close_success_final",
)
MODE_COLUMNS = tuple(
    f"{c}_{mode}"
    for mode in ("stochastic", "deterministic")
    for c in ("far_success_min", "far_success_final", "full_success_final")
)
SUMMARY_COLUMNS = ["method", "seed", *SUCCESS_COLUMNS, "nonfinite_at", *MODE_COLUMNS]
"""``nonfinite_at``: '' for a healthy run; else the chunk (evaluation row, 1-based) in which a
training statistic of the run first became NaN or inf; such runs are left out of every mean.
The success columns without a suffix come from ``eval/*`` (SAC: stochastic with
``eval_policy: both``, as Continual World's plots); ``*_stochastic`` / ``*_deterministic`` from
``eval/<mode>/*`` where recorded, else empty."""


@dataclasses.dataclass(frozen=True)
class Stages:
    """What the summary and the plots need of an env: its stage names (one head each), for the
    host-stepped studies that have no ``SequenceEnv`` (real envs pass themselves)."""

    stage_names: tuple[str, ...]

    @property
    def num_heads(self) -> int:
        return len(self.stage_names)


def nonfinite_rows(curves: dict[str, np.ndarray]) -> np.ndarray:
    """(runs,) the 1-based chunk in which each run's training statistics (``train/*``, all rows
    but the final evaluation, which has none) or evaluations (``eval/*``) first became non-finite;
    0 where all are finite."""
    n_rows, n_runs = curves["eval/stage_success"].shape[:2]
    bad = np.zeros((n_rows, n_runs), bool)
    for k, v in curves.items():
        v = np.asarray(v)
        if v.shape[:2] != (n_rows, n_runs) or not np.issubdtype(v.dtype, np.number):
            continue  # not a per-run curve
        v = v.astype(np.float64).reshape(n_rows, n_runs, -1)
        if k.startswith("train/"):
            bad[:-1] |= ~np.isfinite(v[:-1]).all(-1)
        elif k.startswith("eval/"):
            bad |= ~np.isfinite(v).all(-1)
    first = np.argmax(bad, axis=0) + 1
    return np.where(bad.any(0), first, 0)


def healthy(rows: list[dict[str, Any]], log=print) -> list[dict[str, Any]]:
    """The rows without a ``nonfinite_at`` flag; a warning names each row left out."""
    bad = [r for r in rows if r.get("nonfinite_at") not in (None, "", 0, "0")]
    for r in bad:
        log(
            f"warning: run {r['method']} seed {r['seed']} became non-finite in chunk "
            f"{r['nonfinite_at']}; left out of the means"
        )
    return [r for r in rows if r not in bad]


def summarize(labels, curves, far, env) -> list[dict[str, Any]]:
    stage = curves["eval/stage_success"]  # (evals, runs, heads)
    flags = nonfinite_rows(curves)
    far_curve = stage[:, :, list(far)].mean(-1)
    close = [k for k in range(env.num_heads) if k not in far]
    rows = []
    for i, (method, s) in enumerate(labels):
        rows.append(
            {
                "method": method,
                "seed": s,
                "full_success_final": float(curves["eval/all_solved"][-1, i]),
                "stages_solved_final": float(curves["eval/stages_solved_frac"][-1, i]),
                "far_success_pretrained": float(far_curve[0, i]),
                "far_success_min": float(far_curve[:, i].min()),
                "far_success_final": float(far_curve[-1, i]),
                "close_success_final": float(stage[-1, i, close].mean()) if close else float("nan"),
                "nonfinite_at": int(flags[i]) if flags[i] else "",
                **_mode_columns(curves, far, i),
            }
        )
    return rows


def _mode_columns(curves: dict[str, np.ndarray], far, i: int) -> dict[str, Any]:
    """Run ``i``'s Far min / final and full-task final of each recorded evaluation mode ('' for
    a mode not recorded, e.g. every PPO study's)."""
    out: dict[str, Any] = dict.fromkeys(MODE_COLUMNS, "")
    for mode in ("stochastic", "deterministic"):
        stage = curves.get(f"eval/{mode}/stage_success")
        if stage is None:
            continue
        far_curve = stage[:, i, list(far)].mean(-1)
        out[f"far_success_min_{mode}"] = float(far_curve.min())
        out[f"far_success_final_{mode}"] = float(far_curve[-1])
        out[f"full_success_final_{mode}"] = float(curves[f"eval/{mode}/all_solved"][-1, i])
    return out


def table(cfg: Any, rows, log=print) -> list[str]:
    """Per-method means of the healthy runs (``healthy``: non-finite runs are left out)."""
    cols = ("full_success_final", "far_success_pretrained", "far_success_min", "far_success_final")
    lines = [f"{'method':>8} " + " ".join(f"{c:>22}" for c in cols)]
    rows = healthy(rows, log)
    for m in cfg.methods:
        sel = [r for r in rows if r["method"] == m]
        if not sel:
            lines.append(f"{m:>8} (every run non-finite)")
            continue
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
    axes[0, 0].set(
        title="Full sequence: all stages solved",
        xlabel="env steps",
        ylim=(-0.05, 1.05),
        ylabel="fraction of sequence episodes",
    )
    axes[0, 1].set(
        title=f"Stages solved / K (K = {env.num_heads} stages)",
        xlabel="env steps",
        ylim=(-0.05, 1.05),
        ylabel="mean fraction of stages solved",
    )
    axes[0, 0].legend(fontsize=7)
    seeds = plotting.seeds_label(cfg.seeds)
    fig.suptitle(f"{cfg.name}: whole-sequence success during fine-tuning ({seeds})")
    plotting.save(fig, out_dir / "fig_sequence.png")
    k = env.num_heads
    fig, axes = plotting.figure(k)
    for s in range(k):
        for m in methods:
            plotting.band(axes[0, s], x, curves["eval/stage_success"][:, idx[m], s].T, m)
        kind = "Far (pre-trained)" if s in far else "Close"
        axes[0, s].set(
            title=f"{env.stage_names[s]} alone [{kind}]", xlabel="env steps", ylim=(-0.05, 1.05)
        )
    axes[0, 0].set_ylabel("success")
    axes[0, 0].legend(fontsize=7)
    seeds = plotting.seeds_label(cfg.seeds)
    fig.suptitle(f"{cfg.name}: per-stage success during fine-tuning ({seeds})")
    plotting.save(fig, out_dir / "fig_stages.png")
    groups = [(m, x, diagnostics_plot.run_series(curves, idx[m], far)) for m in methods]
    diagnostics_plot.plot_diagnostics(
        groups,
        out_dir / "fig_diagnostics.png",
        f"{cfg.name}: FPC diagnostics during fine-tuning (mean, 90% CI over {cfg.seeds} seeds)",
    )


def write_finetune(
    cfg: Any, env, labels, curves, far, out_dir: Path, info: dict[str, Any], log=print
) -> list[dict[str, Any]]:
    """What every fine-tuning study writes at its end: ``summary.csv``, the plots, and
    ``run_info.json`` (the environment, ``info`` with its ``wall_s``, the runs and the rate);
    logs the summary table. Returns the summary rows."""
    rows = summarize(labels, curves, far, env)
    results.write_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    x = np.arange(curves["eval/all_solved"].shape[0]) * cfg.steps_per_chunk
    plot_study(cfg, env, labels, curves, x, far, out_dir)
    n, wall = len(labels), info["wall_s"]
    results.write_json(
        out_dir / "run_info.json",
        {
            **results.environment_info(),
            **info,
            "runs": n,
            "labels": labels,
            "env_steps_per_run": cfg.finetune_steps,
            "far_stages": list(far),
            "agent_steps_per_s": n * cfg.finetune_steps / wall,
        },
    )
    for line in table(cfg, rows):
        log(line)
    log(f"[finetune] {wall:.0f}s wall; wrote {out_dir}/summary.csv and plots")
    return rows
