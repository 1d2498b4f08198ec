"""``fpc-jax report``: merge the summaries and curves of study runs, and report per method the IQM
and mean with 90% percentile stratified bootstrap CIs (Agarwal et al. 2021, "Deep RL at the Edge
of the Statistical Precipice", Sec. 4; rliable's ``StratifiedBootstrap``, written with numpy: see
docs/report.md), as a README table, a CSV, a Figure-7-style bar chart and curves with CI bands."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from fpc_jax.experiments import diagnostics_plot, results
from fpc_jax.experiments.bootstrap import ReportError, _seed, bootstrap_ci, iqm, mean

__all__ = ["ReportError", "bootstrap_ci", "iqm", "mean", "merge", "report"]

SEQUENCE_METRICS = ("far_success_min", "far_success_final", "close_success_final",
                    "full_success_final")  # fmt: skip
APPLE_METRICS = ("forgetting", "final_success")
METRICS = SEQUENCE_METRICS + APPLE_METRICS
CURVES_FILES = ("finetune_curves.npz", "sweep_curves.npz")  # study/host_ppo, robotic_sequence
LENGTH_FIELDS = {"finetune_steps", "seeds", "methods", "checkpoint_every", "workers", "out", "seed"}
"""Config fields that an extension or another invocation of one study may change."""
TITLES = {
    "far_success_min": "Far stages: min over fine-tuning",
    "far_success_final": "Far stages: final",
    "close_success_final": "Close stages: final",
    "full_success_final": "Whole sequence: final",
    "forgetting": "Forgetting",
    "final_success": "Final success",
}
CSV_COLUMNS = ("method", "metric", "n", "iqm", "iqm_lo", "iqm_hi", "mean", "mean_lo", "mean_hi")


@dataclass
class Run:
    """One (method, seed) run: its summary row and, where its dir has curves, its curves."""

    method: str
    seed: int
    row: dict[str, float]
    source: Path
    env_steps: float  # env steps per run of its study (the longer of two duplicates wins)
    order: int  # position of its dir on the command line (ties: the later dir wins)
    base: int = 0  # the study's base PRNG seed (config ``seed``): runs are (method, base, seed)
    x: np.ndarray | None = None  # (evals,) env steps of the curve rows
    stages: np.ndarray | None = None  # (evals, heads) success of each stage alone
    all_solved: np.ndarray | None = None  # (evals,)
    diag: dict[str, np.ndarray] | None = None  # {name: (evals,)}: diagnostics_plot.run_series


@dataclass
class Study:
    kind: str  # "sequence" | "apple"
    runs: list[Run]
    notes: list[str] = field(default_factory=list)
    stage_names: tuple[str, ...] = ()
    far_names: tuple[str, ...] = ()

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.runs))


def aggregate(study: Study, metrics: Sequence[str], reps: int, seed: int) -> list[dict]:
    """Rows of ``CSV_COLUMNS``: per method and metric, n runs (finite values), IQM and mean with
    their 90% CIs (NaN where no run has a finite value)."""
    out = []
    for m in study.methods:
        for metric in metrics:
            v = np.array([r.row[metric] for r in study.runs if r.method == m], np.float64)
            v = v[np.isfinite(v)]
            row = {"method": m, "metric": metric, "n": len(v)}
            for name, fn in (("iqm", iqm), ("mean", mean)):
                if len(v):
                    p, lo, hi = bootstrap_ci(v, fn, reps, _seed(seed, m, metric, name))
                else:
                    p = lo = hi = math.nan
                row.update({name: float(p), f"{name}_lo": float(lo), f"{name}_hi": float(hi)})
            out.append(row)
    return out


def _read_summary(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        data = {}
    return data if isinstance(data, dict) else {}


def _curves(run_dir: Path, cfg: dict, far: Sequence[int]) -> tuple[np.ndarray, ...] | None:
    """(x, stage_success (evals, runs, heads), all_solved (evals, runs), diagnostics
    ``{name: (runs, evals)}``, ``diagnostics_plot.run_series``) of a dir, or None."""
    path = next((run_dir / n for n in CURVES_FILES if (run_dir / n).is_file()), None)
    if path is None:
        return None
    with np.load(path) as d:
        arrays = {k.replace("__", "/"): d[k] for k in d.files}  # host_ppo writes a__b for a/b
    if "eval/stage_success" not in arrays:
        return None
    stage = arrays["eval/stage_success"]
    every = cfg.get("steps_per_chunk") or 1
    x = arrays.get("env_steps", np.arange(stage.shape[0]) * every)
    solved = arrays.get("eval/all_solved", np.full(stage.shape[:2], np.nan))
    diag = diagnostics_plot.run_series(arrays, range(stage.shape[1]), far)
    return np.asarray(x, np.float64), stage, solved, diag


def load_dir(run_dir: str | Path, order: int = 0) -> tuple[str, list[Run], dict]:
    """The kind ("sequence" | "apple"), runs and config (config.yaml, {} if none) of one run dir,
    or of a summary CSV given as a path (e.g. docs/results/apple/fig3a_summary.csv)."""
    p = Path(run_dir)
    summary = p if p.suffix == ".csv" else p / "summary.csv"
    if not summary.is_file():
        raise ReportError(f"{p}: no summary.csv (a study run dir has one; see study.py)")
    d = summary.parent
    cols, rows = _read_summary(summary)
    if {"M", "c", "seed"} <= set(cols):
        kind, need = "apple", APPLE_METRICS
    elif {"method", "seed"} <= set(cols):
        kind, need = "sequence", SEQUENCE_METRICS
    else:
        raise ReportError(f"{summary}: neither a study (method, seed, ...) nor an apple "
                          f"(M, c, seed, ...) summary; columns {cols}")  # fmt: skip
    missing = [c for c in need if c not in cols]
    if missing:
        raise ReportError(f"{summary}: missing columns {missing}")
    cfg = _yaml(d / "config.yaml")
    info = json.loads((d / "run_info.json").read_text()) if (d / "run_info.json").is_file() else {}
    steps = float(info.get("env_steps_per_run") or cfg.get("finetune_steps") or 0)
    sequence = kind == "sequence" and summary.name == "summary.csv"
    curves = _curves(d, cfg, info.get("far_stages") or ()) if sequence else None
    labels = [tuple(lab) for lab in info.get("labels", [])]
    runs = []
    for i, r in enumerate(rows):
        if r.get("nonfinite_at") not in (None, ""):
            print(f"[report] warning: {summary}: run {r['method']} seed {r['seed']} became "
                  f"non-finite in chunk {r['nonfinite_at']}; left out", file=sys.stderr)
            continue
        method = r["method"] if kind == "sequence" else f"M={r['M']}, c={r['c']}"
        run = Run(method, int(float(r["seed"])), {c: _float(r.get(c)) for c in need}, summary,
                  steps, order, int(cfg.get("seed") or 0))  # fmt: skip
        if curves is not None:
            j = labels.index((run.method, run.seed)) if (run.method, run.seed) in labels else i
            x, stage, solved, diag = curves
            if j < stage.shape[1]:
                run.x, run.stages, run.all_solved = x, stage[:, j], solved[:, j]
                run.diag = {k: v[j] for k, v in diag.items()} or None
        runs.append(run)
    return kind, runs, cfg


def _float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def merge(run_dirs: Sequence[str | Path]) -> Study:
    """Union of the runs of ``run_dirs``. A run is (method, base seed, seed index): the same one in
    two dirs (a resumed or extended study) keeps the run with more env steps, on a tie the later
    dir given, and a note says which was dropped; another base seed (``seed=1``) adds runs."""
    if not run_dirs:
        raise ReportError("no RUN_DIR given")
    kinds: dict[str, str] = {}
    kept: dict[tuple[str, int, int], Run] = {}
    notes: list[str] = []
    configs: dict[str, dict] = {}
    for order, d in enumerate(run_dirs):
        kind, runs, cfg = load_dir(d, order)
        configs[str(d)] = cfg
        kinds.setdefault(kind, str(d))
        if len(kinds) > 1:
            raise ReportError(f"cannot mix an apple summary with a sequence study: "
                              f"{kinds['apple']} vs {kinds['sequence']}")  # fmt: skip
        for r in runs:
            old = kept.get((r.method, r.base, r.seed))
            if old is not None:
                new_wins = (r.env_steps, r.order) >= (old.env_steps, old.order)
                win, lose = (r, old) if new_wins else (old, r)
                why = "more env steps" if win.env_steps != lose.env_steps else "later given"
                notes.append(f"{r.method} seed {r.seed} (base seed {r.base}): kept "
                             f"{win.source.parent} ({win.env_steps:.0f} env steps), dropped "
                             f"{lose.source.parent} ({lose.env_steps:.0f}); {why}")  # fmt: skip
                r = win
            kept[(r.method, r.base, r.seed)] = r
    if not kept:
        raise ReportError(f"no runs (empty method set) in {', '.join(map(str, run_dirs))}")
    runs = sorted(kept.values(), key=lambda r: (r.order, r.seed))
    first = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in sorted(
        kept.values(), key=lambda r: r.order)))}  # fmt: skip
    runs.sort(key=lambda r: (first[r.method], r.base, r.seed))
    cfg0 = next((c for c in configs.values() if c), {})
    for d, c in configs.items():
        diff = sorted(k for k in set(c) & set(cfg0) if k not in LENGTH_FIELDS
                      and c[k] != cfg0[k])  # fmt: skip
        if diff:
            notes.append(f"{d}: config differs from the first dir's in {', '.join(diff)} "
                         "(merged by method label all the same)")  # fmt: skip
    names, far = tuple(cfg0.get("tasks") or ()), tuple(cfg0.get("far_tasks") or ())
    return Study(next(iter(kinds)), runs, notes, names, far)


def _cell(p: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(study: Study, rows: list[dict], metrics: Sequence[str], reps: int) -> str:
    head = ["method", "n"] + [h for m in metrics for h in (f"{m} IQM [90% CI]", "mean")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["method"], r["metric"]): r for r in rows}
    for m in study.methods:
        n = max(by[(m, k)]["n"] for k in metrics)
        cells = [m, str(n)]
        for k in metrics:
            r = by[(m, k)]
            cells += [_cell(r["iqm"], r["iqm_lo"], r["iqm_hi"]),
                      "n/a" if math.isnan(r["mean"]) else f"{r['mean']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({str(r.source.parent) for r in study.runs})
    lines += ["", f"IQM: mean of the middle 50% of runs; 90% percentile stratified bootstrap CI "
              f"over runs ({reps} resamples). Runs from: {', '.join(sources)}."]  # fmt: skip
    lines += [f"- {n}" for n in study.notes]
    return "\n".join(lines) + "\n"


def plot_bars(study: Study, rows: list[dict], metrics: Sequence[str], path: Path) -> None:
    """Figure 7 of Agarwal et al. 2021: per metric a panel, per method a bar at the IQM with its
    90% CI as a whisker."""
    from fpc_jax.experiments import plotting  # matplotlib only when drawing: cli imports METRICS

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
    from matplotlib import ticker

    from fpc_jax.experiments import plotting

    have = [r for r in study.runs if r.stages is not None]
    if not have:
        return False, [f"no {' or '.join(CURVES_FILES)} in any dir: no fig_curves.png"]
    notes = sorted({f"no curves in {r.source.parent}: its runs are not in fig_curves.png"
                    for r in study.runs if r.stages is None})  # fmt: skip
    heads = {r.stages.shape[1] for r in have}
    if len(heads) > 1:
        raise ReportError(f"curves with different stage counts {sorted(heads)} cannot be merged")
    k = heads.pop()
    names = study.stage_names if len(study.stage_names) == k else tuple(f"stage {s}" for s in
                                                                        range(k))  # fmt: skip
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
    fig.suptitle("Success during fine-tuning per method: IQM over runs, 90% bootstrap band",
                 fontsize=10)  # fmt: skip
    plotting.save(fig, path)
    return True, notes


def report(run_dirs: Sequence[str | Path], out: str | Path, metrics: Sequence[str] | None = None,
           reps: int = 2000, seed: int = 0, log=print) -> Path:  # fmt: skip
    """Merge ``run_dirs`` and write report.md, report.csv, fig_bars.png, fig_curves.png in
    ``out`` (fig_curves.png only where some dir has curves)."""
    if reps < 1:
        raise ReportError(f"--reps must be positive, got {reps}")
    study = merge(run_dirs)
    own = SEQUENCE_METRICS if study.kind == "sequence" else APPLE_METRICS
    metrics = list(dict.fromkeys(metrics or own))
    wrong = [m for m in metrics if m not in own]
    if wrong:
        raise ReportError(f"--metric {', '.join(wrong)} is not a metric of this {study.kind} study "
                          f"({', '.join(own)})")  # fmt: skip
    out = results.make_run_dir(out)
    for stale in ("fig_curves.png", "fig_diagnostics.png"):  # from an earlier report
        (out / stale).unlink(missing_ok=True)
    rows = aggregate(study, metrics, reps, seed)
    results.write_csv(out / "report.csv", rows, CSV_COLUMNS)
    plot_bars(study, rows, metrics, out / "fig_bars.png")
    written = ["report.md", "report.csv", "fig_bars.png"]
    if study.kind == "sequence":
        drawn, notes = plot_curves(study, reps, seed, out / "fig_curves.png")
        study.notes += notes
        written += ["fig_curves.png"] if drawn else []
        if diagnostics_plot.plot_report(study, reps, seed, out / "fig_diagnostics.png"):
            written.append("fig_diagnostics.png")
    else:
        study.notes.append("apple summaries have no per-stage curves: no fig_curves.png")
    (out / "report.md").write_text(markdown(study, rows, metrics, reps))
    for n in study.notes:
        log(f"[report] {n}")
    log(f"[report] {len(study.runs)} runs, {len(study.methods)} methods; wrote "
        f"{', '.join(str(out / w) for w in written)}")  # fmt: skip
    return out
