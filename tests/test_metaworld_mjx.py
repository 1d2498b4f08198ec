"""The MJX RoboticSequence (``backend="mjx"``) against the real metaworld and against the port.

Slow, and skipped unless ``MTCWorldMJX`` (installed with ``--no-deps``, docs/mjx_backend.md) and
``metaworld`` both import; run with
``PYTHONPATH=. ../venv-mjx316/bin/python -m pytest -m slow tests/test_metaworld_mjx.py``.
Tolerances come from docs/mjx_evaluation.md (the port against metaworld, same start, same actions).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("MTCWorldMJX")
pytest.importorskip("metaworld")

import jax
import jax.numpy as jnp

import fpc_jax.envs.metaworld_cpu as mw
import fpc_jax.envs.metaworld_mjx as mm
from fpc_jax.envs import make
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, single_stage_params

pytestmark = [pytest.mark.slow, pytest.mark.metaworld]

T, BETA = 200, 1.5
TASKS = mw.DEFAULT_TASKS
EPISODES = 5  # per task, for the success rate (b) and the open-loop replay (c)
OPEN_LOOP_STEPS = 50

# Max |MJX - real| up to step 50, same start and actions (hand xyz, object xyz): about 3x the
# evaluation's worst case on mujoco 3.16 (push 8e-4 / 2e-3, hammer 2e-4 / 1.5e-3, push-wall
# 1.6e-3 / 2.2e-3; peg-unplug-side 4.7e-2 / 1.1e-2 at step 50, zero geom margins, see the doc).
POS_TOL = {
    "warp": {"hammer-v3": 5e-3, "push-v3": 7e-3, "peg-unplug-side-v3": 0.1, "push-wall-v3": 7e-3},
    # impl="jax" (edited models, JAX_EDITS): ~3x what was measured here (hammer 1.8e-3 / 2.6e-3,
    # push 2.6e-3 / 4.1e-3, push-wall 9.9e-4 / 1.6e-3, peg 3.8e-2 / 9.9e-3; docs/mjx_backend.md)
    "jax": {"hammer-v3": 8e-3, "push-v3": 1.2e-2, "peg-unplug-side-v3": 0.1, "push-wall-v3": 7e-3},
}
# Rewards (measured here, seed 11: max over steps 1-25 hammer 0.060, peg 0.041, push 2e-3,
# push-wall 7e-4; median over steps 1-50 <= 1.1e-3). Past step 25 a sub-mm offset moves a
# threshold of the shaped rewards by a step and the reward by 1-5 (evaluation: max up to the
# first success 2.1-5.5, the same jumps between two CPU MuJoCo releases), hence the loose max.
# impl="jax": push-wall's reward differed by 0.26 within steps 1-25 (the prism puck's contact
# moves a shaped term's threshold); the other tasks by <= 0.05.
REWARD_TOL_25 = {"warp": 0.15, "jax": 0.5}
REWARD_MEDIAN_TOL = 0.01
REWARD_TOL_50 = 6.0


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore")


def _policy(task: str):
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()


def _actions(policies, obs: np.ndarray) -> np.ndarray:
    """Scripted actions from a batch of env observations (the first 39 entries)."""
    obs = np.atleast_2d(np.asarray(obs, np.float64))
    return np.stack([p.get_action(o[:39]) for p, o in zip(policies, obs, strict=True)])


@functools.cache
def _sequence(dispatch: str = "switch") -> tuple[SequenceEnv, SequenceParams, dict]:
    """The RoboticSequence; ``switch`` (one task per step) for the unbatched loops here."""
    env, params = make("metaworld/robotic_sequence", backend="mjx", dispatch=dispatch)
    fns = {
        "reset": jax.jit(env.reset),
        "step": jax.jit(env.step),
        "sub_step": jax.jit(env.subtask.step),
        "sub_reset": jax.jit(env.subtask.reset),
    }
    return env, params, fns


def test_module_imports_without_the_port():
    code = (
        "import sys, fpc_jax.envs.metaworld_mjx; "
        "assert not {'MTCWorldMJX', 'mujoco', 'metaworld'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_returns_pure_jax_env_and_params():
    env, params, _ = _sequence()
    assert isinstance(env, SequenceEnv) and isinstance(params, SequenceParams)
    assert env.stage_names == TASKS and env.observation_size == 40 and env.action_size == 4
    assert (env.close_stages, env.far_stages) == ((0, 1), (2, 3))
    assert env.subtask.envs[0].config.partially_observable is False  # goal visible, as on CPU
    np.testing.assert_array_equal(params.stage_ids, [0, 1, 2, 3])
    single, sp = make("metaworld/push-wall-v3", backend="mjx", head=3)
    assert single.num_heads == 4 and single.stage_names[3] == "push-wall-v3"
    np.testing.assert_array_equal(sp.stage_ids, [3, 3, 3, 3])
    assert int(sp.num_stages) == 1 and int(sp.sub.task_of_head[3]) == 0
    with pytest.raises(ValueError, match="unknown MJX impl 'cuda'"):
        make("metaworld/push-v3", backend="mjx", impl="cuda")


def test_stitching_on_mjx_with_scripted_policies():
    """(a) Scripted policies from the env's own observations solve all four stages; every
    transition is checked against the sub-task stepped alone from the same state."""
    _, params, f = _sequence()
    policies = [_policy(t) for t in TASKS]
    key = jax.random.PRNGKey(0)
    obs, state = f["reset"](key, params)
    sub_obs0, _ = f["sub_reset"](key, params.sub, jnp.int32(0))
    assert obs.shape == (40,) and obs.dtype == jnp.float32 and obs[-1] == 0.0
    np.testing.assert_array_equal(obs[:39], sub_obs0)
    k, t, solved, success_steps = 0, 0, 0, []
    for i in range(len(TASKS) * T):
        action = jnp.asarray(_actions(policies[k : k + 1], obs)[0], jnp.float32)
        key_i = jax.random.fold_in(key, i)
        key_step, key_reset = jax.random.split(key_i)
        ref_obs, _, ref_r, ref_success = f["sub_step"](
            key_step, state.sub, action, params.sub, state.stage
        )
        obs, state, reward, terminated, truncated, info = f["step"](key_i, state, action, params)
        t += 1
        ref_success = bool(ref_success)
        assert int(info["stage"]) == k and bool(info["stage_success"]) == ref_success
        assert bool(info["stage_terminal"]) == (ref_success or t == T)
        assert float(info["sub_reward"]) == float(ref_r)
        expected_r = BETA * float(ref_r) * (T - t) if ref_success else float(ref_r)
        assert float(reward) == pytest.approx(expected_r, rel=1e-6)
        assert not truncated
        if ref_success:
            solved += 1
            success_steps.append(t)
            if k == len(TASKS) - 1:
                assert terminated and bool(state.done)
                np.testing.assert_array_equal(obs[:39], ref_obs)
                break
            k, t = k + 1, 0
            ref_obs, _ = f["sub_reset"](key_reset, params.sub, jnp.int32(k))
        assert not terminated
        assert int(info["stages_solved"]) == solved == int(state.stages_solved)
        assert int(state.t) == t and int(state.stage) == k
        np.testing.assert_array_equal(obs[:39], ref_obs)
        assert obs[-1] == np.float32(t) / np.float32(T)
    assert solved == len(TASKS), success_steps
    assert all(0 < s < T for s in success_steps), success_steps
    # a finished episode is a no-op
    obs2, _, reward, terminated, truncated, _ = f["step"](key, state, jnp.zeros(4), params)
    np.testing.assert_array_equal(obs2, obs)
    assert float(reward) == 0.0 and not terminated and not truncated


def test_vmapped_select_equals_unbatched_switch():
    """Lane k of the vmapped env (``select``, every task stepped) plays stage k alone exactly as
    the unbatched ``switch`` env does: same observations, rewards and flags."""
    _, params, f = _sequence("switch")
    venv, vparams, _ = _sequence("select")
    steps, k_all = 8, jnp.arange(len(TASKS))
    lane_params = jax.vmap(single_stage_params, (None, 0))(vparams, k_all)
    keys = jax.random.split(jax.random.PRNGKey(5), len(TASKS))
    actions = jax.random.uniform(jax.random.PRNGKey(6), (steps, len(TASKS), 4), minval=-1.0)
    vobs, vstate = jax.jit(jax.vmap(venv.reset))(keys, lane_params)
    vstep = jax.jit(jax.vmap(venv.step))
    v_out = [vobs]
    for t in range(steps):
        vobs, vstate, vr, *_ = vstep(
            jax.vmap(jax.random.fold_in, (0, None))(keys, t), vstate, actions[t], lane_params
        )
        v_out.append(jnp.concatenate([vobs, vr[:, None]], axis=1))
    for k in range(len(TASKS)):
        p = single_stage_params(params, k)
        obs, state = f["reset"](keys[k], p)
        np.testing.assert_allclose(obs, v_out[0][k], atol=1e-6)
        for t in range(steps):
            obs, state, r, *_ = f["step"](jax.random.fold_in(keys[k], t), state, actions[t, k], p)
            np.testing.assert_allclose(jnp.append(obs, r), v_out[t + 1][k], atol=1e-5, rtol=1e-5)
        assert int(state.stage) == k


def test_time_limit_truncates():
    _, params, f = _sequence()
    horizon = 5
    params = params.replace(T=jnp.int32(horizon))  # a leaf: no recompilation
    obs, state = f["reset"](jax.random.PRNGKey(3), params)
    for t in range(1, horizon + 1):
        obs, state, reward, terminated, truncated, info = f["step"](
            jax.random.PRNGKey(t), state, jnp.zeros(4), params
        )
        assert obs[-1] == np.float32(t) / np.float32(horizon)
        assert not terminated and not info["stage_success"] and int(info["stage"]) == 0
        assert bool(truncated) == bool(info["stage_terminal"]) == (t == horizon)
        assert float(reward) == float(info["sub_reward"])
    assert bool(state.done)


def _cpu_episodes(task: str, seed: int) -> dict[str, np.ndarray]:
    """EPISODES scripted episodes of the real env (CPU MuJoCo), recorded."""
    ref = mw.StageEnv(task, seed)
    policy = _policy(task)
    out = {"rand_vec": [], "obs": [], "actions": [], "rewards": [], "first_success": []}
    for _ in range(EPISODES):
        obs = ref.reset()
        out["rand_vec"].append(np.array(ref.env._last_rand_vec))
        obs_l, act_l, rew_l, first = [obs], [], [], T + 1
        for t in range(1, T + 1):
            a = policy.get_action(obs)
            obs, r, success = ref.step(a)
            if t <= OPEN_LOOP_STEPS:
                obs_l.append(obs), act_l.append(a), rew_l.append(r)
            first = min(first, t) if success else first
            if first <= T and t >= OPEN_LOOP_STEPS:
                break
        out["obs"].append(obs_l), out["actions"].append(act_l), out["rewards"].append(rew_l)
        out["first_success"].append(first)
    return {k: np.asarray(v) for k, v in out.items()}


@functools.cache
def _rollouts(task: str, impl: str) -> dict[str, np.ndarray]:
    """2 x EPISODES lanes of the one-task MJX env, vmapped, each reset to a CPU episode's start:
    lanes [0, E) replay the CPU actions open loop, lanes [E, 2E) run the scripted policy."""
    cpu = _cpu_episodes(task, seed=11)
    env, params = make(f"metaworld/{task}", backend="mjx", impl=impl, num_envs=2 * EPISODES)
    rand_vecs = np.concatenate([cpu["rand_vec"], cpu["rand_vec"]])
    lane_params = jax.vmap(lambda rv: mm.with_rand_vecs(params, 0, rv[None]))(
        jnp.asarray(rand_vecs, jnp.float32)
    )
    keys = jax.random.split(jax.random.PRNGKey(1), 2 * EPISODES)
    obs, state = jax.jit(jax.vmap(env.reset))(keys, lane_params)
    step = jax.jit(jax.vmap(env.step))
    policies = [_policy(task) for _ in range(EPISODES)]
    obs_l, rew_l = [np.asarray(obs)], []
    first = np.full(EPISODES, T + 1)
    for t in range(1, T + 1):
        closed = _actions(policies, np.asarray(obs)[EPISODES:])
        replay = cpu["actions"][:, min(t, OPEN_LOOP_STEPS) - 1]
        actions = jnp.asarray(np.concatenate([replay, closed]), jnp.float32)
        keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
        obs, state, _, _, _, info = step(keys, state, actions, lane_params)
        if t <= OPEN_LOOP_STEPS:
            obs_l.append(np.asarray(obs)), rew_l.append(np.asarray(info["sub_reward"]))
        success = np.asarray(info["stage_success"])[EPISODES:]
        first = np.where(success & (first > T), t, first)
        if t >= OPEN_LOOP_STEPS and np.all(np.asarray(state.done)[EPISODES:]):
            break
    return {
        "cpu_first_success": cpu["first_success"],
        "mjx_first_success": first,
        "cpu_obs": cpu["obs"],
        "cpu_rewards": cpu["rewards"],
        "mjx_obs": np.stack(obs_l, axis=1)[:EPISODES, :, :39],
        "mjx_rewards": np.stack(rew_l, axis=1)[:EPISODES],
    }


@pytest.mark.parametrize("impl", mm.IMPLS)
@pytest.mark.parametrize("task", TASKS)
def test_scripted_success_rate_matches_cpu(task, impl):
    """(b) Closed-loop scripted success on MJX >= 90% of the real env's, same start states."""
    r = _rollouts(task, impl)
    cpu_rate = np.mean(r["cpu_first_success"] <= T)
    mjx_rate = np.mean(r["mjx_first_success"] <= T)
    print(task, "first success cpu", r["cpu_first_success"], "mjx", r["mjx_first_success"])
    assert cpu_rate > 0 and mjx_rate >= 0.9 * cpu_rate, (cpu_rate, mjx_rate)


@pytest.mark.parametrize("impl", mm.IMPLS)
@pytest.mark.parametrize("task", TASKS)
def test_open_loop_replay_matches_cpu(task, impl):
    """(c) Same start state (the CPU env's rand_vec forced into the MJX reset), same actions:
    observations and rewards over the first 50 steps within the evaluation's error bands."""
    r = _rollouts(task, impl)
    cpu, mjx = r["cpu_obs"], r["mjx_obs"]
    d = np.abs(cpu - mjx)
    print(task, "max |d| hand", d[..., 0:3].max(), "obj", d[..., 4:7].max())
    np.testing.assert_allclose(mjx[:, 0, 36:39], cpu[:, 0, 36:39], atol=1e-5)  # goal
    np.testing.assert_allclose(mjx[:, 0, 4:7], cpu[:, 0, 4:7], atol=1e-5)  # object at reset
    np.testing.assert_allclose(mjx[:, 0, 0:3], cpu[:, 0, 0:3], atol=1e-3)  # hand, after settle
    assert d[..., 0:3].max() < POS_TOL[impl][task] and d[..., 4:7].max() < POS_TOL[impl][task]
    assert d[..., 36:39].max() < 1e-5  # the goal stays put
    dr = np.abs(r["cpu_rewards"] - r["mjx_rewards"])
    print(task, "reward |d| max 25 / max 50 / median 50", dr[:, :25].max(), dr.max(), np.median(dr))
    assert dr[:, :25].max() < REWARD_TOL_25[impl] and np.median(dr) < REWARD_MEDIAN_TOL
    assert dr.max() < REWARD_TOL_50
