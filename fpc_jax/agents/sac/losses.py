"""SAC losses with per-stage heads and entropy temperatures, plus fused retention terms.

Builders return pure functions giving ``(loss, metrics)`` (brax ``sac/losses.py`` layout); the
SAC terms follow Continual World's SAC (Wolczyk et al. 2021), the retention terms I section 2-4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.sac.anchors import Anchors
from fpc_jax.agents.sac.networks import (
    SACConfig,
    deterministic_action,
    make_sac_networks,
    sample_tanh_gaussian,
)
from fpc_jax.retention.penalties import (
    RetentionCoefs,
    critic_bc_penalty,
    ewc_penalty,
    l2_penalty,
    policy_kl,
)

PyTree = Any
Metrics = dict[str, jax.Array]


@struct.dataclass
class Batch:
    """A batch of transitions (or one transition, without the leading axis).

    ``discount_mask`` = 1 - stage_terminal (docs/sequence_semantics.md): 0 stops bootstrapping.
    ``stage`` (int32) selects the head for both ``obs`` and ``next_obs``.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    discount_mask: jax.Array
    stage: jax.Array


@struct.dataclass
class BCSample:
    """A minibatch of stored BC states and the teacher's outputs on them."""

    obs: jax.Array
    stage: jax.Array
    mean: jax.Array
    log_std: jax.Array
    q: jax.Array


def sample_bc(anchors: Anchors, key: jax.Array, batch_size: int) -> BCSample:
    """Uniformly sample ``batch_size`` of the N stored BC states (with replacement)."""
    idx = jax.random.randint(key, (batch_size,), 0, anchors.bc_obs.shape[0])
    return BCSample(
        obs=anchors.bc_obs[idx],
        stage=anchors.bc_stage[idx],
        mean=anchors.bc_mean[idx],
        log_std=anchors.bc_log_std[idx],
        q=anchors.bc_q[idx],
    )


def squash_mean(mean: jax.Array, flag: jax.Array) -> jax.Array:
    """The mean a BC / KS KL compares: pre-tanh ``mean`` (flag 0; I section 2, the default) or
    ``tanh(mean)`` (flag 1; the squashed action mean CW-lineage BC code distils, with the
    pre-tanh std). A per-run array leaf, so both variants share one compiled update."""
    return jnp.where(flag > 0.0, jnp.tanh(mean), mean)


def critic_target(
    reward: jax.Array,
    discount_mask: jax.Array,
    next_q_target: jax.Array,
    next_logp: jax.Array,
    alpha: jax.Array,
    gamma: jax.Array,
) -> jax.Array:
    """Soft Bellman target of one transition (SAC eq. 3, twin-Q form):
    ``r + gamma * discount_mask * (min_j Q'_j(s', a') - alpha * log pi(a'|s'))``."""
    chex.assert_shape(next_q_target, (2,))
    chex.assert_rank([reward, discount_mask, next_logp, alpha, gamma], 0)
    soft_value = jnp.min(next_q_target) - alpha * next_logp
    return reward + gamma * discount_mask * soft_value


def make_losses(
    config: SACConfig,
) -> tuple[Callable[..., tuple[jax.Array, Metrics]], ...]:
    """``(critic_loss, actor_loss, alpha_loss)`` pure functions for ``config``."""
    nets = make_sac_networks(config)
    actor_b = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))
    critic_b = jax.vmap(nets.critic_apply, in_axes=(None, 0, 0, 0))

    def critic_loss(
        critic_params: PyTree,
        actor_params: PyTree,
        target_critic_params: PyTree,
        log_alpha: jax.Array,
        batch: Batch,
        bc: BCSample,
        anchors: Anchors,
        coefs: RetentionCoefs,
        gamma: jax.Array,
        key: jax.Array,
    ) -> tuple[jax.Array, Metrics]:
        """Twin-Q TD loss ``sum_j 0.5 mean (Q_j - y)^2`` + L2/EWC/BC critic terms."""
        b = batch.obs.shape[0]
        next_mean, next_log_std = actor_b(actor_params, batch.next_obs, batch.stage)
        next_action, next_logp = jax.vmap(sample_tanh_gaussian)(
            jax.random.split(key, b), next_mean, next_log_std
        )
        next_q = critic_b(target_critic_params, batch.next_obs, next_action, batch.stage)
        alpha = jnp.exp(log_alpha[batch.stage])
        target = jax.vmap(critic_target, in_axes=(0, 0, 0, 0, 0, None))(
            batch.reward, batch.discount_mask, next_q, next_logp, alpha, gamma
        )
        target = jax.lax.stop_gradient(target)
        q = critic_b(critic_params, batch.obs, batch.action, batch.stage)
        chex.assert_shape(q, (b, 2))
        td = jnp.sum(0.5 * jnp.mean((q - target[:, None]) ** 2, axis=0))

        l2 = l2_penalty(critic_params, anchors.critic_star)
        ewc = ewc_penalty(critic_params, anchors.critic_star, anchors.critic_fisher)
        q_bc = critic_b(critic_params, bc.obs, deterministic_action(bc.mean), bc.stage)
        bc_term = jnp.mean(jax.vmap(critic_bc_penalty)(q_bc, bc.q))
        loss = td + coefs.l2_critic * l2 + coefs.ewc_critic * ewc + coefs.bc_critic * bc_term
        metrics = {
            "critic/loss": loss,
            "critic/td": td,
            "critic/l2": l2,
            "critic/ewc": ewc,
            "critic/bc": bc_term,
            "critic/q_mean": jnp.mean(q),
            "critic/target_mean": jnp.mean(target),
        }
        return loss, metrics

    def actor_loss(
        actor_params: PyTree,
        critic_params: PyTree,
        log_alpha: jax.Array,
        batch: Batch,
        bc: BCSample,
        anchors: Anchors,
        coefs: RetentionCoefs,
        key: jax.Array,
    ) -> tuple[jax.Array, Metrics]:
        """``mean(alpha[stage] log pi(a|s) - min_j Q_j(s, a))`` + L2/EWC/BC/KS actor terms.

        ``metrics["actor/logp"]`` is the per-sample log-prob (B,) the alpha loss reuses.
        """
        b = batch.obs.shape[0]
        mean, log_std = actor_b(actor_params, batch.obs, batch.stage)
        action, logp = jax.vmap(sample_tanh_gaussian)(jax.random.split(key, b), mean, log_std)
        q = critic_b(critic_params, batch.obs, action, batch.stage)
        alpha = jax.lax.stop_gradient(jnp.exp(log_alpha[batch.stage]))
        sac = jnp.mean(alpha * logp - jnp.min(q, axis=-1))

        l2 = l2_penalty(actor_params, anchors.actor_star)
        ewc = ewc_penalty(actor_params, anchors.actor_star, anchors.actor_fisher)
        kl_b = jax.vmap(policy_kl, in_axes=(0, 0, 0, 0, None))
        bc_mean, bc_log_std = actor_b(actor_params, bc.obs, bc.stage)
        bs = lambda m: squash_mean(m, coefs.bc_squashed)  # noqa: E731
        bc_term = jnp.mean(
            kl_b(bs(bc_mean), bc_log_std, bs(bc.mean), bc.log_std, coefs.bc_kl_direction)
        )
        t_mean, t_log_std = jax.lax.stop_gradient(
            actor_b(anchors.actor_star, batch.obs, batch.stage)
        )
        ks_ = lambda m: squash_mean(m, coefs.ks_squashed)  # noqa: E731
        ks = jnp.mean(kl_b(ks_(mean), log_std, ks_(t_mean), t_log_std, jnp.zeros((), jnp.float32)))
        loss = (
            sac
            + coefs.l2_actor * l2
            + coefs.ewc_actor * ewc
            + coefs.bc_actor * bc_term
            + coefs.ks_actor * ks
        )
        metrics = {
            "actor/loss": loss,
            "actor/sac": sac,
            "actor/l2": l2,
            "actor/ewc": ewc,
            "actor/bc": bc_term,
            "actor/ks": ks,
            "actor/entropy": -jnp.mean(logp),
            "actor/log_std_mean": jnp.mean(log_std),
            "actor/logp": logp,
        }
        return loss, metrics

    def alpha_loss(
        log_alpha: jax.Array, logp: jax.Array, stage: jax.Array, target_entropy: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """Per-stage temperature loss ``-mean(log_alpha[stage] * sg(logp + target_entropy))``
        (SAC eq. 18; Continual World's per-task log-alpha)."""
        chex.assert_shape(log_alpha, (config.num_heads,))
        chex.assert_equal_shape([logp, stage])
        la = log_alpha[stage]
        loss = -jnp.mean(la * jax.lax.stop_gradient(logp + target_entropy))
        return loss, {"alpha/loss": loss, "alpha/mean": jnp.mean(jnp.exp(la))}

    return critic_loss, actor_loss, alpha_loss
