"""PPO losses with the knowledge-retention terms (KS, BC, EWC, L2) fused into the same loss.

GAE (Schulman et al. 2016), the clipped surrogate and value loss (Schulman et al. 2017, eqs. 7-9),
RND's predictor loss (Burda et al. 2018), and the retention terms of Wolczyk et al. 2024 (I
sections 2-4). Core math is unbatched (per time series or per sample) and vmapped at the call
site; the loss builder returns a pure function giving ``(loss, metrics)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.ppo.anchors import PPOAnchors
from fpc_jax.agents.ppo.networks import PPOConfig, entropy, log_prob, make_ppo_networks
from fpc_jax.retention.penalties import (
    RetentionCoefs,
    categorical_policy_kl,
    quadratic_penalty,
)

if TYPE_CHECKING:
    from fpc_jax.agents.ppo.update import PPOHyper

PyTree = Any
Metrics = dict[str, jax.Array]

ADV_EPS = 1e-8


@struct.dataclass
class PPOBatch:
    """On-policy samples (leading batch axis, or none for one sample).

    ``action`` int32 index; ``logp`` log pi_old(action); ``value`` (num_values,) V_old at ``obs``;
    ``returns`` (num_values,) GAE value targets; ``advantage`` the combined advantage
    ``ext_coef * A_ext + int_coef * A_int``; ``rnd_obs`` the normalised next observation the RND
    predictor is trained on (unused without RND).
    """

    obs: jax.Array
    stage: jax.Array
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    returns: jax.Array
    advantage: jax.Array
    rnd_obs: jax.Array


@struct.dataclass
class BCSample:
    """A minibatch of stored BC states and the teacher's outputs on them."""

    obs: jax.Array
    stage: jax.Array
    logits: jax.Array
    value: jax.Array


def sample_bc(anchors: PPOAnchors, key: jax.Array, batch_size: int) -> BCSample:
    """Uniformly sample ``batch_size`` of the N stored BC states (with replacement)."""
    idx = jax.random.randint(key, (batch_size,), 0, anchors.bc_obs.shape[0])
    return BCSample(
        obs=anchors.bc_obs[idx],
        stage=anchors.bc_stage[idx],
        logits=anchors.bc_logits[idx],
        value=anchors.bc_value[idx],
    )


def gae(
    reward_t: jax.Array,
    value_t: jax.Array,
    next_value_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    gamma: jax.Array,
    lam: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over one time series (Schulman et al. 2016, eq. 16).

    ``next_value_t`` is V of the TRUE next observation of step t (before any auto-reset).
    ``delta_t = r_t + gamma (1 - terminated_t) next_value_t - value_t`` and
    ``A_t = delta_t + gamma lam (1 - terminated_t)(1 - truncated_t) A_{t+1}``: a termination
    neither bootstraps nor continues the trace; a truncation bootstraps from the final
    observation's value and cuts the trace. Returns ``(advantages_t, returns_t = A_t + value_t)``.
    """
    chex.assert_rank([reward_t, gamma, lam], [1, 0, 0])
    chex.assert_equal_shape([reward_t, value_t, next_value_t, terminated_t, truncated_t])
    terminated = terminated_t.astype(jnp.float32)
    cont = (1.0 - terminated) * (1.0 - truncated_t.astype(jnp.float32))
    delta_t = reward_t + gamma * (1.0 - terminated) * next_value_t - value_t

    def body(adv_tp1: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, c = x
        adv = delta + gamma * lam * c * adv_tp1
        return adv, adv

    _, adv_t = jax.lax.scan(body, jnp.zeros((), jnp.float32), (delta_t, cont), reverse=True)
    return adv_t, adv_t + value_t


def clipped_surrogate(
    logp: jax.Array, old_logp: jax.Array, advantage: jax.Array, clip_eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-sample PPO policy loss ``-min(rho A, clip(rho, 1-eps, 1+eps) A)``, ``rho =
    pi/pi_old`` (Schulman et al. 2017, eq. 7), and whether the clipped branch was taken."""
    chex.assert_rank([logp, old_logp, advantage, clip_eps], 0)
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantage
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    return -jnp.minimum(unclipped, clipped), (clipped < unclipped).astype(jnp.float32)


def value_loss(
    value: jax.Array,
    old_value: jax.Array,
    target: jax.Array,
    clip_eps: jax.Array,
    clip: bool,
) -> jax.Array:
    """Per-sample value loss ``0.5 (V - R)^2``; with ``clip`` the PPO2 form
    ``0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)`` (baselines ppo2)."""
    chex.assert_rank([value, old_value, target, clip_eps], 0)
    unclipped = (value - target) ** 2
    if not clip:
        return 0.5 * unclipped
    v_clip = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, (v_clip - target) ** 2)


def approx_kl(logp: jax.Array, old_logp: jax.Array) -> jax.Array:
    """Per-sample estimator ``(rho - 1) - log rho`` of KL(pi_old || pi) (Schulman 2020, "k3")."""
    log_ratio = logp - old_logp
    return jnp.expm1(log_ratio) - log_ratio


def ks_weight(coefs: RetentionCoefs, update_index: jax.Array) -> jax.Array:
    """Effective kickstarting weight after ``update_index`` optimizer updates:
    ``ks_actor * ks_decay ** update_index`` (``RetentionCoefs.decayed``; I section 4, NetHack:
    0.5 x 0.99998 per update)."""
    return coefs.decayed(jnp.asarray(update_index, jnp.float32)).ks_actor


def normalize(x: jax.Array) -> jax.Array:
    """``(x - mean) / (std + 1e-8)`` over the minibatch (per-minibatch advantage normalisation)."""
    return (x - jnp.mean(x)) / (jnp.std(x) + ADV_EPS)


def rnd_error(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """RND prediction error ``mean_d (f_hat(s') - f(s'))^2`` over the embedding (last) axis: the
    raw intrinsic reward and, averaged over states, the predictor loss (Burda et al. 2018, 2.2)."""
    chex.assert_equal_shape([prediction, target])
    return jnp.mean((prediction - target) ** 2, axis=-1)


def make_ppo_loss(
    config: PPOConfig, *, normalize_advantages: bool = True, clip_value_loss: bool = True
) -> Callable[..., tuple[jax.Array, Metrics]]:
    """``loss(params, rnd_target, batch, bc, anchors, coefs, hyper, update_index)`` for
    ``config``, with ``params = {"actor", "critic", "rnd"}`` (``"rnd"``: the RND predictor, ``{}``
    without RND).

    ``loss = pg - ent_coef H + vf_coef L_V + ks_w KS + bc_actor BC + ewc_actor EWC_pi
    + l2_actor L2_pi + ewc_critic EWC_V + l2_critic L2_V + bc_critic BC_V + rnd_coef L_RND``,
    every term logged raw under its own name.
    """
    nets = make_ppo_networks(config)
    actor_b = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))
    critic_b = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))
    rnd_b = jax.vmap(nets.rnd_apply, in_axes=(None, 0))
    kl_b = jax.vmap(categorical_policy_kl, in_axes=(0, 0, None))

    def loss(
        params: dict[str, PyTree],
        rnd_target: PyTree,
        batch: PPOBatch,
        bc: BCSample,
        anchors: PPOAnchors,
        coefs: RetentionCoefs,
        hyper: PPOHyper,
        update_index: jax.Array,
    ) -> tuple[jax.Array, Metrics]:
        actor, critic = params["actor"], params["critic"]
        b = batch.obs.shape[0]
        chex.assert_shape([batch.value, batch.returns], (b, config.num_values))
        chex.assert_shape([batch.action, batch.logp, batch.advantage], (b,))

        logits = actor_b(actor, batch.obs, batch.stage)
        chex.assert_shape(logits, (b, config.num_actions))
        logp = jax.vmap(log_prob)(logits, batch.action)
        adv = normalize(batch.advantage) if normalize_advantages else batch.advantage
        pg_b, clipped_b = jax.vmap(clipped_surrogate, in_axes=(0, 0, 0, None))(
            logp, batch.logp, adv, hyper.clip_eps
        )
        pg = jnp.mean(pg_b)
        ent = jnp.mean(jax.vmap(entropy)(logits))

        values = critic_b(critic, batch.obs, batch.stage)
        v_loss_b = jax.vmap(
            jax.vmap(lambda v, o, r, e: value_loss(v, o, r, e, clip_value_loss), (0, 0, 0, None)),
            in_axes=(0, 0, 0, None),
        )(values, batch.value, batch.returns, hyper.clip_eps)
        v_loss = jnp.mean(jnp.sum(v_loss_b, axis=-1))

        teacher = jax.lax.stop_gradient(actor_b(anchors.actor_star, batch.obs, batch.stage))
        ks = jnp.mean(kl_b(logits, teacher, jnp.zeros((), jnp.float32)))
        ks_w = ks_weight(coefs, update_index)
        bc_logits = actor_b(actor, bc.obs, bc.stage)
        bc_term = jnp.mean(kl_b(bc_logits, bc.logits, coefs.bc_kl_direction))
        ewc_actor = quadratic_penalty(actor, anchors.actor_star, anchors.actor_fisher)
        l2_actor = quadratic_penalty(actor, anchors.actor_star)
        ewc_critic = quadratic_penalty(critic, anchors.critic_star, anchors.critic_fisher)
        l2_critic = quadratic_penalty(critic, anchors.critic_star)
        bc_v = critic_b(critic, bc.obs, bc.stage)[:, 0]
        bc_critic = jnp.mean((bc_v - bc.value) ** 2)

        if config.rnd:
            target = jax.lax.stop_gradient(rnd_b(rnd_target, batch.rnd_obs))
            pred = rnd_b(params["rnd"], batch.rnd_obs)
            rnd_loss = jnp.mean(rnd_error(pred, target))
        else:
            rnd_loss = jnp.zeros((), jnp.float32)

        total = (
            pg
            - hyper.ent_coef * ent
            + hyper.vf_coef * v_loss
            + ks_w * ks
            + coefs.bc_actor * bc_term
            + coefs.ewc_actor * ewc_actor
            + coefs.l2_actor * l2_actor
            + coefs.ewc_critic * ewc_critic
            + coefs.l2_critic * l2_critic
            + coefs.bc_critic * bc_critic
            + hyper.rnd_coef * rnd_loss
        )
        sg = jax.lax.stop_gradient
        metrics = {
            "ppo/loss": total,
            "ppo/pg_loss": pg,
            "ppo/value_loss": v_loss,
            "ppo/entropy": ent,
            "ppo/clip_frac": jnp.mean(clipped_b),
            "ppo/approx_kl": sg(jnp.mean(approx_kl(logp, batch.logp))),
            "ppo/value_mean": sg(jnp.mean(values[:, 0])),
            "ppo/return_mean": jnp.mean(batch.returns[:, 0]),
            "actor/ks": ks,
            "actor/ks_weight": ks_w,
            "actor/bc": bc_term,
            "actor/ewc": ewc_actor,
            "actor/l2": l2_actor,
            "critic/ewc": ewc_critic,
            "critic/l2": l2_critic,
            "critic/bc": bc_critic,
            "rnd/loss": rnd_loss,
        }
        return total, metrics

    return loss
