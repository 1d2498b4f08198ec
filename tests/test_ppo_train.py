"""The PPO training chunk on a probe env: it learns, vmapped runs equal single runs, coefficient
values never retrace, RND runs, and the stitched env's end signals map to GAE as documented."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from fpc_jax.agents.ppo.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.agents.ppo.train import (
    LoopStatic,
    RunningMeanStd,
    episode_params_fn,
    gae_end_flags,
    init_run_state,
    make_train_chunk,
)
from fpc_jax.agents.ppo.update import (
    PPOHyper,
    init_train_state,
    stack_runs,
    train_state_from_params,
)
from fpc_jax.envs.sequence import SequenceEnv
from fpc_jax.retention.penalties import RetentionCoefs


@struct.dataclass
class BanditParams:
    target: jax.Array  # [K] the rewarded action of each stage
    cue: jax.Array  # [K] the stage's observation cue


class Bandit:
    """Probe sub-task: stage k succeeds (reward 1) when the agent picks ``target[k]``; the
    observation is ``[1, cue[k]]``. Stitched with T = 2: a random policy solves a stage with
    probability 1 - (3/4)^2 = 0.44 and both stages with 0.19."""

    observation_size = 2
    action_size = 4
    num_stages = 2

    def default_params(self) -> BanditParams:
        return BanditParams(jnp.array([2, 0], jnp.int32), jnp.array([1.0, -1.0], jnp.float32))

    def _obs(self, p: BanditParams, stage: jax.Array) -> jax.Array:
        return jnp.stack([jnp.float32(1.0), p.cue[stage]])

    def reset(self, key, p, stage):
        return self._obs(p, stage), jnp.int32(0)

    def step(self, key, state, action, p, stage):
        ok = jnp.argmax(action) == p.target[stage]
        return self._obs(p, stage), state, ok.astype(jnp.float32), ok


ENV = SequenceEnv("bandit", Bandit(), default_T=2)
PARAMS = ENV.default_params()
POOL = jnp.array([0, 1], jnp.int32)
CONFIG = PPOConfig(obs_dim=3, num_actions=4, num_heads=2, hidden_sizes=(32,))
STATIC = LoopStatic(
    num_envs=8,
    num_steps=16,
    epochs=4,
    minibatches=4,
    steps_per_chunk=256,
    eval_episodes=16,
    stage_horizon=2,
)
HYPER = PPOHyper.create(lr=3e-3)
NUM_BC = 8


def _run(seed: int, config=CONFIG, hyper=HYPER):
    ts = init_train_state(config, hyper, jax.random.PRNGKey(seed))
    return init_run_state(ENV, STATIC, ts, PARAMS, POOL, jax.random.PRNGKey(100 + seed))


@functools.cache
def _programs():
    """The jitted vmapped chunk and a jitted single-run chunk that counts its traces."""
    chunk, _ = make_train_chunk(ENV, STATIC, CONFIG)
    traces = []

    def counted(*args):
        traces.append(1)
        return chunk(*args)

    vchunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, 0, 0, 0, None, None)))
    return vchunk, jax.jit(counted), traces


@functools.cache
def _retention_runs():
    """Three runs with different seeds, lr, coefficients and anchors (BC/KS/EWC all active)."""
    runs, anchors = [], []
    rng = np.random.default_rng(0)
    for i in range(3):
        run = _run(i)
        teacher_actor, teacher_critic = make_ppo_networks(CONFIG).init(jax.random.PRNGKey(50 + i))
        out = teacher_actor["trunk"]["out"]  # shared output layer: inside the trunk
        teacher_actor["trunk"]["out"] = jax.tree.map(lambda x: 100.0 * x, out)
        obs = np.concatenate(
            [np.ones((NUM_BC, 1)), rng.choice([-1.0, 1.0], (NUM_BC, 1)), np.zeros((NUM_BC, 1))], 1
        ).astype(np.float32)
        stage = rng.integers(0, 2, NUM_BC).astype(np.int32)
        anchors.append(make_anchors(CONFIG, teacher_actor, teacher_critic, obs, stage, obs, stage))
        runs.append(run)
    coefs = [
        RetentionCoefs.preset("ft"),
        RetentionCoefs.preset("ks", family="ppo", ks_decay_rate=0.01, bc_actor=1.0, l2_critic=0.1),
        RetentionCoefs.preset("ewc", family="ppo", bc_kl_direction=1.0, bc_actor=0.3),
    ]
    hypers = [
        PPOHyper.create(lr=lr, ent_coef=e) for lr, e in ((3e-3, 0.01), (1e-3, 0.0), (1e-2, 0.1))
    ]
    return runs, anchors, coefs, hypers


def _assert_trees_close(a, b, **tol):
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **tol)


def test_ppo_learns_the_probe_task():
    vchunk, _, _ = _programs()
    runs = stack_runs([_run(seed) for seed in range(3)])
    ts0 = jax.tree.map(lambda x: x[0], runs.ppo)
    ph = placeholder_anchors(CONFIG, ts0.actor_params, ts0.critic_params, NUM_BC)
    anchors = stack_runs([ph] * 3)
    coefs = stack_runs([RetentionCoefs.preset("ft")] * 3)
    hyper = stack_runs([HYPER] * 3)
    first = None
    for _ in range(7):
        runs, out = vchunk(runs, jnp.int32(0), anchors, coefs, hyper, PARAMS, POOL)
        first = out if first is None else first
    assert np.all(np.asarray(first["eval"]["all_solved"]) < 0.6)  # random policy: 0.19
    assert np.all(np.asarray(out["eval"]["all_solved"]) > 0.9), out["eval"]
    assert np.all(np.asarray(out["eval"]["stage_success"]) > 0.9)
    assert np.all(np.asarray(out["train_all_solved"]) > 0.9)
    assert np.all(
        np.asarray(out["train"]["ppo/entropy"]) < np.asarray(first["train"]["ppo/entropy"])
    )
    assert int(runs.ppo.step[0]) == 7 * 2 * STATIC.epochs * STATIC.minibatches


def test_vmapped_runs_equal_single_runs():
    vchunk, single, _ = _programs()
    runs, anchors, coefs, hypers = _retention_runs()
    stacked = [stack_runs(x) for x in (runs, anchors, coefs, hypers)]
    v_run, v_out = vchunk(stacked[0], jnp.int32(0), *stacked[1:], PARAMS, POOL)
    for i in range(3):
        s_run, s_out = single(runs[i], jnp.int32(0), anchors[i], coefs[i], hypers[i], PARAMS, POOL)
        run_i = jax.tree.map(lambda x, i=i: x[i], (v_run, v_out))
        _assert_trees_close(run_i, (s_run, s_out), rtol=1e-4, atol=1e-5)
    train = v_out["train"]
    assert float(train["actor/ks"][1]) > 0.0 and float(train["actor/ewc"][2]) > 0.0
    # KS weight at update u is 0.5 * 0.99 ** u; a chunk does 2 rollouts x 4 epochs x 4 minibatches
    updates = STATIC.iterations_per_chunk * STATIC.epochs * STATIC.minibatches
    assert np.all(np.asarray(v_run.ppo.step) == updates)
    ks_mean = np.mean(0.5 * 0.99 ** np.arange(updates))
    np.testing.assert_allclose(train["actor/ks_weight"], [0.0, ks_mean, 0.0], rtol=1e-5)
    assert not np.allclose(train["ppo/loss"][0], train["ppo/loss"][1])


def test_changing_coefficient_values_does_not_retrace():
    _, single, traces = _programs()
    runs, anchors, coefs, hypers = _retention_runs()
    before = len(traces)
    for i in range(3):
        run, _ = single(runs[0], jnp.int32(0), anchors[i], coefs[i], hypers[i], PARAMS, POOL)
        jax.block_until_ready(run)
    # another step count, another seed's run state: still the same program
    single(runs[1], jnp.int32(256), anchors[0], coefs[2], hypers[1], PARAMS, POOL)
    assert len(traces) - before <= 1 and len(traces) == 1


def test_rnd_intrinsic_stream():
    config = PPOConfig(obs_dim=3, num_actions=4, num_heads=2, hidden_sizes=(32,), rnd=True)
    static = dataclasses.replace(STATIC, eval_mode="greedy")  # greedy: a cheaper compile
    chunk, _ = make_train_chunk(ENV, static, config)
    ts = init_train_state(config, HYPER, jax.random.PRNGKey(0))
    assert set(ts.rnd_target) == {"trunk", "head"} and set(ts.rnd_predictor) == {"trunk", "head"}
    run = init_run_state(ENV, static, ts, PARAMS, POOL, jax.random.PRNGKey(1))
    anchors = placeholder_anchors(config, ts.actor_params, ts.critic_params, NUM_BC)
    run1, out = jax.jit(chunk)(
        run, jnp.int32(0), anchors, RetentionCoefs.preset("ft"), HYPER, PARAMS, POOL
    )
    train = out["train"]
    assert float(train["rnd/loss"]) > 0.0 and float(train["rnd/int_reward"]) > 0.0
    assert all(np.isfinite(float(v)) for v in train.values())
    n = static.steps_per_chunk
    np.testing.assert_allclose(run1.rnd.obs.count, n + 1e-4, rtol=1e-6)
    np.testing.assert_allclose(run1.rnd.int_return.count, n + 1e-4, rtol=1e-6)
    _assert_trees_close(run1.ppo.rnd_target, ts.rnd_target)  # the target never trains
    nets = make_ppo_networks(config)
    assert nets.critic_values(ts.critic_params, jnp.ones(3), jnp.int32(0)).shape == (2,)

    def err(t, obs):
        pred = nets.rnd_apply(t.rnd_predictor, obs)
        return float(jnp.mean((pred - nets.rnd_apply(t.rnd_target, obs)) ** 2))

    seen = (jnp.array([1.0, 1.0, 0.0]) - run1.rnd.obs.mean) / jnp.sqrt(run1.rnd.obs.var + 1e-8)
    assert err(run1.ppo, jnp.clip(seen, -5, 5)) < err(ts, jnp.clip(seen, -5, 5))


def test_gae_end_flags_follow_the_documented_semantics():
    t, f = jnp.bool_(True), jnp.bool_(False)
    default = LoopStatic(num_envs=1, num_steps=1, steps_per_chunk=1, minibatches=1)
    boot = LoopStatic(
        num_envs=1, num_steps=1, steps_per_chunk=1, minibatches=1, bootstrap_on_timeout=True
    )
    cut = LoopStatic(
        num_envs=1, num_steps=1, steps_per_chunk=1, minibatches=1, stage_end_terminal=True
    )
    flags = lambda s, *x: tuple(bool(v) for v in gae_end_flags(s, *x))  # noqa: E731
    # (terminated, truncated, stage_success) -> (gae terminated, gae truncated)
    assert flags(default, t, f, t) == (True, False)  # last stage solved
    assert flags(default, f, t, f) == (True, False)  # stage time-out: a true terminal
    assert flags(boot, f, t, f) == (False, True)  # ... unless bootstrapping on time-outs
    assert flags(default, f, f, t) == (False, False)  # mid-sequence success: episode goes on
    assert flags(cut, f, f, t) == (True, False)
    assert flags(default, f, f, f) == (False, False)


def test_single_stage_episodes_train_state_from_params_and_validation():
    single = LoopStatic(episode_mode="single")
    fn = episode_params_fn(single, jnp.array([1], jnp.int32))
    p = fn(jax.random.PRNGKey(0), PARAMS)
    assert int(p.num_stages) == 1 and np.all(np.asarray(p.stage_ids) == 1)
    assert episode_params_fn(STATIC, POOL)(jax.random.PRNGKey(0), PARAMS) is PARAMS
    ts = init_train_state(CONFIG, HYPER, jax.random.PRNGKey(0))
    again = train_state_from_params(CONFIG, HYPER, ts.actor_params, ts.critic_params)
    _assert_trees_close(again, ts)
    stats = RunningMeanStd.create((2,)).update(jnp.array([[1.0, 2.0], [3.0, 6.0]]))
    np.testing.assert_allclose(stats.mean, [2.0, 4.0], rtol=1e-4)
    np.testing.assert_allclose(stats.var, [1.0, 4.0], rtol=1e-3)
    with pytest.raises(ValueError, match="multiple of"):
        LoopStatic(num_envs=4, num_steps=8, steps_per_chunk=100)
    with pytest.raises(ValueError, match="minibatches"):
        LoopStatic(num_envs=3, num_steps=1, steps_per_chunk=3, minibatches=2)
    with pytest.raises(ValueError, match="eval_mode"):
        LoopStatic(eval_mode="argmax")
    with pytest.raises(ValueError, match="one-hot"):
        make_train_chunk(ENV, STATIC, PPOConfig(obs_dim=3, num_actions=5))
