"""SAC's FPC diagnostics on pi*'s stored Far states (``fpc_jax.retention.diagnostics``)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fpc_jax.agents.sac.anchors import Anchors
from fpc_jax.agents.sac.networks import (
    SACConfig,
    deterministic_action,
    make_sac_networks,
    tanh_gaussian_log_prob,
)
from fpc_jax.retention.diagnostics import DIAG_STATES, distance_diagnostics
from fpc_jax.retention.penalties import gaussian_kl


def make_diagnose(config: SACConfig) -> Callable[..., dict[str, jax.Array]]:
    """``diagnose(train_state, anchors, stage_pool) -> {name: scalar}`` (names: ``DIAGNOSTICS``)
    of ONE run's train state (vmap it over runs); ``stage_pool`` holds the Far stage indices."""
    nets = make_sac_networks(config)
    actor_b = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))
    critic_b = jax.vmap(nets.critic_apply, in_axes=(None, 0, 0, 0))

    def diagnose(ts, anchors: Anchors, stage_pool: jax.Array) -> dict[str, jax.Array]:
        n = min(DIAG_STATES, anchors.num_bc_states)
        obs, stage = anchors.bc_obs[:n], anchors.bc_stage[:n]
        mean_star, log_std_star = anchors.bc_mean[:n], anchors.bc_log_std[:n]
        mean, log_std = actor_b(ts.actor_params, obs, stage)
        kl = jax.vmap(gaussian_kl)(mean_star, log_std_star, mean, log_std)
        # pi*'s sampled actions, one fixed draw per state, scored through their pre-tanh values
        eps = jax.random.normal(jax.random.key(0), mean_star.shape)
        u_star = mean_star + jnp.exp(log_std_star) * eps
        logp = jax.vmap(tanh_gaussian_log_prob)(mean, log_std, u_star)
        logp_star = jax.vmap(tanh_gaussian_log_prob)(mean_star, log_std_star, u_star)
        q = jnp.min(critic_b(ts.critic_params, obs, deterministic_action(mean_star), stage), -1)
        dist = distance_diagnostics(
            ts.actor_params,
            ts.critic_params,
            anchors.actor_star,
            anchors.critic_star,
            stage_pool,
            config.num_heads,
        )
        return {
            "far_kl": jnp.mean(kl),
            "far_logp": jnp.mean(logp),
            "far_logp_star": jnp.mean(logp_star),
            "far_value": jnp.mean(q),
            "far_value_gap": jnp.mean(q - anchors.bc_q[:n]),
            **dist,
        }

    return diagnose
