"""The PPO study end to end on a tiny key-door-rooms config: pretrain -> finetune through the one
study driver, summary columns, resume == uninterrupted, extend, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import ppo_study
from fpc_jax.experiments.study_report import SUMMARY_COLUMNS

QUIET = {"log": lambda *_: None}


def tiny(**kw):
    base = dict(
        hidden_sizes=[16],
        num_envs=4,
        num_steps=16,
        epochs=1,
        minibatches=2,
        steps_per_chunk=128,
        eval_episodes=2,
        pretrain_steps=256,
        finetune_steps=256,
        methods=["ft", "bc", "ks", "ewc", "scratch"],
        seeds=1,
        bc_states=64,
        fisher_states=32,
        T=20,
    )
    return cfglib.build(ppo_study.PPOStudyConfig, {**base, **kw})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo_pre")
    return ppo_study.pretrain(tiny(), out, **QUIET)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_finetune_writes_the_shared_summary_and_resumes_identically(pretrained, tmp_path):
    full = tmp_path / "full"
    ppo_study.finetune(tiny(checkpoint=str(pretrained)), full, **QUIET)
    rows = _rows(full / "summary.csv")
    assert [r["method"] for r in rows] == ["ft", "bc", "ks", "ewc", "scratch"]
    assert list(rows[0]) == SUMMARY_COLUMNS
    for name in (
        "fig_stages.png",
        "fig_sequence.png",
        "fig_diagnostics.png",
        "run_info.json",
        "finetune_curves.npz",
    ):
        assert (full / name).is_file()
    curves = np.load(full / "finetune_curves.npz")
    np.testing.assert_allclose(curves["diag/far_kl"][0, :4], 0.0, atol=1e-5)  # theta*, not scratch
    np.testing.assert_allclose(curves["train_coverage"][:-1].sum(-1), 1.0, rtol=1e-6)
    part = tmp_path / "part"
    cfg = tiny(checkpoint=str(pretrained))
    assert ppo_study.finetune(cfg, part, stop_after=1, **QUIET) is None
    ppo_study.finetune(cfg, part, **QUIET)
    assert (part / "summary.csv").read_text() == (full / "summary.csv").read_text()
    a, b = np.load(full / "finetune_curves.npz"), np.load(part / "finetune_curves.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # extend: a longer run continues the finished one
    ppo_study.finetune(tiny(checkpoint=str(pretrained), finetune_steps=384), part, **QUIET)
    assert np.load(part / "finetune_curves.npz")["eval/all_solved"].shape[0] == 4


def test_bad_inputs_are_clear_errors(pretrained, tmp_path):
    with pytest.raises(cfglib.ConfigError, match="replay buffer"):
        tiny(methods=["ft", "em"])
    with pytest.raises(cfglib.ConfigError, match="unknown env"):
        tiny(env="point_sequence")
    with pytest.raises(cfglib.ConfigError, match="ks_decay_rate"):
        tiny(ks_decay_rate=1.5)
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        ppo_study.finetune(tiny(checkpoint=str(pretrained), hidden_sizes=[8]), tmp_path, **QUIET)
    with pytest.raises(ckpt.CheckpointError, match="not a PPO policy"):
        ppo_study.finetune(tiny(checkpoint="asset:point_sequence_far"), tmp_path, **QUIET)


def test_ppo_presets_are_the_papers_nethack_values():
    cfg = tiny()
    assert float(cfg.coefs("ks").ks_actor) == 0.5
    assert float(cfg.coefs("ks").ks_decay) == pytest.approx(0.99998)
    assert float(cfg.coefs("bc").bc_actor) == 2.0
    assert float(cfg.coefs("ewc").ewc_actor) == 2e6
    assert float(cfg.coefs("bc:bc_actor=0.5").bc_actor) == 0.5
    assert all(float(v) == 0.0 for v in cfg.coefs("ft").values.values())


def test_cli_finetune_from_the_packaged_asset(tmp_path):
    from fpc_jax import cli

    args = [
        "finetune",
        "--config",
        "configs/key_door/main.yaml",
        "--out",
        str(tmp_path),
        "--seeds",
        "1",
        "--methods",
        "ft,bc",
        "finetune_steps=1024",
        "steps_per_chunk=1024",
        "eval_episodes=2",
        "bc_states=64",
        "fisher_states=32",
    ]
    assert cli.main(args) == 0
    rows = _rows(tmp_path / "summary.csv")
    assert [r["method"] for r in rows] == ["ft", "bc"]
    assert float(rows[0]["far_success_pretrained"]) > 0.0


def test_packaged_pi_star_solves_the_far_rooms_alone():
    import jax

    from fpc_jax.agents.ppo.train import make_evaluate

    cfg = cfglib.load(ppo_study.PPOStudyConfig, "configs/key_door/main.yaml")
    env, params = ppo_study.PPO.build_env(cfg, "finetune")
    config = ppo_study.PPO.network(cfg, env)
    pre = ppo_study.load_policy(ppo_study.study.resolve_checkpoint(cfg.checkpoint, ""), config)
    evaluate = jax.jit(make_evaluate(env, config, 200, cfg.T, "sample"))
    out = evaluate(pre.state.actor_params, params, jax.random.key(7))
    far = np.asarray(out["stage_success"])[list(env.far_stages)]
    close = np.asarray(out["stage_success"])[list(env.close_stages)]
    assert far.min() >= 0.85, far  # 200 sampled episodes per Far room
    assert close.max() <= 0.1, close  # pi* never trained on the Close rooms
