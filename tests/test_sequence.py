"""Stitching semantics (docs/sequence_semantics.md) checked on a probe sub-task of known values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from fpc_jax.envs.sequence import (
    SequenceEnv,
    episode_metrics,
    single_stage_params,
    subsequence_params,
)

T = 10
BETA = 1.5


@struct.dataclass
class ProbeParams:
    reward_scale: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.1))


@struct.dataclass
class ProbeState:
    stage: jax.Array
    noise: jax.Array


class ProbeTask:
    """Stage k: obs [k, u] (u random at reset), reward 0.1 (k + 1), success iff action[0] > 0.5."""

    observation_size = 2
    action_size = 1
    num_stages = 3

    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def reset(self, key, params, stage):
        state = ProbeState(stage=stage, noise=jax.random.uniform(key))
        return jnp.stack([stage.astype(jnp.float32), state.noise]), state

    def step(self, key, state, action, params, stage):
        del key
        obs = jnp.stack([stage.astype(jnp.float32), state.noise])
        return obs, state, params.reward_scale * (stage + 1), action[0] > 0.5


GO, WAIT = jnp.ones(1), jnp.zeros(1)


@pytest.fixture
def env_params():
    env = SequenceEnv("probe", ProbeTask(), default_T=T, default_beta=BETA)
    return env, env.default_params()


def _step(env, state, action, params, seed=0):
    return env.step(jax.random.PRNGKey(seed), state, action, params)


def test_reset(env_params):
    env, params = env_params
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (env.observation_size,) == (3,)
    assert obs.dtype == jnp.float32
    assert obs[0] == 0 and obs[-1] == 0
    assert int(state.stage) == 0 and int(state.pos) == 0 and int(state.t) == 0
    assert int(state.stages_solved) == 0 and not bool(state.done)


def test_plain_step_reward_and_time_feature(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    for t in range(1, 4):
        obs, state, r, term, trunc, info = _step(env, state, WAIT, params)
        assert int(state.t) == t
        np.testing.assert_allclose(obs[-1], t / T)
        np.testing.assert_allclose(r, 0.1)
        assert not bool(term) and not bool(trunc)
        assert not bool(info["stage_success"]) and not bool(info["stage_terminal"])
        assert int(info["stage"]) == 0 and int(info["stages_solved"]) == 0


def test_stage_switch_exactly_on_success_step(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    for _ in range(3):
        _, state, *_ = _step(env, state, WAIT, params)
    obs, state, r, term, trunc, info = _step(env, state, GO, params, seed=7)
    # success at timer t = 4 (after the increment): bonus beta * r * (T - t)
    np.testing.assert_allclose(r, BETA * 0.1 * (T - 4), rtol=1e-6)
    assert bool(info["stage_success"]) and bool(info["stage_terminal"])
    assert int(info["stage"]) == 0  # the stage acted in
    assert not bool(term) and not bool(trunc)
    assert int(state.stage) == 1 and int(state.pos) == 1 and int(state.t) == 0
    assert int(info["stages_solved"]) == 1
    # the returned observation is the new stage's first one (sub-task reset with a fresh key)
    assert obs[0] == 1 and obs[-1] == 0
    _, reset_sub = ProbeTask().reset(jax.random.split(jax.random.PRNGKey(7))[1], None, jnp.int32(1))
    np.testing.assert_allclose(obs[1], reset_sub.noise)
    # next step acts in stage 1 with its reward
    obs, state, r, *_, info = _step(env, state, WAIT, params)
    assert int(info["stage"]) == 1 and int(state.t) == 1
    np.testing.assert_allclose(r, 0.2)


def test_terminated_only_after_last_stage(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    for k in range(3):
        obs, state, r, term, trunc, info = _step(env, state, GO, params)
        np.testing.assert_allclose(r, BETA * 0.1 * (k + 1) * (T - 1), rtol=1e-6)
        assert bool(term) == (k == 2) and not bool(trunc)
        assert bool(info["stage_terminal"]) and int(info["stage"]) == k
    assert int(state.stages_solved) == 3 and bool(state.done)
    assert obs[0] == 2 and obs[-1] == pytest.approx(1 / T)  # last stage is not reset
    m = episode_metrics(state.stages_solved, params)
    assert float(m["stages_solved_frac"]) == 1.0 and bool(m["all_solved"])


def test_truncated_exactly_at_time_limit(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    _, state, *_ = _step(env, state, GO, params)  # into stage 1
    for t in range(1, T + 1):
        obs, state, r, term, trunc, info = _step(env, state, WAIT, params)
        assert bool(trunc) == (t == T) and not bool(term)
        assert bool(info["stage_terminal"]) == (t == T)
        np.testing.assert_allclose(r, 0.2)  # no bonus on a time limit
    assert int(state.t) == T and obs[-1] == 1.0 and bool(state.done)
    assert int(info["stages_solved"]) == 1
    m = episode_metrics(state.stages_solved, params)
    assert float(m["stages_solved_frac"]) == pytest.approx(1 / 3) and not bool(m["all_solved"])


def test_success_on_last_step_wins_over_time_limit(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    for _ in range(T - 1):
        _, state, *_ = _step(env, state, WAIT, params)
    _obs, state, r, term, trunc, info = _step(env, state, GO, params)
    assert bool(info["stage_success"]) and not bool(trunc) and not bool(term)
    assert float(r) == 0.0  # beta * r * (T - T)
    assert int(state.stage) == 1 and int(state.t) == 0


def test_steps_after_episode_end_are_noops(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    for _ in range(T):
        _, state, *_ = _step(env, state, WAIT, params)
    assert bool(state.done)
    obs, state2, r, term, trunc, info = _step(env, state, GO, params)
    assert float(r) == 0.0 and not bool(term) and not bool(trunc)
    assert not bool(info["stage_success"]) and not bool(info["stage_terminal"])
    np.testing.assert_array_equal(obs, state.obs)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_single_stage_uses_global_head(env_params):
    env, params = env_params
    p2 = single_stage_params(params, 2)
    obs, state = env.reset(jax.random.PRNGKey(0), p2)
    assert int(state.stage) == 2 and obs[0] == 2
    obs, state, r, term, trunc, info = _step(env, state, GO, p2)
    assert int(info["stage"]) == 2 and bool(term) and not bool(trunc)
    assert int(info["stages_solved"]) == 1
    np.testing.assert_allclose(r, BETA * 0.3 * (T - 1), rtol=1e-6)
    assert bool(episode_metrics(state.stages_solved, p2)["all_solved"])


def test_single_stage_params_vmap_over_heads(env_params):
    env, params = env_params
    ps = jax.vmap(lambda k: single_stage_params(params, k))(jnp.arange(3))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    _obs, state = jax.vmap(env.reset)(keys, ps)
    np.testing.assert_array_equal(state.stage, [0, 1, 2])
    step = jax.vmap(env.step, in_axes=(0, 0, None, 0))
    _, state, _, term, _, info = step(keys, state, GO, ps)
    np.testing.assert_array_equal(info["stage"], [0, 1, 2])
    assert bool(jnp.all(term))


def test_subsequence(env_params):
    env, params = env_params
    p = subsequence_params(params, (1, 2))
    _, state = env.reset(jax.random.PRNGKey(0), p)
    stages = []
    for _ in range(2):
        _, state, _, term, _, info = _step(env, state, GO, p)
        stages.append(int(info["stage"]))
    assert stages == [1, 2] and bool(term) and int(state.stages_solved) == 2
    with pytest.raises(ValueError, match="stage_ids"):
        subsequence_params(params, (0, 3))
    with pytest.raises(ValueError, match="stage_ids"):
        subsequence_params(params, ())


def _rollout(env, params, key, actions):
    _obs, state = env.reset(key, params)

    def body(state, xs):
        k, a = xs
        obs, state, r, term, trunc, info = env.step(k, state, a, params)
        return state, (obs, r, term, trunc, info["stage"])

    keys = jax.random.split(key, actions.shape[0])
    return jax.lax.scan(body, state, (keys, actions))


def test_jit_vmap_batch_equals_single_runs(env_params):
    env, params = env_params
    n, steps = 64, 3 * T
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    actions = jax.random.bernoulli(jax.random.PRNGKey(2), 0.15, (n, steps, 1)).astype(jnp.float32)
    run = jax.jit(lambda k, a: _rollout(env, params, k, a))
    batch = jax.jit(jax.vmap(lambda k, a: _rollout(env, params, k, a)))(keys, actions)
    for i in (0, 17, 63):
        single = run(keys[i], actions[i])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batch), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-6)


def test_no_retrace_when_params_values_change(env_params):
    env, params = env_params
    traces = []

    @jax.jit
    def step(key, state, action, params):
        traces.append(1)
        return env.step(key, state, action, params)

    _, state = env.reset(jax.random.PRNGKey(0), params)
    for p in (
        params,
        params.replace(T=jnp.int32(50), beta=jnp.float32(0.5)),
        single_stage_params(params, 1),
        subsequence_params(params, (2, 0)),
    ):
        step(jax.random.PRNGKey(0), state, GO, p)
    assert len(traces) == 1
