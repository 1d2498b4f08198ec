"""The on-device RoboticSequence study (``backend: mjx``) end to end, and no recompilation.

Runs ``fpc-jax finetune --config configs/robotic_sequence/mjx_smoke.yaml`` on MJX-Warp (Warp's
CPU backend when there is no GPU): the packaged Far policy, its anchors from a pi* rollout on the
MJX Far stages, and 2 methods x 1 seed fine-tuned as one vmapped program. Skipped unless the
``MTCWorldMJX`` port imports (docs/mjx_backend.md, "Install"); run with
``PYTHONPATH=. ../venv-mjx316/bin/python -m pytest -m mjx tests/test_mjx_study.py``.
About 13 min on a 2-core CPU (warm Warp kernel cache): the first study ~10 min (env build,
tracing + compiling the rollout / chunk / evaluation programs ~6 min, stepping), the second one,
compiled programs reused, ~3 min of stepping.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("MTCWorldMJX")

from fpc_jax import cli
from fpc_jax.experiments import chunks, integrity, sac_study, study_report

pytestmark = pytest.mark.mjx

SMOKE = str(Path(__file__).resolve().parents[1] / "configs/robotic_sequence/mjx_smoke.yaml")
METHODS, SEEDS, HEADS = ("ft", "bc"), 1, 4


def _finetune(out: Path, *args: str) -> None:
    assert cli.main(["finetune", "--config", SMOKE, "--out", str(out), *args]) == 0


def _programs() -> list:
    """The jitted programs that step the MJX env: vmapped chunks, final evaluations, pi* rollouts
    (the caches are keyed by env object first)."""
    mjx = lambda key: key[0].name == "metaworld/robotic_sequence"  # noqa: E731
    compiled = [f for key, pair in chunks._COMPILED.items() if mjx(key) for f in pair]
    return compiled + [f for key, f in sac_study._ROLLOUTS.items() if mjx(key)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mjx_smoke")
    _finetune(out)
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_study_writes_results(smoke):
    rows = _rows(smoke)
    assert [(r["method"], r["seed"]) for r in rows] == [(m, "0") for m in METHODS]
    for r in rows:
        assert r["nonfinite_at"] == ""  # healthy run: no non-finite flag
        for k in (*study_report.SUCCESS_COLUMNS, *study_report.MODE_COLUMNS):  # eval_policy both
            assert np.isfinite(float(r[k])), (k, r)
    curves = np.load(smoke / "finetune_curves.npz")
    # one chunk + the final evaluation; 2 runs; 4 heads
    assert curves["eval/stage_success"].shape == (2, len(METHODS) * SEEDS, HEADS)
    assert "train/critic/loss" in curves.files
    for k in curves.files:  # the final evaluation's row has NaN training statistics by design
        assert np.isfinite(curves[k][0]).all(), k
    info = json.loads((smoke / "run_info.json").read_text())
    assert info["runs"] == len(METHODS) * SEEDS and info["env_steps_per_run"] == 50
    # MJX physics counters (issue 14): fractions of the chunk's training steps
    for k in ("train/physics/solver_limit", "train/physics/contact_overflow"):
        assert 0.0 <= curves[k][0].min() <= curves[k][0].max() <= 1.0, k
    np.testing.assert_allclose(curves["diag/far_kl"][0], 0.0, atol=1e-4)  # at theta*
    assert (smoke / "fig_diagnostics.png").is_file()


def test_solver_limit_hits_are_counted_not_printed(capfd):
    """metaworld's scripted hammer policy on MJX-Warp: its steps hit the solver / line-search
    iteration limit (measured: 4 of 65 steps, 17 warnings printed before the fix); now they are
    counted in ``info["physics/solver_limit"]`` and nothing is printed while stepping."""
    import jax
    import jax.numpy as jnp
    from metaworld.policies import SawyerHammerV3Policy

    from fpc_jax.envs import make

    env, params = make("metaworld/hammer-v3", backend="mjx", num_envs=1)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    policy, hits = SawyerHammerV3Policy(), []
    reset(jax.random.key(0), params)
    capfd.readouterr()  # building and compiling may print; stepping must not
    for episode in range(3):  # measured here: hits in every episode (4 of 65, 4 of 66 steps)
        obs, state = reset(jax.random.key(episode), params)
        for i in range(150):
            action = jnp.asarray(np.clip(policy.get_action(np.asarray(obs)[:39]), -1, 1))
            obs, state, _, term, trunc, info = step(jax.random.key(i), state, action, params)
            hits.append(bool(info["physics/solver_limit"]))
            if term or trunc:
                break
        out = capfd.readouterr()
        assert "limit reached" not in out.out + out.err
        if any(hits):
            break
    assert any(hits), "3 scripted hammer episodes hit no solver limit: the counter is broken"


def test_other_methods_and_coefficients_reuse_the_compiled_programs(smoke, tmp_path):
    """Methods and coefficients are array leaves: another method set of the same size (and the
    same EM use) runs the programs compiled for the first study, without tracing them again."""
    programs = _programs()
    assert len(programs) == 3  # chunk, final evaluation, pi* rollout
    assert [f._cache_size() for f in programs] == [1, 1, 1]
    _finetune(tmp_path, "--methods", "l2,ks", "ks_actor=2.5", "l2_actor=0.5")
    assert _programs() == programs
    assert [f._cache_size() for f in programs] == [1, 1, 1]
    assert [r["method"] for r in _rows(tmp_path)] == ["l2", "ks"]


def test_checkpoint_for_other_tasks_is_refused(smoke, tmp_path, capsys):
    """A Far policy whose heads belong to other tasks is refused before any data is collected
    (after ``smoke``, so the env is already built)."""
    asset = sac_study.resolve_checkpoint("asset:robotic_sequence_far", "")
    other = tmp_path / "policy"
    shutil.copytree(asset, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["tasks"] = meta["tasks"][::-1]
    (other / "meta.json").write_text(json.dumps(meta))
    integrity.write_checksums(other)  # a consistent checkpoint, only of other tasks
    rc = cli.main(
        ["finetune", "--config", SMOKE, "--out", str(tmp_path / "o"), "--checkpoint", str(other)]
    )
    assert rc == 2
    assert "pre-trained on the tasks" in capsys.readouterr().err
