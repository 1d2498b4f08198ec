"""The CPU Meta-World RoboticSequence against the real metaworld package, step by step."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import fpc_jax.envs.metaworld_cpu as mw
from fpc_jax.envs import make

T, BETA = 200, 1.5

needs_metaworld = pytest.mark.metaworld


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", module="gymnasium")


def _metaworld():
    return pytest.importorskip("metaworld")


def _policies(tasks):
    from metaworld.policies import ENV_POLICY_MAP

    return [ENV_POLICY_MAP[t]() for t in tasks]


def test_module_imports_without_metaworld():
    code = "import sys, fpc_jax.envs.metaworld_cpu; assert 'metaworld' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_errors_list_valid_choices():
    with pytest.raises(ValueError, match=r"unknown Meta-World task 'hamer-v3'.*'hammer-v3'"):
        make("metaworld/robotic_sequence", tasks=["hamer-v3", "push-v3"])
    with pytest.raises(ValueError, match=r"unknown Meta-World backend 'gpu'; valid: cpu"):
        make("metaworld/push-v3", backend="gpu")
    with pytest.raises(KeyError, match="metaworld/push-v3"):
        make("metaworld/push-v2")
    with pytest.raises(ValueError, match="randomization"):
        make("metaworld/push-v3", randomization="fixed")


@needs_metaworld
def test_full_sequence_matches_metaworld_step_by_step():
    """Scripted policies solve every stage; each transition is checked against raw metaworld."""
    _metaworld()
    env = mw.MetaWorldSequence(seed=0)
    tasks = env.config.tasks
    ref = [
        mw.StageEnv(task, s)
        for task, s in zip(tasks, np.random.SeedSequence(0).spawn(len(tasks)), strict=True)
    ]
    policies = _policies(tasks)
    obs = env.reset()
    ref_obs = ref[0].reset()
    assert obs.shape == (40,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, np.append(ref_obs, 0.0).astype(np.float32))
    k, t, solved, success_steps = 0, 0, 0, []
    for _ in range(len(tasks) * T):
        action = policies[k].get_action(obs[:39].astype(np.float64))
        obs, reward, terminated, truncated, info = env.step(action)
        ref_obs, ref_r, ref_success = ref[k].step(action)
        t += 1
        assert info["stage"] == k and info["stage_success"] == ref_success
        assert info["stage_terminal"] == (ref_success or t == T)
        assert info["sub_reward"] == np.float32(ref_r)
        expected_r = BETA * ref_r * (T - t) if ref_success else ref_r
        assert reward == pytest.approx(expected_r, rel=1e-6)
        assert not truncated
        if ref_success:
            solved += 1
            success_steps.append(t)
            if k == len(tasks) - 1:
                assert terminated
                np.testing.assert_array_equal(obs, np.append(ref_obs, t / T).astype(np.float32))
                break
            k, t = k + 1, 0
            ref_obs = ref[k].reset()
        assert not terminated
        assert info["stages_solved"] == solved
        np.testing.assert_array_equal(obs, np.append(ref_obs, t / T).astype(np.float32))
    assert solved == len(tasks) == 4, success_steps
    assert all(0 < s < T for s in success_steps)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))


@needs_metaworld
def test_time_limit_truncates_and_metaworld_limit_never_fires():
    _metaworld()
    for horizon in (T, 600):  # 600 > metaworld's own 500-step limit
        env = mw.MetaWorldSequence(seed=3, tasks=("push-v3", "push-wall-v3"), T=horizon)
        obs = env.reset()
        for t in range(1, horizon + 1):
            obs, reward, terminated, truncated, info = env.step(np.zeros(4))
            assert obs[-1] == np.float32(t / horizon)
            assert not terminated and not info["stage_success"] and info["stage"] == 0
            assert truncated == info["stage_terminal"] == (t == horizon)
            assert info["stages_solved"] == 0 and reward == info["sub_reward"]
        assert obs[-1] == 1.0


@needs_metaworld
def test_single_stage_keeps_global_head_and_terminates_on_success():
    _metaworld()
    config = mw.single_stage_config(mw.MetaWorldSequenceConfig(), 3)
    assert config.tasks == ("push-wall-v3",) and config.stage_ids == (3,)
    env, params = make("metaworld/push-wall-v3", backend="cpu", head=3, seed=1)
    assert isinstance(env, mw.MetaWorldSequence) and params == config
    (policy,) = _policies(config.tasks)
    obs = env.reset()
    for _ in range(T):
        obs, reward, terminated, truncated, info = env.step(policy.get_action(obs[:39]))
        assert info["stage"] == 3
        if terminated or truncated:
            break
    assert terminated and info["stage_success"] and info["stages_solved"] == 1
    assert reward == pytest.approx(BETA * info["sub_reward"] * (T - round(obs[-1] * T)), rel=1e-6)


@needs_metaworld
def test_reset_randomizes_and_seed_determines_everything():
    _metaworld()
    tasks = ("push-v3",)
    a, b, c = (mw.MetaWorldSequence(seed=s, tasks=tasks) for s in (7, 7, 8))
    first = [a.reset() for _ in range(3)]
    assert len({o[36:39].tobytes() for o in first}) == 3  # a new goal at every reset
    np.testing.assert_array_equal(
        first[-1][36:39], a.stage_envs[0].env._target_pos.astype(np.float32)
    )
    np.testing.assert_array_equal(np.stack([b.reset() for _ in range(3)]), np.stack(first))
    assert not np.array_equal(c.reset(), first[0])
    rng = np.random.default_rng(0)
    for action in rng.uniform(-1, 1, (50, 4)):
        np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])


@needs_metaworld
def test_mt1_randomization_draws_from_the_mt1_goal_set():
    metaworld = _metaworld()
    stage = mw.StageEnv("push-v3", seed=5, randomization="mt1")
    goals = {g.tobytes() for g in (mw_task_rand_vec(t) for t in stage._goals)}
    assert len(goals) == 50
    seen = set()
    for _ in range(5):
        stage.reset()
        assert stage.env._last_rand_vec.tobytes() in goals
        seen.add(stage.env._last_rand_vec.tobytes())
    assert len(seen) > 1 and isinstance(stage.env, metaworld.SawyerXYZEnv)


def mw_task_rand_vec(task) -> np.ndarray:
    import pickle

    return np.asarray(pickle.loads(task.data)["rand_vec"])


@needs_metaworld
def test_vector_env_equals_single_envs_sync_and_workers():
    """Env i of the vector env is the single env with env_seeds(seed, B)[i]; auto-reset is
    same-step with the finished episode's last observation in info["final_obs"]."""
    _metaworld()
    tasks, horizon, num_envs, steps = ("push-v3", "hammer-v3"), 15, 3, 40
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, num_envs, 4))
    singles = [
        mw.MetaWorldSequence(seed=s, tasks=tasks, T=horizon) for s in mw.env_seeds(4, num_envs)
    ]
    ref_obs = np.stack([e.reset() for e in singles])
    vec_sync = mw.MetaWorldSequenceVec(tasks, num_envs, seed=4, T=horizon)
    env, _ = make(
        "metaworld/robotic_sequence", tasks=tasks, T=horizon, num_envs=num_envs, seed=4, workers=2
    )
    assert isinstance(env, mw.MetaWorldSequenceVec)
    with env as vec_par:
        np.testing.assert_array_equal(vec_sync.reset(), ref_obs)
        np.testing.assert_array_equal(vec_par.reset(), ref_obs)
        done_count = 0
        for a in actions:
            outs = [e.step(x) for e, x in zip(singles, a, strict=True)]
            final = np.stack([o[0] for o in outs])
            done = np.array([o[2] or o[3] for o in outs])
            done_count += done.sum()
            expected_obs = np.stack(
                [e.reset() if d else f for e, d, f in zip(singles, done, final, strict=True)]
            )
            for vec in (vec_sync, vec_par):
                obs, reward, terminated, truncated, info = vec.step(a)
                np.testing.assert_array_equal(obs, expected_obs)
                np.testing.assert_array_equal(info["final_obs"], final)
                np.testing.assert_array_equal(reward, [np.float32(o[1]) for o in outs])
                np.testing.assert_array_equal(terminated | truncated, done)
                for key in (*mw.INFO_KEYS, "sub_reward"):
                    np.testing.assert_array_equal(info[key], [o[4][key] for o in outs])
        assert done_count == num_envs * (steps // horizon)
    vec_sync.close()
