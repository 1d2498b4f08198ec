"""The SAC FPC pipeline end to end on the toy task: pretrain, finetune, resume, sharding, errors."""

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import sac_study, study_config, study_report

TINY = {
    "name": "tiny",
    "hidden_sizes": [16, 16],
    "batch_size": 32,
    "T": 30,
    "update_every": 25,
    "update_after": 100,
    "buffer_capacity": 2000,
    "eval_episodes": 2,
    "steps_per_chunk": 100,
    "pretrain_steps": 200,
    "pretrain_start_steps": 100,
    "finetune_steps": 200,
    "seeds": 2,
    "methods": ["ft", "ewc", "bc", "em", "scratch"],
    "bc_states": 64,
    "em_transitions": 64,
    "fisher_states": 32,
    "em_buffer_capacity": 2000,
    "scratch_start_steps": 100,
}


def tiny(**kw):
    return cfglib.build(study_config.SACStudyConfig, {**TINY, **kw})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    policy = sac_study.pretrain(tiny(), out, log=lambda *_: None)
    return policy


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    sac_study.finetune(tiny(checkpoint=str(pretrained)), out, log=lambda *_: None)
    return out


def _rows(path: Path):
    with open(path / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_finetune_writes_summary_and_plots(finetuned):
    rows = _rows(finetuned)
    assert len(rows) == 5 * 2
    assert set(sac_study.SUMMARY_COLUMNS) <= set(rows[0])
    assert [(r["method"], r["seed"]) for r in rows[:3]] == [("ft", "0"), ("ft", "1"), ("ewc", "0")]
    for r in rows:
        assert r["nonfinite_at"] == ""  # healthy run: no non-finite flag
        for k in study_report.SUCCESS_COLUMNS:
            assert 0.0 <= float(r[k]) <= 1.0, (k, r)
        assert float(r["far_success_min"]) <= float(r["far_success_pretrained"]) + 1e-9
        for k in study_report.MODE_COLUMNS:  # eval_policy both: each mode's own columns
            assert 0.0 <= float(r[k]) <= 1.0, (k, r)
        assert r["far_success_min"] == r["far_success_min_stochastic"]  # eval/* = stochastic (CW)
    for name in ("fig_sequence.png", "fig_stages.png", "config.yaml", "run_info.json"):
        assert (finetuned / name).is_file()
    curves = np.load(finetuned / "finetune_curves.npz")
    # 2 chunks + the final evaluation; 10 runs; 4 heads.
    assert curves["eval/stage_success"].shape == (3, 10, 4)
    for mode in ("stochastic", "deterministic"):
        assert curves[f"eval/{mode}/stage_success"].shape == (3, 10, 4)
    stochastic = curves["eval/stochastic/stage_success"]
    np.testing.assert_array_equal(curves["eval/stage_success"], stochastic)


def test_finetune_writes_diagnostics_curves_and_figure(finetuned):
    from fpc_jax.retention.diagnostics import DIAGNOSTICS

    curves = np.load(finetuned / "finetune_curves.npz")
    assert (finetuned / "fig_diagnostics.png").is_file()
    for name in DIAGNOSTICS:
        v = curves[f"diag/{name}"]
        assert v.shape == (3, 10) and np.isfinite(v[:, :8]).all(), name  # scratch: no theta*
    # the first evaluation is at theta* for every pre-trained run (all but scratch)
    np.testing.assert_allclose(curves["diag/far_kl"][0, :8], 0.0, atol=1e-5)
    assert (curves["diag/far_kl"][0, 8:] > 0.01).all()  # scratch starts elsewhere
    cov = curves["train_coverage"]  # (evals, runs, heads); the final row has no training
    assert cov.shape == (3, 10, 4)
    np.testing.assert_allclose(cov[:-1].sum(-1), 1.0, rtol=1e-6)
    assert np.isnan(cov[-1]).all()


def test_a_failed_pretraining_is_recorded_in_the_policy(pretrained):
    """The tiny pre-training fails its Far stages; the policy's meta.json says so."""
    meta = ckpt.read_meta(pretrained)
    assert min(meta["far_success"]) < 0.5 and "min_pretrain_success" in meta["warning"]
    assert (Path(pretrained) / "checksums.json").is_file()


def test_pretrained_runs_start_from_the_checkpoint(finetuned, pretrained):
    """All runs that start from the checkpoint see the same first evaluation of the Far stages
    (identical policy, and evaluation keys depend only on the seed)."""
    rows = _rows(finetuned)
    pre = {r["method"]: float(r["far_success_pretrained"]) for r in rows if r["seed"] == "0"}
    assert pre["ft"] == pre["ewc"] == pre["bc"] == pre["em"]


def test_resume_gives_identical_results(pretrained, finetuned, tmp_path):
    cfg = tiny(checkpoint=str(pretrained))
    assert sac_study.finetune(cfg, tmp_path, log=lambda *_: None, stop_after=1) is None
    assert (tmp_path / "finetune_state").is_dir()
    partial = _rows(tmp_path)  # written after every chunk
    assert len(partial) == 10 and partial[0]["method"] == "ft"
    sac_study.finetune(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / "summary.csv").read_text() == (finetuned / "summary.csv").read_text()


def test_a_finished_run_extends_to_more_steps(pretrained, finetuned, tmp_path):
    """finetune_steps may grow on resume: 1 chunk, then 2, equals 2 chunks in one go."""
    sac_study.finetune(
        tiny(checkpoint=str(pretrained), finetune_steps=100), tmp_path, log=lambda *_: None
    )
    sac_study.finetune(tiny(checkpoint=str(pretrained)), tmp_path, log=lambda *_: None)
    assert (tmp_path / "summary.csv").read_text() == (finetuned / "summary.csv").read_text()
    with pytest.raises(ckpt.CheckpointError, match="more than the 1 asked"):
        sac_study.finetune(
            tiny(checkpoint=str(pretrained), finetune_steps=100), tmp_path, log=lambda *_: None
        )


def test_resume_refuses_other_config(pretrained, tmp_path):
    sac_study.finetune(
        tiny(checkpoint=str(pretrained)), tmp_path, log=lambda *_: None, stop_after=1
    )
    with pytest.raises(ckpt.CheckpointError, match=r"configuration \(differs in \['lr'\]"):
        sac_study.finetune(tiny(checkpoint=str(pretrained), lr=5e-4), tmp_path, log=lambda *_: None)


def test_missing_and_mismatched_checkpoint(pretrained, tmp_path):
    with pytest.raises(ckpt.CheckpointError, match=r"missing meta\.json"):
        sac_study.finetune(
            tiny(checkpoint=str(tmp_path / "nope")), tmp_path / "o", log=lambda *_: None
        )
    with pytest.raises(ckpt.CheckpointError, match="hidden_sizes"):
        sac_study.finetune(
            tiny(checkpoint=str(pretrained), hidden_sizes=[32, 32]),
            tmp_path / "o2",
            log=lambda *_: None,
        )


def test_bad_config_errors():
    with pytest.raises(cfglib.ConfigError, match="unknown method"):
        tiny(methods=["ft", "bogus"])
    with pytest.raises(cfglib.ConfigError, match="bad method override"):
        tiny(methods=["ewc:ewc_actr=5"])
    cfg = tiny(methods=["ewc", "ewc:ewc_actor=1000", "bc:bc_kl_direction=1"])
    assert float(cfg.coefs("ewc").ewc_actor) == 100.0
    assert float(cfg.coefs("ewc:ewc_actor=1000").ewc_actor) == 1000.0
    assert float(cfg.coefs("bc:bc_kl_direction=1").bc_kl_direction) == 1.0
    with pytest.raises(cfglib.ConfigError, match="ewc_actor must be"):
        tiny(ewc_actor=-1.0)
    with pytest.raises(cfglib.ConfigError, match="multiple of steps_per_chunk"):
        tiny(finetune_steps=150)
    with pytest.raises(cfglib.ConfigError, match="new_critic_heads"):
        tiny(new_critic_heads="ones")


def test_sharded_equals_single_device(pretrained, finetuned, tmp_path):
    """The same config on 5 forced host devices (10 runs -> 2 per device) gives the same
    summary.csv as the single-device run."""
    script = textwrap.dedent(f"""
        import jax
        assert jax.device_count() == 5, jax.devices()
        from fpc_jax.experiments import config as cfglib, sac_study, study_config
        from tests.test_sac_study import TINY
        ckpt = {str(pretrained)!r}
        cfg = cfglib.build(study_config.SACStudyConfig, {{**TINY, "checkpoint": ckpt}})
        sac_study.finetune(cfg, {str(tmp_path)!r}, log=lambda *_: None)
    """)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=5",
        "JAX_PLATFORMS": "cpu",
    }
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=root)
    info = (tmp_path / "run_info.json").read_text()
    assert '"devices"' in info
    assert (tmp_path / "summary.csv").read_text() == (finetuned / "summary.csv").read_text()


def test_policy_checkpoint_round_trip(pretrained, tmp_path):
    pre = ckpt.load_policy(pretrained)
    again = ckpt.save_policy(tmp_path / "copy", pre.state, {"note": "round trip"})
    back = ckpt.load_policy(again, expected=pre.config)

    for a, b in zip(jax.tree.leaves(pre.state), jax.tree.leaves(back.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.meta["note"] == "round trip" and back.meta["format_version"] == ckpt.FORMAT_VERSION
    (Path(again) / "meta.json").write_text('{"format_version": 99}')
    with pytest.raises(ckpt.CheckpointError, match=r"meta\.json does not match its checksum"):
        ckpt.load_policy(again)
    ckpt.integrity.write_checksums(again)  # a consistent checkpoint of another format version
    with pytest.raises(ckpt.CheckpointError, match="format version 99"):
        ckpt.load_policy(again)


def test_backend_fields_are_validated_and_kept_out_of_old_resume_keys():
    with pytest.raises(cfglib.ConfigError, match="unknown backend 'gpu'"):
        tiny(backend="gpu")
    with pytest.raises(cfglib.ConfigError, match="unknown mjx_impl"):
        tiny(env="metaworld/robotic_sequence", backend="mjx", mjx_impl="nope")
    with pytest.raises(cfglib.ConfigError, match="serves env"):
        tiny(backend="mjx")  # the toy env has no MJX backend
    with pytest.raises(cfglib.ConfigError, match="unknown Meta-World task 'push'"):
        tiny(env="metaworld/robotic_sequence", backend="mjx", tasks=["push"])
    with pytest.raises(cfglib.ConfigError, match="tasks needs a Meta-World backend"):
        sac_study.build_env(tiny(tasks=["push-v3"]))
    # fields added for the MJX backend stay out of the resume key at their defaults, so run
    # checkpoints written before they existed still resume
    assert not {"backend", "tasks", "mjx_impl"} & set(cfglib.resume_key(tiny()))
    mjx = {"env": "metaworld/robotic_sequence", "backend": "mjx", "methods": ["ft", "bc"]}
    assert cfglib.resume_key(tiny(**mjx))["backend"] == "mjx"
    # the widest env call: runs x 4 heads x 2 evaluation episodes, or the 100-lane pi* rollout
    assert sac_study.env_lanes(tiny(**mjx, seeds=3), "finetune") == sac_study.TEACHER_ENVS
    assert sac_study.env_lanes(tiny(**mjx, seeds=20), "finetune") == 40 * 4 * 2
    assert sac_study.env_lanes(tiny(**mjx, seeds=20), "pretrain") == 4 * 2


def test_scratch_starts_with_random_actions_and_em_keeps_its_own_replay_size():
    """Per-run start steps and replay sizes in one program (issue 16): scratch acts uniformly at
    random for ``scratch_start_steps`` (CW), the runs from pi* for ``finetune_start_steps``; EM
    rings ``em_buffer_capacity - em_transitions`` slots (I), the others ``buffer_capacity``."""
    import jax.numpy as jnp

    from fpc_jax.agents.sac.train import make_train_chunk
    from fpc_jax.retention.penalties import RetentionCoefs

    cfg = tiny(scratch_start_steps=100, em_buffer_capacity=1000, update_after=10_000)
    agent = sac_study.SAC
    static = agent.loop_static(cfg, "finetune")
    assert (static.buffer_capacity, static.em_reserved) == (2000 + 64, 64)
    env, params = agent.build_env(cfg, "finetune")
    config = agent.network(cfg, env)
    hyper = agent.hyper(cfg, config)
    state = agent.init_state(config, hyper, jax.random.key(0))
    head = state.actor_params["head"]  # pi: mean 0, std e^-20 on every state, so a = 0
    bias = jnp.concatenate([jnp.zeros(config.act_dim), jnp.full(config.act_dim, -20.0)])
    actor = {
        **state.actor_params,
        "head": {
            "kernel": jnp.zeros_like(head["kernel"]),
            "bias": jnp.tile(bias, config.num_heads),
        },
    }
    state = state.replace(actor_params=actor)
    pool = jnp.asarray(env.far_stages, jnp.int32)
    runs = []
    for method, rand, ring in (("scratch", 100, 2000), ("ft", 0, 2000), ("em", 0, 1000 - 64)):
        run = agent.init_run(
            env, static, state, params, pool, jax.random.key(1), cfg=cfg, method=method
        )
        assert (int(run.random_steps), int(run.buffer.ring_limit)) == (rand, ring), method
        runs.append(run)
    chunk, _ = make_train_chunk(env, static, config)
    run, _ = jax.jit(chunk)(
        runs[0],
        jnp.int32(0),
        agent.null_anchors(config, state),
        RetentionCoefs.create(),
        hyper,
        params,
        pool,
    )
    scratch_actions = np.asarray(run.buffer.data.action[64 : 64 + 100])
    run, _ = jax.jit(chunk)(
        runs[1],
        jnp.int32(0),
        agent.null_anchors(config, state),
        RetentionCoefs.create(),
        hyper,
        params,
        pool,
    )
    ft_actions = np.asarray(run.buffer.data.action[64 : 64 + 100])
    assert np.abs(ft_actions).max() < 1e-6  # pi*'s own (here: zero) actions
    assert np.abs(scratch_actions).max() > 0.5 and np.abs(scratch_actions).mean() > 0.3
