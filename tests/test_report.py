"""fpc-jax report: IQM and bootstrap CIs against hand-computed values, merging run dirs (union of
seeds, duplicate resolution), the CLI on the recorded key-door study, and bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fpc_jax import cli
from fpc_jax.experiments import report
from fpc_jax.experiments.study_report import SUMMARY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
KEY_DOOR = ROOT / "docs" / "results" / "key_door" / "main"


def test_iqm_by_hand():
    # [0..7]: cut 8 // 4 = 2 runs from each end -> mean(2, 3, 4, 5) = 3.5
    assert report.iqm(np.arange(8)) == pytest.approx(3.5)
    # 5 runs: cut 1 from each end -> mean(1, 2, 10) = 13 / 3; the outlier 100 is cut
    assert report.iqm(np.array([100.0, 1, 2, 10, 0])) == pytest.approx(13 / 3)
    assert report.iqm(np.array([[0.0, 1], [1, 3], [2, 5], [3, 7]])) == pytest.approx([1.5, 4])


def test_bootstrap_ci_contains_estimate_narrows_and_is_deterministic():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(size=8), rng.uniform(size=200)
    p, lo, hi = report.bootstrap_ci(small, report.mean, reps=1000, seed=3)
    assert p == pytest.approx(small.mean())
    assert lo <= p <= hi
    p2, lo2, hi2 = report.bootstrap_ci(large, report.mean, reps=1000, seed=3)
    assert lo2 <= p2 <= hi2 and hi2 - lo2 < (hi - lo) / 2  # ~1/sqrt(n): 5x narrower
    assert report.bootstrap_ci(small, report.iqm, 500, 7) == report.bootstrap_ci(
        small, report.iqm, 500, 7
    )
    assert report.bootstrap_ci(small, report.iqm, 500, 7) != report.bootstrap_ci(
        small, report.iqm, 500, 8
    )
    assert report.bootstrap_ci(np.full(5, 0.4), report.iqm, 100, 0) == pytest.approx((0.4,) * 3)


def test_bootstrap_is_stratified_per_task():
    # task 0 constant: its runs are resampled only among themselves, so its CI is a point
    x = np.stack([np.full(6, 0.5), np.arange(6.0)], axis=1)
    p, lo, hi = report.bootstrap_ci(x, report.mean, reps=500, seed=0)
    assert (p[0], lo[0], hi[0]) == (0.5, 0.5, 0.5)
    assert lo[1] < p[1] < hi[1]


def _study_dir(path: Path, method_seeds, value: float, steps: int, base_seed: int = 0) -> Path:
    """A fake fine-tune run dir: summary.csv, run_info.json, config.yaml, finetune_curves.npz."""
    path.mkdir(parents=True)
    with open(path / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        for m, s in method_seeds:
            row = {c: value for c in SUMMARY_COLUMNS} | {"method": m, "seed": s}
            w.writerow(row | {"nonfinite_at": ""})
    labels = [list(ms) for ms in method_seeds]
    (path / "run_info.json").write_text(json.dumps({"labels": labels, "env_steps_per_run": steps}))
    (path / "config.yaml").write_text(f"name: t\nseed: {base_seed}\nsteps_per_chunk: 100\n")
    evals, n = steps // 100 + 1, len(labels)
    np.savez(
        path / "finetune_curves.npz",
        **{
            "eval/stage_success": np.full((evals, n, 3), value),
            "eval/all_solved": np.full((evals, n), value),
        },
    )
    return path


def test_merge_union_of_seeds_and_duplicates(tmp_path):
    a = _study_dir(tmp_path / "a", [("ft", 0), ("ft", 1), ("bc", 0)], 0.2, steps=400)
    b = _study_dir(tmp_path / "b", [("ft", 1), ("ft", 2)], 0.8, steps=800)  # extends ft seed 1
    c = _study_dir(tmp_path / "c", [("ft", 0)], 0.5, steps=400, base_seed=1)  # another base seed
    study = report.merge([a, b, c])
    got = {(r.method, r.base, r.seed): r.row["far_success_min"] for r in study.runs}
    assert got == {
        ("ft", 0, 0): 0.2,
        ("ft", 0, 1): 0.8,
        ("ft", 0, 2): 0.8,
        ("bc", 0, 0): 0.2,
        ("ft", 1, 0): 0.5,
    }
    assert study.methods == ["ft", "bc"]
    assert len(study.notes) == 1 and "ft seed 1" in study.notes[0]
    assert "more env steps" in study.notes[0] and str(b) in study.notes[0].split("dropped")[0]
    # same length: the later dir given wins
    a2 = _study_dir(tmp_path / "a2", [("bc", 0)], 0.9, steps=400)
    study = report.merge([a, a2])
    assert [r.row["far_success_min"] for r in study.runs if r.method == "bc"] == [0.9]
    assert "later given" in study.notes[0]
    rows = report.aggregate(report.merge([a, b]), ["far_success_min"], reps=200, seed=0)
    ft = next(r for r in rows if r["method"] == "ft")
    assert ft["n"] == 3 and ft["mean"] == pytest.approx((0.2 + 0.8 + 0.8) / 3)


def test_report_writes_curves_for_merged_dirs(tmp_path):
    a = _study_dir(tmp_path / "a", [("ft", 0), ("bc", 0)], 0.2, steps=400)
    b = _study_dir(tmp_path / "b", [("ft", 1), ("bc", 1)], 0.8, steps=800)
    out = report.report([a, b], tmp_path / "out", reps=100, log=lambda s: None)
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.csv",
        "fig_bars.png",
        "fig_curves.png",
    }
    assert "curves cut at 400 env steps" in (out / "report.md").read_text()


def test_cli_on_key_door_main(tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["report", str(KEY_DOOR), "--out", str(out), "--reps", "300"]) == 0
    names = {"report.md", "report.csv", "fig_bars.png", "fig_curves.png"}
    assert {p.name for p in out.iterdir()} == names  # the recorded run has its curves
    md = (out / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0][2:] for ln in table[1:]] == ["ft", "ks", "bc", "ewc", "scratch"]
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * len(report.SEQUENCE_METRICS)
    ft = next(r for r in rows if r["method"] == "ft" and r["metric"] == "far_success_min")
    # ft far_success_min over seeds: 0.225 0.275 0.275 0.475 0.275 -> IQM mean(.275 x3), mean .305
    assert float(ft["iqm"]) == pytest.approx(0.275) and float(ft["mean"]) == pytest.approx(0.305)
    assert float(ft["iqm_lo"]) <= 0.275 <= float(ft["iqm_hi"])
    again = tmp_path / "again"
    cli.main(["report", str(KEY_DOOR), "--out", str(again), "--reps", "300"])
    assert (again / "report.csv").read_text() == (out / "report.csv").read_text()


def _bad(argv, capsys) -> str:
    assert cli.main(["report", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fpc-jax report: error: ")
    return err


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    assert "no summary.csv" in _bad([str(tmp_path), *out], capsys)
    apple = tmp_path / "apple"
    apple.mkdir()
    (apple / "summary.csv").write_text("M,c,seed,final_success,forgetting\n5,0.5,0,1,0\n")
    assert "cannot mix" in _bad([str(KEY_DOOR), str(apple), *out], capsys)
    assert "not a metric" in _bad([str(apple), "--metric", "far_success_min", *out], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "summary.csv").write_text(",".join(SUMMARY_COLUMNS) + "\n")
    assert "empty method set" in _bad([str(empty), *out], capsys)
    assert "--reps" in _bad([str(KEY_DOOR), "--reps", "0", *out], capsys)


def test_apple_summary(tmp_path):
    apple = tmp_path / "apple"
    apple.mkdir()
    (apple / "summary.csv").write_text(
        "M,c,seed,final_success,forgetting\n5,0.5,0,1,0\n5,0.5,1,0.9,0.2\n10,0.5,0,0.5,0.6\n"
    )
    out = report.report([apple], tmp_path / "out", reps=100, log=lambda s: None)
    md = (out / "report.md").read_text()
    assert "| M=5, c=0.5 | 2 |" in md and "| M=10, c=0.5 | 1 |" in md
    assert not (out / "fig_curves.png").exists()


def test_nonfinite_runs_are_flagged_and_left_out(tmp_path):
    """A run whose training statistics become NaN is flagged in summary.csv (the chunk) and left
    out of the printed means and of the report."""
    import types

    from fpc_jax.experiments import study_report

    rows_, runs, heads = 3, 2, 4
    curves = {
        "eval/stage_success": np.full((rows_, runs, heads), 0.5),
        "eval/all_solved": np.full((rows_, runs), 0.5),
        "eval/stages_solved_frac": np.full((rows_, runs), 0.5),
        "train/actor/loss": np.ones((rows_, runs)),
    }
    curves["train/actor/loss"][-1] = np.nan  # the final evaluation has no training: not a flag
    curves["train/actor/loss"][1, 1] = np.inf  # run 1 breaks in chunk 2
    curves["eval/stage_success"][:, 1] = 0.0
    env = types.SimpleNamespace(num_heads=heads)
    rows = study_report.summarize([("ft", 0), ("ft", 1)], curves, (2, 3), env)
    assert [r["nonfinite_at"] for r in rows] == ["", 2]
    said = []
    lines = study_report.table(types.SimpleNamespace(methods=["ft"]), rows, log=said.append)
    assert "ft seed 1" in said[0] and "chunk 2" in said[0]
    assert lines[1].split()[1:] == ["0.500", "0.500", "0.500", "0.500"]  # run 0 alone
    d = tmp_path / "run"
    d.mkdir()
    cols = study_report.SUMMARY_COLUMNS
    with open(d / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    from fpc_jax import cli

    assert cli.main(["report", str(d), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| ft | 1 |" in text


def test_report_draws_the_diagnostics_of_merged_dirs(tmp_path):
    a = _study_dir(tmp_path / "a", [("ft", 0), ("bc", 0)], 0.2, steps=400)
    b = _study_dir(tmp_path / "b", [("ft", 1), ("bc", 1)], 0.8, steps=400)
    for d, kl in ((a, 1.0), (b, 3.0)):
        curves = dict(np.load(d / "finetune_curves.npz"))
        evals = curves["eval/all_solved"].shape[0]
        cov = np.full((evals, 2, 3), 0.25)
        cov[:, :, 2] = 0.5
        cov[-1] = np.nan
        curves |= {"diag/far_kl": np.full((evals, 2), kl), "train_coverage": cov}
        np.savez(d / "finetune_curves.npz", **curves)
        info = json.loads((d / "run_info.json").read_text())
        (d / "run_info.json").write_text(json.dumps(info | {"far_stages": [1, 2]}))
    study = report.merge([a, b])
    ft = [r for r in study.runs if r.method == "ft"]
    assert [float(r.diag["far_kl"][0]) for r in ft] == [1.0, 3.0]
    np.testing.assert_allclose(ft[0].diag["far_coverage"][:-1], 0.75)  # stages 1 + 2
    out = report.report([a, b], tmp_path / "out", reps=100, log=lambda s: None)
    assert (out / "fig_diagnostics.png").is_file()
