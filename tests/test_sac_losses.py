"""SAC losses: tanh-Gaussian log-prob, critic target, per-stage temperature, retention terms."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.agents.sac.anchors import placeholder_anchors
from fpc_jax.agents.sac.losses import Batch, critic_target, make_losses, sample_bc
from fpc_jax.agents.sac.networks import (
    SACConfig,
    default_target_entropy,
    make_sac_networks,
    sample_tanh_gaussian,
    tanh_gaussian_log_prob,
)
from fpc_jax.retention.penalties import RetentionCoefs

CONFIG = SACConfig(obs_dim=3, act_dim=2, num_heads=3, hidden_sizes=(8, 8), batch_size=4)


def test_target_entropy_default():
    assert default_target_entropy(4) == pytest.approx(-4.0, abs=0.01)


def test_tanh_gaussian_log_prob_matches_distrax():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(16, 3)).astype(np.float32)
    log_std = rng.uniform(-1.5, 0.5, size=(16, 3)).astype(np.float32)
    pre_tanh = rng.uniform(-2.0, 2.0, size=(16, 3)).astype(np.float32)
    ours = jax.vmap(tanh_gaussian_log_prob)(mean, log_std, pre_tanh)
    dist = distrax.Transformed(
        distrax.MultivariateNormalDiag(mean, np.exp(log_std)), distrax.Block(distrax.Tanh(), 1)
    )
    np.testing.assert_allclose(ours, dist.log_prob(np.tanh(pre_tanh)), rtol=1e-4, atol=1e-4)


def test_sample_tanh_gaussian_is_reparameterized():
    mean, log_std = jnp.array([0.2, -0.5]), jnp.array([-0.3, 0.1])
    key = jax.random.PRNGKey(3)
    action, logp = sample_tanh_gaussian(key, mean, log_std)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, (2,))
    np.testing.assert_allclose(action, jnp.tanh(u), rtol=1e-6)
    np.testing.assert_allclose(logp, tanh_gaussian_log_prob(mean, log_std, u), rtol=1e-6)
    grad = jax.grad(lambda m: sample_tanh_gaussian(key, m, log_std)[0].sum())(mean)
    np.testing.assert_allclose(grad, 1.0 - jnp.tanh(u) ** 2, rtol=1e-5)


def test_critic_target_hand_values():
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    # y = r + gamma * mask * (min(Q'1, Q'2) - alpha * logp) = 1 + 0.9 * (2 - 0.5 * -1.5) = 3.475
    y = critic_target(f(1.0), f(1.0), f([2.0, 3.0]), f(-1.5), f(0.5), f(0.9))
    assert float(y) == pytest.approx(3.475)
    y_terminal = critic_target(f(1.0), f(0.0), f([2.0, 3.0]), f(-1.5), f(0.5), f(0.9))
    assert float(y_terminal) == pytest.approx(1.0)


@functools.cache
def _setup():
    nets = make_sac_networks(CONFIG)
    actor_params, critic_params = nets.init(jax.random.PRNGKey(0), CONFIG.obs_dim, CONFIG.act_dim)
    rng = np.random.default_rng(1)
    b = CONFIG.batch_size
    batch = Batch(
        obs=rng.normal(size=(b, 3)).astype(np.float32),
        action=np.tanh(rng.normal(size=(b, 2))).astype(np.float32),
        reward=rng.normal(size=b).astype(np.float32),
        next_obs=rng.normal(size=(b, 3)).astype(np.float32),
        discount_mask=np.array([1.0, 0.0, 1.0, 1.0], np.float32),
        stage=np.array([0, 1, 2, 1], np.int32),
    )
    return nets, actor_params, critic_params, batch


def test_critic_loss_matches_per_sample_reference():
    nets, actor_params, critic_params, batch = _setup()
    target_params = jax.tree_util.tree_map(lambda x: x + 0.05, critic_params)
    log_alpha = jnp.array([0.3, -1.0, 0.7])
    anchors = placeholder_anchors(CONFIG, actor_params, critic_params, 6)
    bc = sample_bc(anchors, jax.random.PRNGKey(9), CONFIG.batch_size)
    critic_loss, _, _ = make_losses(CONFIG)
    key, gamma = jax.random.PRNGKey(5), jnp.float32(0.9)
    coefs = RetentionCoefs.preset("ft")
    loss, metrics = jax.jit(critic_loss)(
        critic_params, actor_params, target_params, log_alpha, batch, bc, anchors, coefs, gamma, key
    )
    keys = jax.random.split(key, CONFIG.batch_size)

    @jax.jit
    def q_and_soft_value(k, obs, action, next_obs, s):
        mean, log_std = nets.actor_apply(actor_params, next_obs, s)  # same head for s'
        a_next, logp_next = sample_tanh_gaussian(k, mean, log_std)
        q_next = nets.critic_apply(target_params, next_obs, a_next, s)
        q = nets.critic_apply(critic_params, obs, action, s)
        return q, jnp.min(q_next) - jnp.exp(log_alpha[s]) * logp_next

    td = np.zeros(2)
    for i in range(CONFIG.batch_size):
        q, soft_v = q_and_soft_value(
            keys[i], batch.obs[i], batch.action[i], batch.next_obs[i], batch.stage[i]
        )
        y = batch.reward[i] + 0.9 * batch.discount_mask[i] * float(soft_v)
        td += 0.5 * (np.asarray(q) - y) ** 2 / CONFIG.batch_size
    assert float(metrics["critic/td"]) == pytest.approx(td.sum(), rel=1e-4)
    assert float(loss) == pytest.approx(td.sum(), rel=1e-4)


def test_actor_and_alpha_losses_hand_values():
    nets, actor_params, critic_params, batch = _setup()
    log_alpha = jnp.array([0.3, -1.0, 0.7])
    anchors = placeholder_anchors(CONFIG, actor_params, critic_params, 6)
    bc = sample_bc(anchors, jax.random.PRNGKey(9), CONFIG.batch_size)
    _, actor_loss, alpha_loss = make_losses(CONFIG)
    key = jax.random.PRNGKey(6)
    _, m = jax.jit(actor_loss)(
        actor_params, critic_params, log_alpha, batch, bc, anchors, RetentionCoefs.preset("ft"), key
    )
    keys = jax.random.split(key, CONFIG.batch_size)

    @jax.jit
    def sample_objective(k, obs, s):
        a, logp = sample_tanh_gaussian(k, *nets.actor_apply(actor_params, obs, s))
        return jnp.exp(log_alpha[s]) * logp - jnp.min(nets.critic_apply(critic_params, obs, a, s))

    ref = 0.0
    for i in range(CONFIG.batch_size):
        ref += float(sample_objective(keys[i], batch.obs[i], batch.stage[i])) / CONFIG.batch_size
    assert float(m["actor/sac"]) == pytest.approx(ref, rel=1e-4)

    # -mean(log_alpha[stage] * (logp + H)) with H = -2: terms -0.5, -1, 0.5 -> loss 1/3.
    la, logp, stage = jnp.array([0.5, -1.0, 9.0]), jnp.array([1.0, 3.0, 3.0]), jnp.array([0, 1, 0])
    (loss, _), grad = jax.value_and_grad(alpha_loss, has_aux=True)(la, logp, stage, -2.0)
    assert float(loss) == pytest.approx(1.0 / 3.0)
    np.testing.assert_allclose(grad, [0.0, -1.0 / 3.0, 0.0], atol=1e-6)


def test_retention_terms_enter_the_losses_with_their_coefficients():
    _, actor_params, critic_params, batch = _setup()
    star_a = jax.tree_util.tree_map(lambda x: x + 0.1, actor_params)
    star_c = jax.tree_util.tree_map(lambda x: x - 0.1, critic_params)
    anchors = placeholder_anchors(CONFIG, star_a, star_c, 6)
    anchors = anchors.replace(
        actor_fisher=jax.tree_util.tree_map(lambda x: jnp.full_like(x, 2.0), actor_params),
        critic_fisher=jax.tree_util.tree_map(lambda x: jnp.full_like(x, 3.0), critic_params),
        bc_mean=jnp.full_like(anchors.bc_mean, 0.4),
        bc_q=jnp.full_like(anchors.bc_q, 1.5),
    )
    bc = sample_bc(anchors, jax.random.PRNGKey(9), CONFIG.batch_size)
    critic_loss, actor_loss, _ = make_losses(CONFIG)
    log_alpha, key = jnp.zeros(3), jax.random.PRNGKey(7)
    coefs = RetentionCoefs.create(
        l2_actor=2.0,
        ewc_actor=3.0,
        bc_actor=5.0,
        ks_actor=7.0,
        l2_critic=1.5,
        ewc_critic=0.5,
        bc_critic=0.25,
    )
    args = (log_alpha, batch, bc, anchors)
    loss, m = jax.jit(actor_loss)(actor_params, critic_params, *args, coefs, key)
    for name in ("actor/l2", "actor/ewc", "actor/bc", "actor/ks"):
        assert float(m[name]) > 0.0, name
    expected = m["actor/sac"] + 2 * m["actor/l2"] + 3 * m["actor/ewc"] + 5 * m["actor/bc"]
    assert float(loss) == pytest.approx(float(expected + 7 * m["actor/ks"]), rel=1e-5)
    c_loss, cm = jax.jit(critic_loss)(
        critic_params, actor_params, critic_params, *args, coefs, jnp.float32(0.99), key
    )
    expected = cm["critic/td"] + 1.5 * cm["critic/l2"] + 0.5 * cm["critic/ewc"]
    assert float(c_loss) == pytest.approx(float(expected + 0.25 * cm["critic/bc"]), rel=1e-5)
    # EWC with a constant Fisher of 2 is twice the trunk L2 (the heads are excluded from both).
    assert float(m["actor/ewc"]) == pytest.approx(2.0 * float(m["actor/l2"]), rel=1e-5)


def _constant_actor(actor_params, mean, log_std):
    """Actor params whose every head outputs ``(mean, log_std)`` on any state (zero head kernel)."""
    head = actor_params["head"]
    bias = jnp.tile(jnp.concatenate([jnp.asarray(mean), jnp.asarray(log_std)]), CONFIG.num_heads)
    return {**actor_params, "head": {"kernel": jnp.zeros_like(head["kernel"]), "bias": bias}}


def _gaussian_kl_by_hand(mean_p, std_p, mean_q, std_q):
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)), summed over dims."""
    return float(
        np.sum(np.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5)
    )


# student (the actor being trained) and teacher (pi*): different stds, so the two KLs differ
STUDENT_MEAN, STUDENT_STD = np.array([0.2, -0.1]), np.array([0.5, 1.0])
TEACHER_MEAN, TEACHER_STD = np.array([0.4, 0.3]), np.array([1.0, 2.0])
KL_TEACHER_STUDENT = _gaussian_kl_by_hand(TEACHER_MEAN, TEACHER_STD, STUDENT_MEAN, STUDENT_STD)
KL_STUDENT_TEACHER = _gaussian_kl_by_hand(STUDENT_MEAN, STUDENT_STD, TEACHER_MEAN, TEACHER_STD)


def _with_teacher_bc_data(anchors):
    """``anchors`` whose stored BC outputs are the teacher's Gaussian on every state."""
    return anchors.replace(
        bc_mean=jnp.broadcast_to(jnp.asarray(TEACHER_MEAN, jnp.float32), anchors.bc_mean.shape),
        bc_log_std=jnp.broadcast_to(
            jnp.asarray(np.log(TEACHER_STD), jnp.float32), anchors.bc_log_std.shape
        ),
    )


def _actor_metrics(anchors, actor_params, critic_params, coefs):
    _, _, _, batch = _setup()
    _, actor_loss, _ = make_losses(CONFIG)
    bc = sample_bc(anchors, jax.random.PRNGKey(9), CONFIG.batch_size)
    _, m = jax.jit(actor_loss)(
        actor_params, critic_params, jnp.zeros(3), batch, bc, anchors, coefs, jax.random.PRNGKey(0)
    )
    return m


@pytest.mark.parametrize(
    ("direction", "expected"),
    [(0.0, KL_TEACHER_STUDENT), (1.0, KL_STUDENT_TEACHER)],
    ids=["kl_teacher_student", "kl_student_teacher"],
)
def test_actor_bc_term_takes_the_kl_direction_of_its_coefficient(direction, expected):
    """BC in ``actor_loss``: 0 -> KL(teacher || student), 1 -> KL(student || teacher), with the
    student the actor on the stored BC states and the teacher pi*'s stored outputs there."""
    assert abs(KL_TEACHER_STUDENT - KL_STUDENT_TEACHER) > 0.5
    _, actor_params, critic_params, _ = _setup()
    student = _constant_actor(actor_params, STUDENT_MEAN, np.log(STUDENT_STD))
    anchors = placeholder_anchors(CONFIG, student, critic_params, 6)
    anchors = _with_teacher_bc_data(anchors)
    coefs = RetentionCoefs.create(bc_actor=1.0, bc_kl_direction=direction)
    m = _actor_metrics(anchors, student, critic_params, coefs)
    assert float(m["actor/bc"]) == pytest.approx(expected, rel=1e-5)


def test_actor_ks_term_is_kl_teacher_to_student():
    """KS in ``actor_loss``: KL(pi*(.|s) || pi(.|s)) on the fine-tuning batch's states, whatever
    ``bc_kl_direction`` says (it is BC's)."""
    _, actor_params, critic_params, _ = _setup()
    student = _constant_actor(actor_params, STUDENT_MEAN, np.log(STUDENT_STD))
    teacher = _constant_actor(actor_params, TEACHER_MEAN, np.log(TEACHER_STD))
    anchors = placeholder_anchors(CONFIG, teacher, critic_params, 6)
    for direction in (0.0, 1.0):
        coefs = RetentionCoefs.create(ks_actor=1.0, bc_kl_direction=direction)
        m = _actor_metrics(anchors, student, critic_params, coefs)
        assert float(m["actor/ks"]) == pytest.approx(KL_TEACHER_STUDENT, rel=1e-5), direction


def test_squashed_bc_and_ks_compare_tanh_means():
    """``bc_squashed`` / ``ks_squashed`` = 1: the KL of Gaussians on tanh(mean) with the pre-tanh
    stds (the CW-lineage variant); 0 (default) the pre-tanh Gaussians of I section 2."""
    want = _gaussian_kl_by_hand(
        np.tanh(TEACHER_MEAN), TEACHER_STD, np.tanh(STUDENT_MEAN), STUDENT_STD
    )
    assert abs(want - KL_TEACHER_STUDENT) > 1e-3
    _, actor_params, critic_params, _ = _setup()
    student = _constant_actor(actor_params, STUDENT_MEAN, np.log(STUDENT_STD))
    teacher = _constant_actor(actor_params, TEACHER_MEAN, np.log(TEACHER_STD))
    anchors = placeholder_anchors(CONFIG, teacher, critic_params, 6)
    anchors = _with_teacher_bc_data(anchors)
    both = dict(bc_actor=1.0, ks_actor=1.0)
    m = _actor_metrics(anchors, student, critic_params, RetentionCoefs.create(**both))
    assert float(m["actor/bc"]) == pytest.approx(KL_TEACHER_STUDENT, rel=1e-5)
    assert float(m["actor/ks"]) == pytest.approx(KL_TEACHER_STUDENT, rel=1e-5)
    coefs = RetentionCoefs.create(**both, bc_squashed=1.0)
    m = _actor_metrics(anchors, student, critic_params, coefs)
    assert float(m["actor/bc"]) == pytest.approx(want, rel=1e-5)
    assert float(m["actor/ks"]) == pytest.approx(KL_TEACHER_STUDENT, rel=1e-5)  # KS has its own
    coefs = RetentionCoefs.create(**both, ks_squashed=1.0)
    m = _actor_metrics(anchors, student, critic_params, coefs)
    assert float(m["actor/ks"]) == pytest.approx(want, rel=1e-5)
    assert float(m["actor/bc"]) == pytest.approx(KL_TEACHER_STUDENT, rel=1e-5)
    with pytest.raises(ValueError, match="0 \\(off\\) or 1"):
        RetentionCoefs.create(bc_squashed=0.5)
