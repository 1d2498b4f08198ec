"""The host-env PPO study on the real Montezuma's Revenge (fpc_jax/experiments/montezuma_study.py,
on the host_ppo engine)."""

from __future__ import annotations

import csv
import dataclasses

import jax
import numpy as np
import pytest

pytest.importorskip("ale_py")

from fpc_jax import cli
from fpc_jax.agents.ppo.update import PPOHyper, init_train_state, stack_runs
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import host_ppo, study_report
from fpc_jax.experiments import montezuma_study as mzs
from fpc_jax.experiments.checkpoint import CheckpointError

SMOKE = "configs/montezuma/smoke.yaml"


def test_smoke_pretrain_finetune_end_to_end(tmp_path):
    """pi* from the Far starts, then ft and bc from the game start, through the CLI."""
    assert cli.main(["pretrain", "--config", SMOKE, "--out", str(tmp_path / "pretrain")]) == 0
    assert (tmp_path / "pretrain" / "policy" / "meta.json").is_file()
    assert cli.main(["finetune", "--config", SMOKE, "--out", str(tmp_path / "finetune")]) == 0
    out = tmp_path / "finetune"
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == study_report.SUMMARY_COLUMNS
    assert [(r["method"], r["seed"]) for r in rows] == [("ft", "0"), ("bc", "0")]
    for r in rows:
        assert r["nonfinite_at"] == ""  # healthy run: no non-finite flag
        for c in study_report.SUCCESS_COLUMNS:
            assert 0.0 <= float(r[c]) <= 1.0
    curves = np.load(out / "finetune_curves.npz")
    assert curves["eval__stage_success"].shape == (2, 2, len(mzs.ROUTE))
    assert (out / "fig_stages.png").is_file()


def test_vmapped_policy_step_equals_per_run():
    cfg = cfglib.load(mzs.MontezumaStudyConfig, SMOKE)
    config = mzs.network(cfg)
    act, _ = host_ppo.make_learner(config, 1, 2, True)
    states = [init_train_state(config, PPOHyper.create(), jax.random.key(i)) for i in range(3)]
    obs = np.random.default_rng(0).random((3, 5, config.obs_dim), dtype=np.float32)
    keys = jax.random.split(jax.random.key(1), 3)
    st = stack_runs(states)
    a, logp, v = act(st.actor_params, st.critic_params, obs, keys)
    assert a.shape == (3, 5) and v.shape == (3, 5, 1)
    for i, s in enumerate(states):
        one = stack_runs([s])
        ai, li, vi = act(one.actor_params, one.critic_params, obs[i : i + 1], keys[i : i + 1])
        np.testing.assert_array_equal(a[i], ai[0])
        np.testing.assert_allclose(logp[i], li[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v[i], vi[0], rtol=1e-5, atol=1e-6)


def test_rnd_stream_in_the_host_loop(tmp_path):
    """PPO + RND from the Far starts (two value streams, intrinsic rewards from the predictor's
    error), then fine-tuning from that pi*; a checkpoint without RND is refused by an RND run."""
    cfg = cfglib.load(mzs.MontezumaStudyConfig, SMOKE, {"rnd": True, "methods": ["ft"]})
    mzs.pretrain(cfg, tmp_path / "pretrain", log=lambda *_: None)
    curves = np.load(tmp_path / "pretrain" / "pretrain_curves.npz")
    r_int = curves["rnd__int_reward"]
    assert r_int.shape == (2, 1) and np.isfinite(r_int).all() and (r_int > 0).all()
    assert np.isfinite(curves["rnd__loss"]).all() and (curves["rnd__loss"] > 0).all()
    out = mzs.finetune(cfg, tmp_path / "finetune", log=lambda *_: None)
    assert np.isfinite(np.load(out / "finetune_curves.npz")["rnd__int_reward"]).all()
    plain = dataclasses.replace(cfg, rnd=False, checkpoint=str(tmp_path / "pretrain" / "policy"))
    with pytest.raises(CheckpointError, match="rnd: checkpoint True vs requested False"):
        mzs.finetune(plain, tmp_path / "plain")


def test_bad_input_clear_errors(tmp_path):
    with pytest.raises(cfglib.ConfigError, match="unknown Montezuma room 'room12'"):
        cfglib.load(mzs.MontezumaStudyConfig, SMOKE, {"pretrain_starts": ["room12"]})
    with pytest.raises(cfglib.ConfigError, match="asset incomplete"):
        cfglib.load(mzs.MontezumaStudyConfig, SMOKE, {"asset": str(tmp_path)})
    with pytest.raises(cfglib.ConfigError, match="replay buffer"):
        cfglib.load(mzs.MontezumaStudyConfig, SMOKE, {"methods": ["ft", "em"]})
    with pytest.raises(cfglib.ConfigError, match="int_coef must be >= 0"):
        cfglib.load(mzs.MontezumaStudyConfig, SMOKE, {"rnd": True, "int_coef": -1.0})
    cfg = cfglib.load(mzs.MontezumaStudyConfig, SMOKE)
    with pytest.raises(CheckpointError, match="no pre-trained policy"):
        mzs.finetune(dataclasses.replace(cfg, checkpoint=str(tmp_path / "none")), tmp_path)
