"""PointSequence: hand-worked physics, reward, expert solvability, Far unreachability, registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.envs import make, registered
from fpc_jax.envs import point_sequence as ps
from fpc_jax.envs.sequence import single_stage_params


@pytest.fixture(scope="module")
def env_params():
    return make("point_sequence")


def test_registered_and_metadata(env_params):
    env, params = env_params
    assert "point_sequence" in registered()
    assert env.observation_size == 7 and env.action_size == 2 and env.num_heads == 4
    assert env.close_stages == (0, 1) and env.far_stages == (2, 3)
    assert int(params.T) == ps.DEFAULT_T == 100 and float(params.beta) == 1.5
    np.testing.assert_array_equal(params.stage_ids, [0, 1, 2, 3])


def test_hand_worked_dynamics():
    p = ps.PointParams()  # dt 0.1, damping 0.8, force 1
    zero = jnp.zeros(2)
    a = jnp.array([1.0, 0.5])
    pos, vel = ps.point_dynamics(zero, zero, a, jnp.float32(0.0), p)
    np.testing.assert_allclose(vel, [0.1, 0.05], atol=1e-7)
    np.testing.assert_allclose(pos, [0.01, 0.005], atol=1e-7)
    pos, vel = ps.point_dynamics(pos, vel, a, jnp.float32(0.0), p)
    np.testing.assert_allclose(vel, [0.18, 0.09], atol=1e-7)
    np.testing.assert_allclose(pos, [0.028, 0.014], atol=1e-7)
    # actions are clipped to [-1, 1]
    pos, vel = ps.point_dynamics(zero, zero, jnp.array([3.0, -3.0]), jnp.float32(0.0), p)
    np.testing.assert_allclose(vel, [0.1, -0.1], atol=1e-7)
    # the box stops the point and kills the normal velocity
    pos, vel = ps.point_dynamics(
        jnp.array([0.99, 0.0]), jnp.array([0.5, 0.2]), jnp.array([1.0, 0.0]), jnp.float32(0.0), p
    )
    np.testing.assert_allclose(pos, [1.0, 0.016], atol=1e-7)
    np.testing.assert_allclose(vel, [0.0, 0.16], atol=1e-7)
    # a per-stage action rotation of +90 degrees turns "east" into "north"
    pos, vel = ps.point_dynamics(zero, zero, jnp.array([1.0, 0.0]), jnp.float32(np.pi / 2), p)
    np.testing.assert_allclose(vel, [0.0, 0.1], atol=1e-7)


def test_tolerance_reward():
    r = ps.tolerance_long_tail(jnp.array([0.0, 0.05, 1.05, 0.55]), 0.05, 1.0)
    np.testing.assert_allclose(r, [1.0, 1.0, 0.1, 1 / (1 + 9 * 0.25)], rtol=1e-6)


def test_reset_layout_and_hidden_goal(env_params):
    env, params = env_params
    sub = params.sub
    for k in range(4):
        keys = jax.random.split(jax.random.PRNGKey(k), 256)
        obs, st = jax.vmap(lambda key, k=k: env.subtask.reset(key, sub, jnp.int32(k)))(keys)
        assert bool(jnp.all(jnp.abs(st.pos - sub.start[k]) <= sub.start_noise + 1e-6))
        assert bool(jnp.all(jnp.abs(st.goal - sub.goal[k]) <= sub.goal_noise + 1e-6))
        assert bool(jnp.all(st.vel == 0)) and bool(jnp.all(obs[:, 4:] == 0))  # goal slot hidden
        assert float(jnp.std(st.goal[:, 0]) + jnp.std(st.goal[:, 1])) > 0  # jittered
    _, visible = make("point_sequence", goal_visible=True)
    obs, state = env.reset(jax.random.PRNGKey(0), visible)
    np.testing.assert_allclose(obs[4:6], state.sub.goal)
    assert obs.shape == (7,) and obs[-1] == 0


def test_stage_goals_point_in_different_directions(env_params):
    _, params = env_params
    g = params.sub.goal / jnp.linalg.norm(params.sub.goal, axis=1, keepdims=True)
    cos = g @ g.T
    assert bool(jnp.all(cos[~np.eye(4, dtype=bool)] <= 1e-6))  # no two stages share a direction


def _rollout(env, params, key, policy, steps):
    key_reset, key_run = jax.random.split(key)
    _, state = env.reset(key_reset, params)

    def body(state, key):
        key_act, key_step = jax.random.split(key)
        action = policy(key_act, state, params)
        _, state, r, term, trunc, info = env.step(key_step, state, action, params)
        return state, (r, term, trunc, info)

    return jax.lax.scan(body, state, jax.random.split(key_run, steps))


def _expert(key, state, params):
    return ps.expert_policy(state, params)


def _random(key, state, params):
    return jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)


def test_expert_solves_all_stages_in_sequence(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    state, (r, term, trunc, info) = jax.jit(
        jax.vmap(lambda k: _rollout(env, params, k, _expert, 4 * ps.DEFAULT_T))
    )(keys)
    assert bool(jnp.all(state.stages_solved == 4)) and bool(jnp.all(term.sum(1) == 1))
    assert not bool(jnp.any(trunc))
    succ = np.asarray(info["stage_success"])
    assert (succ.sum(1) == 4).all()
    for i in range(8):
        steps = np.diff(np.concatenate([[-1], np.flatnonzero(succ[i])]))
        assert (steps <= 30).all()  # each stage well within T = 100
        np.testing.assert_array_equal(
            np.asarray(info["stage"][i])[np.flatnonzero(succ[i])], range(4)
        )
    # on success the point is inside the radius (r = 1), so the reward is beta * (T - t)
    t_at_success = np.concatenate([[-1], np.flatnonzero(succ[0])])
    np.testing.assert_allclose(
        np.asarray(r[0])[succ[0]], 1.5 * (100 - np.diff(t_at_success)), rtol=1e-5
    )


def test_random_policy_practically_never_reaches_far(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(4), 256)
    state, _ = jax.jit(jax.vmap(lambda k: _rollout(env, params, k, _random, 4 * ps.DEFAULT_T)))(
        keys
    )
    reach_stage1 = float(jnp.mean(state.stages_solved >= 1))
    reach_far = float(jnp.mean(state.stages_solved >= 2))  # stage 2 = first Far stage
    assert reach_stage1 < 0.1
    assert reach_far <= 1 / 256


@pytest.mark.parametrize("k", [2, 3])
def test_single_far_stage_runs_alone_with_its_head(env_params, k):
    env, params = env_params
    pk = single_stage_params(params, k)
    keys = jax.random.split(jax.random.PRNGKey(5), 16)
    state, (_r, term, _trunc, info) = jax.jit(
        jax.vmap(lambda key: _rollout(env, pk, key, _expert, ps.DEFAULT_T))
    )(keys)
    assert bool(jnp.all(info["stage"] == k))
    assert bool(jnp.all(state.stages_solved == 1)) and bool(jnp.all(term.sum(1) == 1))


def test_expert_respects_action_rotation():
    env, params = make("point_sequence", action_angle=[0.5, -1.0, 2.0, 3.0])
    keys = jax.random.split(jax.random.PRNGKey(6), 16)
    state, _ = jax.jit(jax.vmap(lambda k: _rollout(env, params, k, _expert, 4 * ps.DEFAULT_T)))(
        keys
    )
    assert bool(jnp.all(state.stages_solved == 4))


def test_jit_vmap_64_keys_and_over_params():
    env, params = make("point_sequence", T=30)
    keys = jax.random.split(jax.random.PRNGKey(7), 64)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    actions = jnp.zeros((64, 2))
    obs, state, r, _term, _trunc, info = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(
        keys, state, actions, params
    )
    assert obs.shape == (64, 7) and r.shape == (64,) and info["stage"].shape == (64,)
    np.testing.assert_allclose(obs[:, -1], 1 / 30)
    # vmap over env variants: one batch of params per key
    radii = jnp.linspace(0.05, 0.2, 64)
    batched = jax.vmap(lambda rad: params.replace(sub=params.sub.replace(goal_radius=rad)))(
        jnp.broadcast_to(radii[:, None], (64, 4))
    )
    obs, state = jax.jit(jax.vmap(env.reset))(keys, batched)
    assert obs.shape == (64, 7)


def test_overrides():
    _, params = make("point_sequence", T=50, beta=2.0, goal_radius=0.1, stage_ids=(2, 3))
    assert int(params.T) == 50 and float(params.beta) == 2.0
    np.testing.assert_allclose(params.sub.goal_radius, [0.1] * 4)
    np.testing.assert_array_equal(params.stage_ids[:2], [2, 3])
    assert int(params.num_stages) == 2
    with pytest.raises(ValueError, match=r"valid:.*goal_radius"):
        make("point_sequence", goal_radius_typo=0.1)
    with pytest.raises(ValueError, match="shape"):
        make("point_sequence", goal=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="T must be"):
        make("point_sequence", T=0)
    with pytest.raises(ValueError, match="stage_ids"):
        make("point_sequence", stage_ids=(4,))
