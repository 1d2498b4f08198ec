"""AppleRetrieval env: hand-worked episodes, the exact evaluator, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.envs import make
from fpc_jax.envs.apple_retrieval import AppleParams, exact_outcome_probs


def _play(actions, **kw):
    env, params = make("apple_retrieval", **kw)
    obs, state = env.reset(jax.random.key(0), params)
    out = [(np.asarray(obs), int(state.x), int(state.phase))]
    for a in actions:
        obs, state, r, term, trunc, _ = env.step(jax.random.key(0), state, a, params)
        out.append(
            (np.asarray(obs), int(state.x), int(state.phase), float(r), bool(term), bool(trunc))
        )
    return out


def test_hand_worked_episode_m3():
    # left at home (clamped, wrong), right x3 reaches the apple, right in Phase 2 (wrong, clamped
    # at M), then left x3 home: success on the last step.
    traj = _play([0, 1, 1, 1, 1, 0, 0, 0], M=3, c=0.5)
    assert np.allclose(traj[0][0], [1.0, -0.5]) and traj[0][1:] == (0, 1)
    xs = [s[1] for s in traj[1:]]
    phases = [s[2] for s in traj[1:]]
    rewards = [s[3] for s in traj[1:]]
    assert xs == [0, 1, 2, 3, 3, 2, 1, 0]
    assert phases == [1, 1, 1, 2, 2, 2, 2, 2]
    assert rewards == [-1, 1, 1, 1, -1, 1, 1, 1]
    assert [s[4] for s in traj[1:]] == [False] * 7 + [True]
    assert not any(s[5] for s in traj[1:])
    # The step that reaches the apple already returns the Phase-2 observation.
    assert np.allclose(traj[4][0], [1.0, 0.5]) and np.allclose(traj[3][0], [1.0, -0.5])
    assert all(s[0].dtype == np.float32 and s[0].shape == (2,) for s in traj)


def test_truncation_at_T_and_phase2_start():
    traj = _play([1, 0] * 3, M=5, T=6)
    assert [s[5] for s in traj[1:]] == [False] * 5 + [True]
    assert not any(s[4] for s in traj[1:])
    traj2 = _play([0, 0], M=2, start_phase=2)
    assert traj2[0][1:] == (2, 2) and np.allclose(traj2[0][0], [1.0, 0.5])
    assert traj2[-1][4] and traj2[-1][3] == 1.0


def test_phase1_at_home_never_succeeds():
    traj = _play([0, 0, 0], M=4)
    assert [s[1] for s in traj[1:]] == [0, 0, 0] and not any(s[4] for s in traj[1:])


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"M": 0}, "M must be"),
        ({"T": 0}, "T must be"),
        ({"start_phase": 3}, "start_phase"),
        ({"bogus": 1}, "valid:"),
        ({"M": 2.5}, "integer"),
    ],
)
def test_bad_params_raise(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make("apple_retrieval", **kw)


def test_unknown_env_lists_registered():
    with pytest.raises(KeyError, match="apple_retrieval"):
        make("apple_retreival")


@pytest.mark.parametrize("start_phase", [1, 2])
def test_exact_evaluator_matches_monte_carlo(start_phase):
    """The DP evaluator against 20k sampled episodes of the real env.step."""
    env, params = make("apple_retrieval", M=6, T=30, c=0.5, start_phase=start_phase)
    p1, p2 = 0.7, 0.35

    def episode(key):
        obs, state = env.reset(key, params)

        def body(carry, k):
            obs, state, done, succ, reach = carry
            p = jnp.where(state.phase == 1, p1, p2)
            a = jax.random.bernoulli(k, p).astype(jnp.int32)
            obs, state2, _, term, trunc, info = env.step(k, state, a, params)
            state2 = jax.tree.map(lambda n, o: jnp.where(done, o, n), state2, state)
            return (
                obs,
                state2,
                done | term | trunc,
                succ | (term & ~done),
                reach | (info["reached_apple"] & ~done),
            ), None

        init = (obs, state, False, False, start_phase == 2)
        (_, _, _, succ, reach), _ = jax.lax.scan(body, init, jax.random.split(key, 30))
        return succ, reach

    succ, reach = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(1), 20000))
    exact_s, exact_r = exact_outcome_probs(jnp.float32(p1), jnp.float32(p2), params, 30, 64)
    assert abs(float(succ.mean()) - float(exact_s)) < 0.015
    assert abs(float(reach.mean()) - float(exact_r)) < 0.015
    assert 0.05 < float(exact_s) < 0.95  # a non-trivial case


def test_exact_evaluator_deterministic_policies():
    params = AppleParams(M=10, T=100, c=0.5, start_phase=1)
    s, r = exact_outcome_probs(jnp.float32(1.0), jnp.float32(0.0), params, 100, 64)
    assert float(s) == pytest.approx(1.0) and float(r) == pytest.approx(1.0)
    s, r = exact_outcome_probs(jnp.float32(0.0), jnp.float32(0.0), params, 100, 64)
    assert float(s) == 0.0 and float(r) == 0.0
    # Optimal policy needs exactly 2M steps: T = 2M - 1 is not enough.
    s, _ = exact_outcome_probs(jnp.float32(1.0), jnp.float32(0.0), params.replace(T=19), 100, 64)
    assert float(s) == 0.0
