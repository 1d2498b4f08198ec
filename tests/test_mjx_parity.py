"""Parity of ``mtcworldmjx`` (MJX-Warp port) against the real metaworld on push-v3.

See docs/mjx_evaluation.md.

Slow and skipped unless both ``MTCWorldMJX`` and ``metaworld`` import, which with our pins they
do not (mtcworldmjx 0.4.0 needs mujoco 3.10.x): run it in the evaluation venv, e.g.
``../venv-mjx/bin/python -m pytest -m slow tests/test_mjx_parity.py``. The full study is
``scripts/mjx_parity_probe.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.metaworld]

TASK, STEPS = "push-v3", 60


def _real_env(seed: int = 0):
    import metaworld

    env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[TASK]()
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)
    env.observation_space = env.sawyer_observation_space
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.seed(seed)
    return env


def test_push_same_start_same_actions_and_reward_function():
    pytest.importorskip("MTCWorldMJX")
    pytest.importorskip("metaworld")
    warnings.filterwarnings("ignore")
    import jax
    import jax.numpy as jnp
    from metaworld.policies import SawyerPushV3Policy
    from MTCWorldMJX import make
    from MTCWorldMJX.envs.sawyer_xyz import SawyerXYZConfig

    real = _real_env()
    obs, _ = real.reset()
    rand_vec = np.array(real._last_rand_vec)
    pol = SawyerPushV3Policy()
    r_obs, acts, r_rew, r_succ = [obs], [], [], []
    for _ in range(STEPS):
        a = np.clip(pol.get_action(obs), -1, 1)
        obs, r, _, _, info = real.step(a)
        r_obs.append(obs), acts.append(a), r_rew.append(r), r_succ.append(info["success"])
    r_obs = np.array(r_obs)

    env = make(TASK, config=SawyerXYZConfig(partially_observable=False))
    assert (env.n_substeps, env.config.action_scale, env.config.sim_dt) == (5, 0.01, 0.0025)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0), jnp.asarray(rand_vec, jnp.float32))
    o0 = np.asarray(state.obs)
    assert o0.shape == (39,)
    np.testing.assert_allclose(o0[4:7], r_obs[0, 4:7], atol=1e-5)  # object (xyzw quat after)
    np.testing.assert_allclose(o0[36:39], r_obs[0, 36:39], atol=1e-5)  # goal
    np.testing.assert_allclose(o0[0:3], r_obs[0, 0:3], atol=1e-3)  # hand after settling
    step = jax.jit(env.step)
    m_obs = [o0]
    for a in acts:
        state = step(state, jnp.asarray(a, jnp.float32))
        m_obs.append(np.asarray(state.obs))
    d = np.abs(np.array(m_obs) - r_obs)
    # probe: max 1.8e-3 (hand) / 2.2e-3 (puck) up to success; CPU mujoco 3.10 vs 3.16: 1e-3
    assert d[:, 0:3].max() < 1e-2 and d[:, 4:7].max() < 1e-2, (d[:, 0:3].max(), d[:, 4:7].max())
