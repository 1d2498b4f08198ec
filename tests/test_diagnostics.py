"""FPC diagnostics (fpc_jax/retention/diagnostics.py, agents/*/diagnostics.py): distances and
coverage by hand, both agents' diagnostics at theta* and after known perturbations. The curves
and figure of a fine-tuning run: tests/test_sac_study.py and tests/test_ppo_study.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.ppo.anchors import make_anchors as ppo_anchors
from fpc_jax.agents.ppo.diagnostics import make_diagnose as ppo_diagnose
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.agents.sac.anchors import make_anchors as sac_anchors
from fpc_jax.agents.sac.diagnostics import make_diagnose as sac_diagnose
from fpc_jax.agents.sac.networks import SACConfig, make_sac_networks
from fpc_jax.retention.diagnostics import DIAGNOSTICS, param_distances, stage_coverage


class _Run:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_param_distances_by_hand():
    star = {
        "trunk": {"w": jnp.array([3.0, 4.0])},
        "head": {"kernel": jnp.array([[1.0, 1.0, 2.0, 2.0, 0.0, 0.0]])},
    }
    params = {
        "trunk": {"w": jnp.array([3.0, 7.0])},
        "head": {"kernel": jnp.array([[1.0, 1.0, 2.0, 4.0, 5.0, 5.0]])},
    }
    # 3 heads of 2 outputs; Far = head 1 only: row (2, 2) -> (2, 4)
    trunk, head = param_distances(params, star, jnp.array([0.0, 1.0, 0.0]), 3)
    np.testing.assert_allclose(trunk, 3.0 / 5.0, rtol=1e-6)
    np.testing.assert_allclose(head, 2.0 / np.sqrt(8.0), rtol=1e-6)
    # head 2 (star row 0) moved a lot but is not Far; head 0 did not move
    _, head0 = param_distances(params, star, jnp.array([1.0, 0.0, 0.0]), 3)
    assert float(head0) == 0.0
    _, none = param_distances({"trunk": star["trunk"]}, {"trunk": star["trunk"]}, jnp.ones(3), 3)
    assert np.isnan(none)  # no per-stage head


def test_stage_coverage():
    cov = stage_coverage(jnp.array([[0, 0], [2, 3]]), 4)
    np.testing.assert_allclose(cov, [0.5, 0.0, 0.25, 0.25])


def _sac_setup():
    config = SACConfig(obs_dim=3, act_dim=2, num_heads=4, hidden_sizes=(8, 8))
    actor, critic = make_sac_networks(config).init(jax.random.key(0), 3, 2)
    obs = jax.random.normal(jax.random.key(1), (50, 3))
    stage = jnp.array([2, 3] * 25, jnp.int32)
    anchors = sac_anchors(config, actor, critic, obs, stage, obs, stage)
    return config, actor, critic, anchors


def test_sac_diagnostics_at_theta_star_and_after_perturbations():
    config, actor, critic, anchors = _sac_setup()
    diagnose = sac_diagnose(config)
    far = jnp.array([2, 3])
    at_star = diagnose(_Run(actor_params=actor, critic_params=critic), anchors, far)
    assert set(at_star) == set(DIAGNOSTICS)
    for k in (
        "far_kl",
        "far_value_gap",
        "actor_trunk_dist",
        "actor_far_head_dist",
        "critic_trunk_dist",
        "critic_far_head_dist",
    ):
        assert abs(float(at_star[k])) < 1e-5, k
    np.testing.assert_allclose(at_star["far_logp"], at_star["far_logp_star"], rtol=1e-6)
    # Move the Close heads (rows 0, 1) only: nothing on the Far states changes.
    kernel = actor["head"]["kernel"]  # (8, 4 heads x 2 x act_dim)
    close = kernel.at[:, :8].add(1.0)
    moved = {**actor, "head": {**actor["head"], "kernel": close}}
    d = diagnose(_Run(actor_params=moved, critic_params=critic), anchors, far)
    assert abs(float(d["far_kl"])) < 1e-5 and float(d["actor_far_head_dist"]) == 0.0
    # Move the trunk: the Far policy drifts, KL > 0 and pi*'s actions become less likely.
    trunk = jax.tree.map(lambda x: x + 0.3, actor["trunk"])
    moved = {**actor, "trunk": trunk}
    d = diagnose(_Run(actor_params=moved, critic_params=critic), anchors, far)
    assert float(d["far_kl"]) > 0.01
    assert float(d["far_logp"]) < float(d["far_logp_star"])
    assert float(d["actor_trunk_dist"]) > 0.0


def test_ppo_diagnostics_kl_and_exact_log_likelihood():
    config = PPOConfig(
        obs_dim=5, num_actions=4, num_heads=2, hidden_sizes=(8,), head_mode="per_stage"
    )
    nets = make_ppo_networks(config)
    actor, critic = nets.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (40, 5))
    stage = jnp.ones(40, jnp.int32)
    anchors = ppo_anchors(config, actor, critic, obs, stage, obs, stage)
    diagnose = ppo_diagnose(config)
    far = jnp.array([1])
    d0 = diagnose(_Run(actor_params=actor, critic_params=critic), anchors, far)
    assert abs(float(d0["far_kl"])) < 1e-6
    ent = -jnp.sum(jax.nn.softmax(anchors.bc_logits) * jax.nn.log_softmax(anchors.bc_logits), -1)
    np.testing.assert_allclose(d0["far_logp"], -jnp.mean(ent), rtol=1e-5)
    leaves, tree = jax.tree.flatten(actor)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    other = jax.tree.unflatten(
        tree, [x + jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    d1 = diagnose(_Run(actor_params=other, critic_params=critic), anchors, far)
    # KL(pi* || pi) = cross-entropy - entropy, i.e. far_logp_star - far_logp
    np.testing.assert_allclose(d1["far_kl"], d1["far_logp_star"] - d1["far_logp"], rtol=1e-4)
    assert float(d1["far_kl"]) > 0 and float(d1["actor_far_head_dist"]) > 0
