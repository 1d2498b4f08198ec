"""Retention penalties, EWC Fisher and anchors against closed forms, hand values and loops."""

import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.agents.sac.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.sac.networks import SACConfig, make_sac_networks
from fpc_jax.retention.fisher import actor_fisher, critic_fisher
from fpc_jax.retention.penalties import (
    RetentionCoefs,
    ewc_penalty,
    gaussian_kl,
    l2_penalty,
    policy_kl,
)

MEAN_P = jnp.array([0.3, -1.0, 0.5])
LOG_STD_P = jnp.array([-0.2, 0.4, 0.0])
MEAN_Q = jnp.array([-0.1, 0.2, 0.5])
LOG_STD_Q = jnp.array([0.1, -0.3, 0.2])


def _mc_kl(mean_p, log_std_p, mean_q, log_std_q, n=400_000):
    p = distrax.MultivariateNormalDiag(mean_p, jnp.exp(log_std_p))
    q = distrax.MultivariateNormalDiag(mean_q, jnp.exp(log_std_q))
    x = p.sample(seed=jax.random.PRNGKey(0), sample_shape=(n,))
    return float(jnp.mean(p.log_prob(x) - q.log_prob(x)))


def test_gaussian_kl_matches_monte_carlo_both_directions():
    forward = float(gaussian_kl(MEAN_P, LOG_STD_P, MEAN_Q, LOG_STD_Q))
    reverse = float(gaussian_kl(MEAN_Q, LOG_STD_Q, MEAN_P, LOG_STD_P))
    assert forward != pytest.approx(reverse, rel=0.05)  # the example is asymmetric
    assert forward == pytest.approx(_mc_kl(MEAN_P, LOG_STD_P, MEAN_Q, LOG_STD_Q), rel=0.02)
    assert reverse == pytest.approx(_mc_kl(MEAN_Q, LOG_STD_Q, MEAN_P, LOG_STD_P), rel=0.02)


def test_gaussian_kl_zero_on_equal_and_hand_value_1d():
    assert float(gaussian_kl(MEAN_P, LOG_STD_P, MEAN_P, LOG_STD_P)) == pytest.approx(0.0, abs=1e-6)
    # KL(N(0,1) || N(1, 2^2)) = ln 2 + (1 + 1) / 8 - 1/2
    kl = gaussian_kl(jnp.zeros(1), jnp.zeros(1), jnp.ones(1), jnp.full(1, math.log(2.0)))
    assert float(kl) == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-6)


def test_policy_kl_direction_leaf():
    student, teacher = (MEAN_P, LOG_STD_P), (MEAN_Q, LOG_STD_Q)
    kl0 = policy_kl(*student, *teacher, jnp.array(0.0))
    kl1 = policy_kl(*student, *teacher, jnp.array(1.0))
    np.testing.assert_allclose(kl0, gaussian_kl(*teacher, *student), rtol=1e-6)
    np.testing.assert_allclose(kl1, gaussian_kl(*student, *teacher), rtol=1e-6)


def _toy_params(head_value: float):
    return {
        "trunk": {"dense_0": {"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([0.5])}},
        "head": {"kernel": jnp.array([[head_value]]), "bias": jnp.array([0.0])},
    }


def test_l2_hand_value_and_heads_excluded():
    star = jax.tree_util.tree_map(jnp.zeros_like, _toy_params(0.0))
    assert float(l2_penalty(_toy_params(0.0), star)) == pytest.approx(1.0 + 4.0 + 0.25)
    assert float(l2_penalty(_toy_params(100.0), star)) == pytest.approx(5.25)


def test_ewc_hand_value_and_heads_excluded():
    star = jax.tree_util.tree_map(jnp.zeros_like, _toy_params(0.0))
    fisher = {
        "trunk": {"dense_0": {"kernel": jnp.array([[2.0, 0.5]]), "bias": jnp.array([4.0])}},
        "head": {"kernel": jnp.array([[7.0]]), "bias": jnp.array([7.0])},
    }
    expected = 2.0 * 1.0 + 0.5 * 4.0 + 4.0 * 0.25
    assert float(ewc_penalty(_toy_params(3.0), star, fisher)) == pytest.approx(expected)


def test_fisher_hand_worked_linear_policy():
    """hidden (1,), identity activation, act_dim 1: h = w o + b, mu = a h + c, sigma = exp(d h + e).

    dmu/dw = a o, dsigma/dw = sigma d o, dmu/db = a, dsigma/db = sigma d, so
    F_w = mean_o (a^2 + 2 sigma^2 d^2) o^2 / (sigma^2 + 1e-6), F_b likewise without o^2.
    """
    config = SACConfig(
        obs_dim=1, act_dim=1, hidden_sizes=(1,), first_activation="identity", batch_size=1
    )
    nets = make_sac_networks(config)
    w, b, a, c, d, e = 0.7, -0.2, 1.5, 0.1, -0.4, 0.3
    params = {
        "trunk": {"dense_0": {"kernel": jnp.array([[w]]), "bias": jnp.array([b])}},
        "head": {"kernel": jnp.array([[a, d]]), "bias": jnp.array([c, e])},
    }
    obs = jnp.array([[0.5], [-1.0], [2.0]])
    stage = jnp.zeros(3, jnp.int32)
    o = np.array([0.5, -1.0, 2.0])
    h = w * o + b
    sigma = np.exp(d * h + e)
    for mean, slope in (("pre_tanh", 1.0), ("squashed", 1.0 - np.tanh(a * h + c) ** 2)):
        # squashed (CW): d tanh(mu) = (1 - tanh(mu)^2) dmu
        fisher = actor_fisher(nets.actor_apply, params, obs, stage, chunk_size=2, mean=mean)
        per = ((slope * a) ** 2 + 2 * sigma**2 * d**2) / (sigma**2 + 1e-6)
        kernel = fisher["trunk"]["dense_0"]["kernel"]
        np.testing.assert_allclose(kernel, [[np.mean(per * o**2)]], 1e-5, err_msg=mean)
        np.testing.assert_allclose(fisher["trunk"]["dense_0"]["bias"], [np.mean(per)], rtol=1e-5)
        np.testing.assert_array_equal(fisher["head"]["kernel"], 0.0)


def test_actor_fisher_clips_each_state_before_the_mean():
    """CW clips every state's Fisher at 1e-5 before averaging: with a state o = 0 (no gradient on
    the kernel), the kernel's Fisher is mean(max(f(s), 1e-5)), not max(mean f(s), 1e-5)."""
    config = SACConfig(
        obs_dim=1, act_dim=1, hidden_sizes=(1,), first_activation="identity", batch_size=1
    )
    nets = make_sac_networks(config)
    params = {
        "trunk": {"dense_0": {"kernel": jnp.array([[1.0]]), "bias": jnp.array([0.0])}},
        "head": {"kernel": jnp.array([[1e-2, 0.0]]), "bias": jnp.array([0.0, 0.0])},
    }
    obs = jnp.array([[0.0], [1.0]])
    fisher = actor_fisher(nets.actor_apply, params, obs, jnp.zeros(2, jnp.int32), mean="pre_tanh")
    per_state = np.array([0.0, (1e-2) ** 2 / (1.0 + 1e-6)])  # a^2 o^2 / (sigma^2 + 1e-6), sigma 1
    want = np.mean(np.maximum(per_state, 1e-5))
    assert want != pytest.approx(max(np.mean(per_state), 1e-5))
    np.testing.assert_allclose(fisher["trunk"]["dense_0"]["kernel"], [[want]], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown Fisher mean"):
        actor_fisher(nets.actor_apply, params, obs, jnp.zeros(2, jnp.int32), mean="tanh")


SMALL = SACConfig(obs_dim=3, act_dim=2, num_heads=3, hidden_sizes=(8, 8), batch_size=4)


@functools.cache
def _small_params():
    return make_sac_networks(SMALL).init(jax.random.PRNGKey(1), SMALL.obs_dim, SMALL.act_dim)


def _states(n=6):
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(n, SMALL.obs_dim)).astype(np.float32)
    stage = rng.integers(0, SMALL.num_heads, size=n).astype(np.int32)
    action = np.tanh(rng.normal(size=(n, SMALL.act_dim))).astype(np.float32)
    return obs, stage, action


def test_actor_fisher_matches_loop_reference():
    nets = make_sac_networks(SMALL)
    actor_params, _ = _small_params()
    obs, stage, _ = _states()
    fisher = jax.jit(lambda p: actor_fisher(nets.actor_apply, p, obs, stage, chunk_size=3))(
        actor_params
    )  # default: CW's, on tanh(mean), clipped per state
    g_mu = jax.jit(jax.grad(lambda p, o, s, j: jnp.tanh(nets.actor_apply(p, o, s)[0][j])))
    g_sd = jax.jit(jax.grad(lambda p, o, s, j: jnp.exp(nets.actor_apply(p, o, s)[1][j])))
    total = jax.tree_util.tree_map(np.zeros_like, jax.device_get(actor_params))
    _, log_stds = jax.jit(jax.vmap(nets.actor_apply, in_axes=(None, 0, 0)))(
        actor_params, obs, stage
    )
    for i in range(obs.shape[0]):
        sigma = np.exp(np.asarray(log_stds[i]))
        state = jax.tree_util.tree_map(np.zeros_like, total)
        for j in range(SMALL.act_dim):
            gm = jax.device_get(g_mu(actor_params, obs[i], stage[i], j))
            gs = jax.device_get(g_sd(actor_params, obs[i], stage[i], j))
            inv = 1.0 / (sigma[j] ** 2 + 1e-6)
            state = jax.tree_util.tree_map(
                lambda t, m, s, inv=inv: t + (m**2 + 2 * s**2) * inv, state, gm, gs
            )
        total = jax.tree_util.tree_map(lambda t, f: t + np.maximum(f, 1e-5), total, state)
    expected = jax.tree_util.tree_map(lambda t: t / obs.shape[0], total)
    np.testing.assert_allclose(
        fisher["trunk"]["dense_1"]["kernel"], expected["trunk"]["dense_1"]["kernel"], rtol=1e-4
    )
    for path, leaf in jax.tree_util.tree_leaves_with_path(fisher):
        ref = expected
        for k in path:
            ref = ref[k.key]
        if path[0].key == "head":
            np.testing.assert_array_equal(leaf, 0.0)
        else:
            np.testing.assert_allclose(leaf, ref, rtol=1e-4, err_msg=str(path))
            assert float(jnp.min(leaf)) >= 1e-5


def test_critic_fisher_matches_loop_reference():
    nets = make_sac_networks(SMALL)
    _, critic_params = _small_params()
    obs, stage, action = _states()
    fisher = jax.jit(
        lambda p: critic_fisher(nets.critic_apply, p, obs, action, stage, chunk_size=4)
    )(critic_params)
    g = jax.jit(jax.grad(lambda p, o, a, s, j: nets.critic_apply(p, o, a, s)[j]))
    total = jax.tree_util.tree_map(np.zeros_like, jax.device_get(critic_params))
    for i in range(obs.shape[0]):
        for j in range(2):
            grads = jax.device_get(g(critic_params, obs[i], action[i], stage[i], j))
            total = jax.tree_util.tree_map(lambda t, x: t + x**2, total, grads)
    kernel = fisher["trunk"]["dense_0"]["kernel"]
    ref = total["trunk"]["dense_0"]["kernel"] / obs.shape[0]  # not clipped, as CW's critic
    np.testing.assert_allclose(kernel, ref, rtol=1e-4)
    assert not np.allclose(kernel[0], kernel[1])  # each critic keeps its own Fisher
    np.testing.assert_array_equal(fisher["head"]["kernel"], 0.0)


def test_make_anchors_teacher_outputs():
    nets = make_sac_networks(SMALL)
    actor_params, critic_params = _small_params()
    obs, stage, _ = _states()
    anchors = make_anchors(SMALL, actor_params, critic_params, obs, stage, obs, stage)
    mean, log_std = nets.actor_apply(actor_params, obs[3], stage[3])
    np.testing.assert_allclose(anchors.bc_mean[3], mean, rtol=1e-5)
    np.testing.assert_allclose(anchors.bc_log_std[3], log_std, rtol=1e-5)
    q = nets.critic_apply(critic_params, obs[3], jnp.tanh(mean), stage[3])
    np.testing.assert_allclose(anchors.bc_q[3], jnp.min(q), rtol=1e-5)
    holder = placeholder_anchors(SMALL, actor_params, critic_params, obs.shape[0])
    shapes = lambda t: jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    assert shapes(holder) == shapes(anchors)


def test_coefs_presets_and_validation():
    assert float(RetentionCoefs.preset("ewc").ewc_actor) == 100.0
    assert float(RetentionCoefs.preset("l2").l2_actor) == 1000.0
    assert float(RetentionCoefs.preset("bc").bc_actor) == 1.0
    assert float(RetentionCoefs.preset("bc").bc_kl_direction) == 0.0
    ft = RetentionCoefs.preset("ft")
    assert all(float(x) == 0.0 for x in jax.tree_util.tree_leaves(ft))
    assert float(RetentionCoefs.preset("bc", bc_critic=0.5).bc_critic) == 0.5
    with pytest.raises(ValueError, match="ewc_actor"):
        RetentionCoefs.create(ewc_actor=-1.0)
    with pytest.raises(ValueError, match="bc_actor"):
        RetentionCoefs.create(bc_actor=float("nan"))
    with pytest.raises(ValueError, match="unknown"):
        RetentionCoefs.create(ewc=1.0)
    with pytest.raises(ValueError, match="unknown retention method"):
        RetentionCoefs.preset("packnet")
    with pytest.raises(ValueError, match="bc_kl_direction"):
        RetentionCoefs.create(bc_kl_direction=0.5)
