"""The RoboticSequence sweep on the real Meta-World: config checks, head remapping, a tiny smoke."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import robotic_sequence as rs
from fpc_jax.experiments import sac_study, study_report

pytestmark = pytest.mark.metaworld


def test_config_validation():
    with pytest.raises(cfglib.ConfigError, match="unknown Meta-World task"):
        cfglib.build(rs.RoboticSequenceConfig, {"tasks": ["hamer-v3", "push-v3"]})
    with pytest.raises(cfglib.ConfigError, match="far_tasks"):
        cfglib.build(rs.RoboticSequenceConfig, {"tasks": ["hammer-v3", "push-v3"]})
    for length in (1, 2, 3, 4):
        cfg = cfglib.load(rs.RoboticSequenceConfig, f"configs/robotic_sequence/prefix{length}.yaml")
        assert len(cfg.tasks) == length + 2 and cfg.far_stages == (length, length + 1)
    main = cfglib.load(rs.RoboticSequenceConfig, "configs/robotic_sequence/main.yaml")
    assert (
        main.tasks
        == cfglib.load(rs.RoboticSequenceConfig, "configs/robotic_sequence/prefix2.yaml").tasks
    )


def test_remap_heads_moves_far_heads_and_keeps_trunk():
    pytest.importorskip("metaworld")
    path = sac_study.resolve_checkpoint("asset:robotic_sequence_far", "")
    pre = ckpt.load_policy(path)
    cfg = cfglib.load(rs.RoboticSequenceConfig, "configs/robotic_sequence/prefix4.yaml")
    config = dataclasses.replace(pre.config, num_heads=6)
    hyper = sac_study.sac_hyper(cfg, rs.ACT_DIM)
    actor, critic, _, log_alpha = rs.remap_heads(pre, config, hyper, cfg.tasks, jax.random.key(0))
    old_a = np.asarray(pre.state.actor_params["head"]["kernel"]).reshape(256, 4, 8)
    new_a = np.asarray(actor["head"]["kernel"]).reshape(256, 6, 8)
    np.testing.assert_array_equal(new_a[:, 4], old_a[:, 2])  # peg-unplug-side
    np.testing.assert_array_equal(new_a[:, 5], old_a[:, 3])  # push-wall
    assert not np.allclose(new_a[:, 0], old_a[:, 0])  # window-close: not in the asset, fresh
    np.testing.assert_array_equal(new_a[:, 2], old_a[:, 0])  # hammer keeps its asset head
    old_trunk = jax.tree.leaves(pre.state.actor_params["trunk"])
    for a, b in zip(jax.tree.leaves(actor["trunk"]), old_trunk, strict=True):
        np.testing.assert_array_equal(a, b)
    old_c = np.asarray(pre.state.critic_params["head"]["kernel"])
    np.testing.assert_array_equal(np.asarray(critic["head"]["kernel"])[..., 4], old_c[..., 2])
    np.testing.assert_allclose(
        np.asarray(log_alpha)[[4, 5]], np.asarray(pre.state.log_alpha)[[2, 3]]
    )


def test_remap_heads_new_stages_take_the_runs_init_log_alpha():
    """A stage the checkpoint lacks starts at the run's ``init_log_alpha`` (not the schema's
    default); a stage it knows keeps the checkpoint's log-alpha."""
    pytest.importorskip("metaworld")
    pre = ckpt.load_policy(sac_study.resolve_checkpoint("asset:robotic_sequence_far", ""))
    cfg = cfglib.load(
        rs.RoboticSequenceConfig, "configs/robotic_sequence/prefix4.yaml", {"init_log_alpha": -3.0}
    )
    assert rs.RoboticSequenceConfig().init_log_alpha != -3.0
    config = dataclasses.replace(pre.config, num_heads=6)
    hyper = sac_study.sac_hyper(cfg, rs.ACT_DIM)
    _, _, _, log_alpha = rs.remap_heads(pre, config, hyper, cfg.tasks, jax.random.key(0))
    # window-close, faucet-close: not in the asset; hammer, push, peg, push-wall: asset heads 0-3
    np.testing.assert_allclose(np.asarray(log_alpha)[:2], [-3.0, -3.0])
    np.testing.assert_array_equal(np.asarray(log_alpha)[2:], np.asarray(pre.state.log_alpha))


def test_remap_heads_zero_critic_heads_only_for_new_tasks():
    pytest.importorskip("metaworld")
    pre = ckpt.load_policy(sac_study.resolve_checkpoint("asset:robotic_sequence_far", ""))
    cfg = cfglib.load(rs.RoboticSequenceConfig, "configs/robotic_sequence/prefix4.yaml")
    config = dataclasses.replace(pre.config, num_heads=6)
    hyper = sac_study.sac_hyper(cfg, rs.ACT_DIM)
    _, critic, target, _ = rs.remap_heads(pre, config, hyper, cfg.tasks, jax.random.key(0), "zero")
    old = pre.state.critic_params["head"]
    for params in (critic, target):
        kernel, bias = np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])
        # window-close, faucet-close: not in the asset; hammer, push: the asset's untrained heads
        assert not kernel[..., :4].any() and not bias[..., :4].any()
        np.testing.assert_array_equal(kernel[..., 4], np.asarray(old["kernel"])[..., 2])  # peg
        np.testing.assert_array_equal(kernel[..., 5], np.asarray(old["kernel"])[..., 3])
    with pytest.raises(cfglib.ConfigError, match="new_critic_heads"):
        dataclasses.replace(cfg, new_critic_heads="ones").validate()


def test_sweep_smoke(tmp_path):
    """A minutes-long smoke (not a reproduction): the whole sweep path on the real package."""
    pytest.importorskip("metaworld")
    from fpc_jax import cli

    # the one finetune command runs the CPU backend for configs/robotic_sequence (issue 14)
    assert (
        cli.main(
            [
                "finetune",
                "--config",
                "configs/robotic_sequence/smoke.yaml",
                "--out",
                str(tmp_path),
                "min_pretrain_success=1.0",
            ]
        )
        == 0
    )
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in rows] == [("ft", "0"), ("bc", "0")]
    for r in rows:
        assert r["nonfinite_at"] == ""  # healthy run: no non-finite flag
        for k in study_report.SUCCESS_COLUMNS:
            assert 0.0 <= float(r[k]) <= 1.0
    curves = np.load(tmp_path / "sweep_curves.npz")
    assert curves["eval/stage_success"].shape == (2, 2, 4)
    for mode in ("stochastic", "deterministic"):  # eval_policy both (issue 16)
        assert curves[f"eval/{mode}/stage_success"].shape == (2, 2, 4)
        for r in rows:
            assert 0.0 <= float(r[f"far_success_final_{mode}"]) <= 1.0
    np.testing.assert_array_equal(curves["eval/all_solved"], curves["eval/stochastic/all_solved"])
    # row 0: the evaluation before the chunk and the chunk's training statistics (per run); the
    # final evaluation has none
    for k in ("train/critic/loss", "train/actor/bc", "train/actor/entropy"):
        assert curves[k].shape == (2, 2), k
        assert np.isfinite(curves[k][0]).all() and np.isnan(curves[k][1]).all(), k
    succ = curves["train/stage_successes"]  # training episodes' successes per run and stage
    assert succ.shape == (2, 2, 4) and np.isnan(succ[-1]).all()
    assert (succ[0] >= 0).all() and (succ[0] == np.round(succ[0])).all()
    assert (tmp_path / "fig_stages.png").is_file()
    # the FPC diagnostics (issue 14): at theta* before fine-tuning, coverage per stage
    np.testing.assert_allclose(curves["diag/far_kl"][0], 0.0, atol=1e-5)
    assert curves["diag/actor_trunk_dist"].shape == (2, 2)
    cov = curves["train_coverage"]
    assert cov.shape == (2, 2, 4) and np.isnan(cov[-1]).all()
    np.testing.assert_allclose(cov[0].sum(-1), 1.0)
    assert (tmp_path / "fig_diagnostics.png").is_file()
    # pi*'s Far success (the first evaluation of the runs from it) against min_pretrain_success=1
    info = json.loads((tmp_path / "run_info.json").read_text())
    weak = curves["eval/stage_success"][0][:, [2, 3]].mean(0).min() < 1.0
    assert ("pretrain_warning" in info) == weak, info.get("pretrain_warning")


def test_ewc_fisher_states_come_from_every_far_task(monkeypatch):
    """pi*'s Far data is stored task by task ([peg x n/2, push-wall x n/2]); the EWC Fisher's
    states are drawn uniformly from all of it (CW methods/ewc.py), not the first fisher_states
    (which were peg-unplug-side only). issue 16, point 1."""
    pytest.importorskip("metaworld")
    from fpc_jax.agents.sac.losses import Batch
    from fpc_jax.retention.fisher import fisher_sample

    n, obs_dim = 400, 39
    stage = np.repeat([2, 3], n // 2).astype(np.int32)
    data = Batch(
        obs=jnp.zeros((n, obs_dim)),
        action=jnp.zeros((n, 4)),
        reward=jnp.zeros(n),
        next_obs=jnp.zeros((n, obs_dim)),
        discount_mask=jnp.ones(n),
        stage=jnp.asarray(stage),
    )
    seen = {}

    def anchors(config, actor, critic, bc_obs, bc_stage, f_obs, f_stage, fisher_mean):
        seen["fisher"] = np.asarray(f_stage)
        seen["fisher_mean"] = fisher_mean
        return "anchors"

    monkeypatch.setattr(rs, "collect_far_data", lambda *a, **k: data)
    monkeypatch.setattr(rs, "make_anchors", anchors)
    cfg = cfglib.build(
        rs.RoboticSequenceConfig,
        {
            "bc_states": 200,
            "em_transitions": 200,
            "fisher_states": 64,
            "methods": ["ewc"],
            "seeds": 1,
            "buffer_capacity": 1000,
        },
    )
    rs.setup_runs(cfg, log=lambda *_: None)
    got = seen["fisher"]
    assert seen["fisher_mean"] == "squashed"  # CW's default reaches the sweep's anchors
    assert len(got) == 64 and {2, 3} <= set(got.tolist())
    assert 0.25 < np.mean(got == 3) < 0.75
    np.testing.assert_array_equal(fisher_sample(n, 64, cfg.seed), fisher_sample(n, 64, cfg.seed))


def test_host_loop_scratch_runs_act_at_random_first():
    """The CPU sweep's per-run start steps (issue 16, CW): a scratch run's first
    ``scratch_start_steps`` actions are uniform random, a run from pi* acts with its policy."""
    pytest.importorskip("metaworld")
    from types import SimpleNamespace

    from fpc_jax.experiments.host_loop import HostLoop

    cfg = cfglib.build(
        rs.RoboticSequenceConfig,
        {
            "bc_states": 100,
            "em_transitions": 100,
            "fisher_states": 32,
            "methods": ["ft", "scratch"],
            "seeds": 1,
            "buffer_capacity": 1000,
            "scratch_start_steps": 50,
            "update_after": 10_000,
        },
    )
    r = rs.setup_runs(cfg, log=lambda *_: None)
    assert r.random_steps.tolist() == [0, 50]
    assert np.asarray(r.buf.ring_limit).tolist() == [1000, 1000]
    loop = HostLoop(
        cfg,
        r.config,
        r.seq,
        r.acting,
        r.sac,
        r.buf,
        r.anchors,
        r.coefs,
        r.hyp,
        r.key,
        r.runs,
        random_steps=r.random_steps,
    )
    loop.acting = SimpleNamespace(sample=lambda p, o, st, k: np.zeros((*o.shape[:2], rs.ACT_DIM)))
    try:
        loop.burst()  # 50 env steps per run
    finally:
        loop.close()
    actions = np.asarray(loop.buf.data.action)[:, :50]
    assert not actions[0].any()  # ft: the (stubbed, zero) policy
    assert np.abs(actions[1]).mean() > 0.3  # scratch: uniform in [-1, 1]
