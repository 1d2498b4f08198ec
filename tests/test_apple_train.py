"""REINFORCE on AppleRetrieval: vmap equivalence, determinism, no recompilation, Fig. 3 trends."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.agents.reinforce import ReinforceStatic, make_train, rewards_to_go
from fpc_jax.agents.reinforce.losses import reinforce_loss
from fpc_jax.experiments import apple
from fpc_jax.experiments.config import ConfigError, build, parse_overrides

SMALL = ReinforceStatic(pretrain_updates=40, finetune_updates=40, eval_interval=10)


def test_rewards_to_go_hand_values():
    g = rewards_to_go(jnp.array([1.0, -1.0, 1.0, 5.0]), jnp.array([1.0, 1.0, 1.0, 0.0]), 0.5)
    assert np.allclose(g, [1 - 0.5 + 0.25, -1 + 0.5, 1.0, 0.0])


def test_reinforce_gradient_hand_value():
    # One episode, one step, obs s, action right, return G, no baseline:
    # d/dw [-log sigmoid(w.s) G] = -(1 - sigmoid(w.s)) s G.
    w = jnp.array([0.3, -0.2])
    s = jnp.array([1.0, 0.5])
    g = jax.grad(
        lambda w: reinforce_loss(
            w, s[None, None], jnp.array([[1]]), jnp.array([[2.0]]), jnp.ones((1, 1)), 1.0, False
        )[0]
    )(w)
    expected = -(1 - jax.nn.sigmoid(w @ s)) * s * 2.0
    assert np.allclose(g, expected, atol=1e-6)


def _inputs(ms, cs, seeds):
    cfg = build(apple.AppleConfig, {"M": ms, "c": cs, "seeds": seeds})
    return apple.run_inputs(cfg)


def test_vmapped_run_equals_single_run():
    hyper, params, keys = _inputs([5, 12], [0.5, 1.0], 2)
    train = make_train(SMALL)
    batched = jax.jit(jax.vmap(train))(hyper, params, keys)
    i = 5
    one = jax.tree.map(lambda x: x[i], (hyper, params, keys))
    single = jax.jit(train)(*one)
    for k in ("w_pre", "w_final", "curve_success_phase2", "update_batch_reach_phase2"):
        np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-5, atol=1e-6)


def test_same_seed_identical_and_different_seed_differs():
    hyper, params, keys = _inputs([8], [0.5], 3)
    f = jax.jit(jax.vmap(make_train(SMALL)))
    a, b = f(hyper, params, keys), f(hyper, params, keys)
    np.testing.assert_array_equal(a["w_final"], b["w_final"])
    assert not np.allclose(a["w_final"][0], a["w_final"][1])


def test_new_grid_does_not_recompile():
    traces = []
    static = dataclasses.replace(SMALL, pretrain_updates=20, finetune_updates=20)
    inner = make_train(static)

    def counted(*args):
        traces.append(1)
        return inner(*args)

    f = jax.jit(jax.vmap(counted))
    jax.block_until_ready(f(*_inputs([5, 10, 20], [0.5], 2)))
    jax.block_until_ready(f(*_inputs([6, 12, 30], [0.5], 2)))
    jax.block_until_ready(f(*_inputs([30], [0.1, 0.25, 2.0], 2)))
    assert len(traces) == 1


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown config key 'Mm'.*Did you mean M"):
        build(apple.AppleConfig, {"Mm": 3})
    with pytest.raises(ConfigError, match="M must be >= 1"):
        build(apple.AppleConfig, {"M": [0, 5]})
    with pytest.raises(ConfigError, match="not a sweep axis"):
        build(apple.AppleConfig, {"T": [10, 20]})
    with pytest.raises(ConfigError, match="expected an integer"):
        build(apple.AppleConfig, parse_overrides(["seeds=two"]))
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build(apple.AppleConfig, {"lr": -1})
    cfg = build(apple.AppleConfig, parse_overrides(["M=[5,10,20]", "c=0.5"]))
    assert cfg.M == (5, 10, 20) and cfg.c == (0.5,)


def test_figure3_trends_small():
    """Fig. 3 at 4 seeds: forgetting rises with M and falls with c; success moves the other way."""
    cfg = build(apple.AppleConfig, {"M": [5, 20, 40], "c": [0.5], "seeds": 4})
    rows = apple.summarize(cfg, apple.run(cfg, log=lambda *_: None))
    by = {m: [r for r in rows if r["M"] == m] for m in cfg.M}
    forg = [np.mean([r["forgetting"] for r in by[m]]) for m in cfg.M]
    succ = [np.mean([r["final_success"] for r in by[m]]) for m in cfg.M]
    reach = [np.mean([r["reach_phase2_early"] for r in by[m]]) for m in cfg.M]
    assert forg[0] < 0.05 and forg[0] < forg[1] < forg[2] and forg[2] > 0.8, forg
    assert succ[0] > succ[2] + 0.1, succ
    assert reach[0] > reach[1] > reach[2], reach

    cfg = build(apple.AppleConfig, {"M": [30], "c": [0.1, 0.5, 2.0], "seeds": 4})
    rows = apple.summarize(cfg, apple.run(cfg, log=lambda *_: None))
    by = {c: [r for r in rows if r["c"] == c] for c in cfg.c}
    forg = [np.mean([r["forgetting"] for r in by[c]]) for c in cfg.c]
    succ = [np.mean([r["final_success"] for r in by[c]]) for c in cfg.c]
    assert forg[0] > 0.9 and forg[0] >= forg[1] > forg[2] and forg[2] < 0.05, forg
    assert succ[0] < succ[1] <= succ[2] + 1e-6 and succ[2] > 0.95, succ
    # Small c: the pre-trained policy leans on the shared constant w1 (|w1| >> |w2|).
    w_pre = np.array([[r["w1_pre"], r["w2_pre"]] for r in by[0.1]])
    assert np.all(np.abs(w_pre[:, 0]) > 5 * np.abs(w_pre[:, 1]))
