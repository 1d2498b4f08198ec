"""PPO's FPC diagnostics on pi*'s stored Far states (``fpc_jax.retention.diagnostics``)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fpc_jax.agents.ppo.anchors import PPOAnchors
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.retention.diagnostics import DIAG_STATES, distance_diagnostics
from fpc_jax.retention.penalties import categorical_kl


def make_diagnose(config: PPOConfig) -> Callable[..., dict[str, jax.Array]]:
    """``diagnose(train_state, anchors, stage_pool) -> {name: scalar}`` (names: ``DIAGNOSTICS``)
    of ONE run's train state (vmap it over runs); ``stage_pool`` holds the Far stage indices.
    The log-likelihood of pi*'s actions is exact here: ``sum_a pi*(a|s) log pi(a|s)``."""
    nets = make_ppo_networks(config)
    actor_b = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))
    critic_b = jax.vmap(nets.critic_apply, in_axes=(None, 0, 0))

    def diagnose(ts, anchors: PPOAnchors, stage_pool: jax.Array) -> dict[str, jax.Array]:
        n = min(DIAG_STATES, anchors.num_bc_states)
        obs, stage, logits_star = anchors.bc_obs[:n], anchors.bc_stage[:n], anchors.bc_logits[:n]
        logits = actor_b(ts.actor_params, obs, stage)
        p_star = jax.nn.softmax(logits_star)
        cross = lambda lg: jnp.sum(p_star * jax.nn.log_softmax(lg), -1)  # noqa: E731
        value = critic_b(ts.critic_params, obs, stage)
        dist = distance_diagnostics(
            ts.actor_params,
            ts.critic_params,
            anchors.actor_star,
            anchors.critic_star,
            stage_pool,
            config.num_heads,
        )
        return {
            "far_kl": jnp.mean(jax.vmap(categorical_kl)(logits_star, logits)),
            "far_logp": jnp.mean(cross(logits)),
            "far_logp_star": jnp.mean(cross(logits_star)),
            "far_value": jnp.mean(value),
            "far_value_gap": jnp.mean(value - anchors.bc_value[:n]),
            **dist,
        }

    return diagnose
