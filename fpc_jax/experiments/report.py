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

SEQUENCE_METRICS = (
    "far_success_min",
    "far_success_final",
    "close_success_final",
    "full_success_final",
)
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
        raise ReportError(
            f"{summary}: neither a study (method, seed, ...) nor an apple "
            f"(M, c, seed, ...) summary; columns {cols}"
        )
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
            print(
                f"[report] warning: {summary}: run {r['method']} seed {r['seed']} became "
                f"non-finite in chunk {r['nonfinite_at']}; left out",
                file=sys.stderr,
            )
            continue
        method = r["method"] if kind == "sequence" else f"M={r['M']}, c={r['c']}"
        run = Run(
            method,
            int(float(r["seed"])),
            {c: _float(r.get(c)) for c in need},
            summary,
            steps,
            order,
            int(cfg.get("seed") or 0),
        )
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
            raise ReportError(
                f"cannot mix an apple summary with a sequence study: "
                f"{kinds['apple']} vs {kinds['sequence']}"
            )
        for r in runs:
            old = kept.get((r.method, r.base, r.seed))
            if old is not None:
                new_wins = (r.env_steps, r.order) >= (old.env_steps, old.order)
                win, lose = (r, old) if new_wins else (old, r)
                why = "more env steps" if win.env_steps != lose.env_steps else "later given"
                notes.append(
                    f"{r.method} seed {r.seed} (base seed {r.base}): kept "
                    f"{win.source.parent} ({win.env_steps:.0f} env steps), dropped "
                    f"{lose.source.parent} ({lose.env_steps:.0f}); {why}"
                )
                r = win
            kept[(r.method, r.base, r.seed)] = r
    if not kept:
        raise ReportError(f"no runs (empty method set) in {', '.join(map(str, run_dirs))}")
    runs = sorted(kept.values(), key=lambda r: (r.order, r.seed))
    first = {
        m: i
        for i, m in enumerate(
            dict.fromkeys(r.method for r in sorted(kept.values(), key=lambda r: r.order))
        )
    }
    runs.sort(key=lambda r: (first[r.method], r.base, r.seed))
    cfg0 = next((c for c in configs.values() if c), {})
    for d, c in configs.items():
        diff = sorted(k for k in set(c) & set(cfg0) if k not in LENGTH_FIELDS and c[k] != cfg0[k])
        if diff:
            notes.append(
                f"{d}: config differs from the first dir's in {', '.join(diff)} "
                "(merged by method label all the same)"
            )
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
            cells += [
                _cell(r["iqm"], r["iqm_lo"], r["iqm_hi"]),
                "n/a" if math.isnan(r["mean"]) else f"{r['mean']:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({str(r.source.parent) for r in study.runs})
    lines += [
        "",
        f"IQM: mean of the middle 50% of runs; 90% percentile stratified bootstrap CI "
        f"over runs ({reps} resamples). Runs from: {', '.join(sources)}.",
    ]
    lines += [f"- {n}" for n in study.notes]
    return "\n".join(lines) + "\n"


def report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    metrics: Sequence[str] | None = None,
    reps: int = 2000,
    seed: int = 0,
    log=print,
) -> Path:
    """Merge ``run_dirs`` and write report.md, report.csv, fig_bars.png, fig_curves.png in
    ``out`` (fig_curves.png only where some dir has curves)."""
    if reps < 1:
        raise ReportError(f"--reps must be positive, got {reps}")
    study = merge(run_dirs)
    own = SEQUENCE_METRICS if study.kind == "sequence" else APPLE_METRICS
    metrics = list(dict.fromkeys(metrics or own))
    wrong = [m for m in metrics if m not in own]
    if wrong:
        raise ReportError(
            f"--metric {', '.join(wrong)} is not a metric of this {study.kind} study "
            f"({', '.join(own)})"
        )
    out = results.make_run_dir(out)
    for stale in ("fig_curves.png", "fig_diagnostics.png"):  # from an earlier report
        (out / stale).unlink(missing_ok=True)
    from fpc_jax.experiments.report_plots import plot_bars, plot_curves  # matplotlib when drawing

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
    log(
        f"[report] {len(study.runs)} runs, {len(study.methods)} methods; wrote "
        f"{', '.join(str(out / w) for w in written)}"
    )
    return out
