"""PPO losses by hand (GAE, clipped surrogate, value loss) and the fused retention terms.

The categorical KL and Fisher checks test the shared fpc_jax.retention functions as PPO uses them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.agents.ppo.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.ppo.losses import (
    PPOBatch,
    clipped_surrogate,
    gae,
    ks_weight,
    make_ppo_loss,
    sample_bc,
    value_loss,
)
from fpc_jax.agents.ppo.networks import PPOConfig, make_policy, make_ppo_networks
from fpc_jax.agents.ppo.update import PPOHyper, init_train_state
from fpc_jax.retention.fisher import categorical_fisher
from fpc_jax.retention.penalties import (
    RetentionCoefs,
    categorical_kl,
    categorical_policy_kl,
    quadratic_penalty,
)

CONFIG = PPOConfig(obs_dim=3, num_actions=4, num_heads=2, hidden_sizes=(8,), head_mode="per_stage")
HYPER = PPOHyper.create()
RETENTION = (
    "l2_actor",
    "ewc_actor",
    "bc_actor",
    "ks_actor",
    "l2_critic",
    "ewc_critic",
    "bc_critic",
)


def _batch(seed: int, b: int = 8, num_values: int = 1) -> PPOBatch:
    rng = np.random.default_rng(seed)
    return PPOBatch(
        obs=jnp.asarray(rng.normal(size=(b, CONFIG.obs_dim)), jnp.float32),
        stage=jnp.asarray(rng.integers(0, CONFIG.num_heads, b), jnp.int32),
        action=jnp.asarray(rng.integers(0, CONFIG.num_actions, b), jnp.int32),
        logp=jnp.asarray(np.log(rng.uniform(0.1, 0.5, b)), jnp.float32),
        value=jnp.asarray(rng.normal(size=(b, num_values)), jnp.float32),
        returns=jnp.asarray(rng.normal(size=(b, num_values)), jnp.float32),
        advantage=jnp.asarray(rng.normal(size=b), jnp.float32),
        rnd_obs=jnp.zeros((b, CONFIG.obs_dim), jnp.float32),
    )


@functools.cache
def _setup():
    """A student, a teacher that differs from it, real anchors and placeholder anchors."""
    state = init_train_state(CONFIG, HYPER, jax.random.PRNGKey(0))
    t_actor, t_critic = make_ppo_networks(CONFIG).init(jax.random.PRNGKey(7))
    t_actor["head"] = jax.tree_util.tree_map(lambda x: 200.0 * x, t_actor["head"])  # peaked pi*
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(16, CONFIG.obs_dim)).astype(np.float32)
    stage = rng.integers(0, CONFIG.num_heads, 16).astype(np.int32)
    anchors = make_anchors(CONFIG, t_actor, t_critic, obs, stage, obs, stage)
    placeholder = placeholder_anchors(CONFIG, state.actor_params, state.critic_params, 16)
    return state, anchors, placeholder


@functools.cache
def _jitted_loss(normalize_advantages: bool = True, clip_value_loss: bool = True):
    loss = make_ppo_loss(
        CONFIG, normalize_advantages=normalize_advantages, clip_value_loss=clip_value_loss
    )
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _loss_and_grads(state, anchors, coefs, batch, update_index=0, **kw):
    bc = sample_bc(anchors, jax.random.PRNGKey(3), batch.obs.shape[0])
    return _jitted_loss(**kw)(
        state.trainable(),
        state.rnd_target,
        batch,
        bc,
        anchors,
        coefs,
        HYPER,
        jnp.int32(update_index),
    )


def test_gae_hand_computed_with_termination_and_truncation():
    # step 0 ordinary, step 1 truncated (bootstrap from the final obs' value 4.0, trace cut),
    # step 2 terminated (no bootstrap). gamma 0.9, lambda 0.8.
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([0.5, 1.0, 1.5])
    v_next = jnp.array([1.0, 4.0, 2.0])
    term = jnp.array([False, False, True])
    trunc = jnp.array([False, True, False])
    adv, ret = gae(r, v, v_next, term, trunc, jnp.float32(0.9), jnp.float32(0.8))
    d2 = 3.0 - 1.5
    d1 = 2.0 + 0.9 * 4.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = np.array([d0 + 0.9 * 0.8 * d1, d1, d2])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, expected + np.asarray(v), rtol=1e-6)
    # no ends and lambda 1: A_t = discounted return to the bootstrap minus V_t
    v_next = jnp.array([1.0, 1.5, 2.0])  # V of obs_{t+1}, bootstrap 2.0 at the end
    adv1, _ = gae(r, v, v_next, jnp.zeros(3, bool), jnp.zeros(3, bool), 0.9, 1.0)
    g0 = 1.0 + 0.9 * 2.0 + 0.81 * 3.0 + 0.729 * 2.0
    np.testing.assert_allclose(adv1[0], g0 - 0.5, rtol=1e-6)


def test_clipped_surrogate_and_value_loss_by_hand():
    eps = jnp.float32(0.2)
    # rho = 1.5, A = 2: min(3, 1.2 * 2) = 2.4 (clipped); rho = 0.5, A = -1: min(-0.5, -0.8)
    loss1, c1 = clipped_surrogate(jnp.log(1.5), jnp.float32(0.0), jnp.float32(2.0), eps)
    loss2, c2 = clipped_surrogate(jnp.log(0.5), jnp.float32(0.0), jnp.float32(-1.0), eps)
    loss3, c3 = clipped_surrogate(jnp.log(1.1), jnp.float32(0.0), jnp.float32(1.0), eps)
    np.testing.assert_allclose([loss1, loss2, loss3], [-2.4, 0.8, -1.1], rtol=1e-6)
    assert (float(c1), float(c2), float(c3)) == (1.0, 1.0, 0.0)
    v, old, target = jnp.float32(2.0), jnp.float32(1.0), jnp.float32(3.0)
    np.testing.assert_allclose(value_loss(v, old, target, eps, False), 0.5)
    np.testing.assert_allclose(value_loss(v, old, target, eps, True), 0.5 * (1.2 - 3.0) ** 2)


def test_full_loss_pg_term_by_hand_on_two_samples():
    """Actor with zero kernels: logits = the head bias for every state, so rho is known.
    Advantages [2, -1] normalise to [1, -1] (mean 0.5, std 1.5)."""
    state, _, placeholder = _setup()
    logits = jnp.array([0.0, 1.0, 2.0, -1.0])
    actor = jax.tree_util.tree_map(jnp.zeros_like, state.actor_params)
    actor["head"]["bias"] = jnp.tile(logits, CONFIG.num_heads)
    state = state.replace(actor_params=actor)
    logp = jax.nn.log_softmax(logits)
    action = jnp.array([2, 3])
    old = logp[action] - jnp.log(jnp.array([1.5, 0.5]))  # rho = 1.5 and 0.5
    batch = _batch(0, b=2).replace(
        action=action, logp=old, advantage=jnp.array([2.0, -1.0], jnp.float32)
    )
    (_, m), _ = _loss_and_grads(state, placeholder, RetentionCoefs.preset("ft"), batch)
    # rho 1.5, A 1: -min(1.5, 1.2) = -1.2; rho 0.5, A -1: -min(-0.5, -0.8) = 0.8
    np.testing.assert_allclose(m["ppo/pg_loss"], (-1.2 + 0.8) / 2, rtol=1e-5)
    np.testing.assert_allclose(m["ppo/clip_frac"], 1.0)
    kl = np.mean([0.5 - np.log(1.5), -0.5 - np.log(0.5)])
    np.testing.assert_allclose(m["ppo/approx_kl"], kl, rtol=1e-5)
    h = -np.sum(np.exp(logp) * logp)
    np.testing.assert_allclose(m["ppo/entropy"], h, rtol=1e-5)


def test_categorical_kl_matches_monte_carlo_both_directions():
    p = jnp.array([0.3, -1.0, 2.0, 0.5])
    q = jnp.array([1.0, 0.2, -0.5, 0.0])
    n = 200_000
    for student, teacher, direction in ((q, p, 0.0), (q, p, 1.0)):
        closed = categorical_policy_kl(student, teacher, jnp.float32(direction))
        first, second = (teacher, student) if direction == 0.0 else (student, teacher)
        a = jax.random.categorical(jax.random.PRNGKey(int(direction)), first, shape=(n,))
        log_ratio = jax.nn.log_softmax(first)[a] - jax.nn.log_softmax(second)[a]
        se = float(jnp.std(log_ratio)) / np.sqrt(n)
        assert abs(float(jnp.mean(log_ratio)) - float(closed)) < 5 * se
        np.testing.assert_allclose(closed, categorical_kl(first, second), rtol=1e-6)
    assert float(categorical_policy_kl(p, p, jnp.float32(0.0))) == pytest.approx(0.0, abs=1e-6)


def test_categorical_fisher_matches_monte_carlo_score_squares():
    state, _, _ = _setup()
    nets = make_ppo_networks(CONFIG)
    obs = jnp.asarray(np.random.default_rng(2).normal(size=(3, CONFIG.obs_dim)), jnp.float32)
    stage = jnp.array([0, 1, 1], jnp.int32)
    exact = categorical_fisher(nets.actor_apply, state.actor_params, (obs, stage))
    m = 20_000

    def score_sq(o, s, a):
        g = jax.grad(lambda p: jax.nn.log_softmax(nets.actor_apply(p, o, s))[a])(state.actor_params)
        return jax.tree_util.tree_map(jnp.square, g)

    samples = []
    for i in range(3):
        logits = nets.actor_apply(state.actor_params, obs[i], stage[i])
        acts = jax.random.categorical(jax.random.PRNGKey(10 + i), logits, shape=(m,))
        samples.append(jax.vmap(score_sq, in_axes=(None, None, 0))(obs[i], stage[i], acts))
    per_state_mean = [jax.tree_util.tree_map(lambda x: jnp.mean(x, 0), s) for s in samples]
    per_state_var = [jax.tree_util.tree_map(lambda x: jnp.var(x, 0) / m, s) for s in samples]
    mc = jax.tree_util.tree_map(lambda *x: sum(x) / 3, *per_state_mean)
    se = jax.tree_util.tree_map(lambda *x: jnp.sqrt(sum(x)) / 3, *per_state_var)
    for path, f in jax.tree_util.tree_leaves_with_path(exact["trunk"]):
        est = dict(jax.tree_util.tree_leaves_with_path(mc["trunk"]))[path]
        err = dict(jax.tree_util.tree_leaves_with_path(se["trunk"]))[path]
        # the exact Fisher is clipped at 1e-5 below
        assert np.all(np.abs(np.asarray(f) - np.maximum(est, 1e-5)) <= 5 * err + 2e-5), path
    assert all(float(jnp.max(x)) == 0.0 for x in jax.tree_util.tree_leaves(exact["head"]))


def test_ks_weight_decays_per_update_and_metric_shows_it():
    """The decay exponent is the update count: the train test checks it over real updates."""
    state, anchors, _ = _setup()
    coefs = RetentionCoefs.preset("ks", family="ppo")  # 0.5, decay rate 2e-5
    for u in (0, 1, 1000):  # float32: 1 - 2e-5 is exact to 3e-8, so ~3e-5 after 1000 powers
        np.testing.assert_allclose(ks_weight(coefs, jnp.int32(u)), 0.5 * 0.99998**u, rtol=1e-4)
    batch = _batch(4)
    fast = RetentionCoefs.create(ks_actor=2.0, ks_decay_rate=0.5)
    ft = RetentionCoefs.preset("ft")
    (l_ks, m_ks), _ = _loss_and_grads(state, anchors, fast, batch, update_index=3)
    (l_ft, _), _ = _loss_and_grads(state, anchors, ft, batch, update_index=3)
    np.testing.assert_allclose(m_ks["actor/ks_weight"], 2.0 * 0.5**3)
    np.testing.assert_allclose(l_ks - l_ft, 0.25 * m_ks["actor/ks"], rtol=1e-4, atol=1e-7)
    assert float(m_ks["actor/ks"]) > 1e-4
    # KS is KL(pi* || pi) on the online minibatch's own states and heads
    actor_b = jax.vmap(make_ppo_networks(CONFIG).actor_apply, in_axes=(None, 0, 0))
    student = actor_b(state.actor_params, batch.obs, batch.stage)
    teacher = actor_b(anchors.actor_star, batch.obs, batch.stage)
    by_hand = jnp.mean(jax.vmap(categorical_kl)(teacher, student))
    np.testing.assert_allclose(m_ks["actor/ks"], by_hand, rtol=1e-5)
    assert abs(float(jnp.mean(jax.vmap(categorical_kl)(student, teacher)) - by_hand)) > 1e-4


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_zero_coefficients_give_the_ft_loss_and_each_term_moves_its_gradient():
    state, anchors, placeholder = _setup()
    batch = _batch(5)
    ft = RetentionCoefs.preset("ft")
    (l_ft, m_ft), g_ft = _loss_and_grads(state, anchors, ft, batch)
    (l_ph, _), g_ph = _loss_and_grads(state, placeholder, ft, batch)
    assert float(l_ft) == float(l_ph) and _max_diff(g_ft, g_ph) == 0.0
    # weights 0 with the other leaves (decay, direction) moved: still exactly FT
    off = RetentionCoefs.create(ks_decay_rate=0.5, bc_kl_direction=1.0)
    (l_off, _), g_off = _loss_and_grads(state, anchors, off, batch, update_index=7)
    assert float(l_off) == float(l_ft) and _max_diff(g_off, g_ft) == 0.0
    ppo_only = m_ft["ppo/pg_loss"] - HYPER.ent_coef * m_ft["ppo/entropy"]
    np.testing.assert_allclose(l_ft, ppo_only + HYPER.vf_coef * m_ft["ppo/value_loss"], rtol=1e-6)
    for name in RETENTION:
        value = 1e4 if name.startswith("ewc") else 1.0
        (l1, m1), g1 = _loss_and_grads(
            state, anchors, RetentionCoefs.create(**{name: value}), batch
        )
        net, other = ("actor", "critic") if name.endswith("actor") else ("critic", "actor")
        assert _max_diff(g1[net], g_ft[net]) > 1e-6, name
        assert _max_diff(g1[other], g_ft[other]) == 0.0, name
        method = name.split("_")[0]
        np.testing.assert_allclose(l1 - l_ft, value * m1[f"{net}/{method}"], rtol=1e-3, atol=1e-6)


def test_bc_direction_flip_changes_the_bc_term():
    state, anchors, _ = _setup()
    batch = _batch(6)
    fwd = RetentionCoefs.create(bc_actor=1.0, bc_kl_direction=0.0)
    rev = RetentionCoefs.create(bc_actor=1.0, bc_kl_direction=1.0)
    (_, m0), g0 = _loss_and_grads(state, anchors, fwd, batch)
    (_, m1), g1 = _loss_and_grads(state, anchors, rev, batch)
    bc = sample_bc(anchors, jax.random.PRNGKey(3), batch.obs.shape[0])
    nets = make_ppo_networks(CONFIG)
    student = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(state.actor_params, bc.obs, bc.stage)
    forward = jnp.mean(jax.vmap(categorical_kl)(bc.logits, student))
    reverse = jnp.mean(jax.vmap(categorical_kl)(student, bc.logits))
    np.testing.assert_allclose([m0["actor/bc"], m1["actor/bc"]], [forward, reverse], rtol=1e-5)
    assert abs(float(forward - reverse)) > 1e-3 * float(forward)
    assert _max_diff(g0["actor"], g1["actor"]) > 1e-7


def test_heads_trunk_and_policy_shapes():
    state, _, _ = _setup()
    nets = make_ppo_networks(CONFIG)
    assert set(state.actor_params) == {"trunk", "head"} == set(state.critic_params)
    obs = jnp.ones(CONFIG.obs_dim)
    l0 = nets.actor_apply(state.actor_params, obs, jnp.int32(0))
    l1 = nets.actor_apply(state.actor_params, obs, jnp.int32(1))
    assert l0.shape == (CONFIG.num_actions,) and not np.allclose(l0, l1)
    shared = PPOConfig(obs_dim=3, num_actions=4, num_heads=2, hidden_sizes=(8,))
    s_state = init_train_state(shared, HYPER, jax.random.PRNGKey(0))
    s_nets = make_ppo_networks(shared)
    np.testing.assert_array_equal(
        s_nets.actor_apply(s_state.actor_params, obs, jnp.int32(0)),
        s_nets.actor_apply(s_state.actor_params, obs, jnp.int32(1)),
    )
    # a shared output layer serves every stage, so it sits in the protected trunk
    assert set(s_state.actor_params) == {"trunk"} == set(s_state.critic_params)
    assert s_state.actor_params["trunk"]["out"]["bias"].shape == (4,)
    moved = jax.tree_util.tree_map(lambda x: x, s_state.actor_params)
    moved["trunk"]["out"] = jax.tree_util.tree_map(lambda x: x + 1.0, moved["trunk"]["out"])
    assert float(quadratic_penalty(moved, s_state.actor_params)) == pytest.approx(4 * 8 + 4)
    per_stage = jax.tree_util.tree_map(lambda x: x, state.actor_params)
    per_stage["head"] = jax.tree_util.tree_map(lambda x: x + 1.0, per_stage["head"])
    assert float(quadratic_penalty(per_stage, state.actor_params)) == 0.0
    assert float(jnp.max(jnp.abs(l0))) < 0.1  # policy output gain 0.01: near-uniform at init
    sample, greedy = make_policy(CONFIG)
    a = sample(state.actor_params, obs, jnp.int32(0), jax.random.PRNGKey(0))
    assert a.shape == (4,) and float(a.sum()) == 1.0
    assert int(jnp.argmax(greedy(state.actor_params, obs, jnp.int32(1)))) == int(jnp.argmax(l1))
    with pytest.raises(ValueError, match="head_mode"):
        PPOConfig(obs_dim=3, num_actions=4, head_mode="task_id")
    with pytest.raises(ValueError, match="clip_eps"):
        PPOHyper.create(clip_eps=0.0)
