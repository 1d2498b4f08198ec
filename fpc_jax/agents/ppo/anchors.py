"""What PPO knowledge retention remembers of the pre-trained model: theta*, Fisher, BC teacher data.

Anchors exist for every run, whatever the method, with fixed shapes, so switching method changes
only coefficient values and never recompiles (as the SAC agent's fpc_jax/agents/sac/anchors.py).
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.retention.fisher import categorical_fisher, value_fisher

PyTree = Any


@struct.dataclass
class PPOAnchors:
    """Frozen pre-trained quantities used by the retention terms of the PPO loss.

    - ``actor_star`` / ``critic_star``: theta* (``actor_star`` is also the KS teacher),
    - ``actor_fisher`` / ``critic_fisher``: EWC Fisher diagonals, params-shaped, 0 on heads,
    - ``bc_obs`` (N, obs_dim), ``bc_stage`` (N,) int32: stored states of the pre-trained (Far)
      stages, ``bc_logits`` (N, num_actions): pi*'s logits on them, ``bc_value`` (N,): V*(s),
      the target of the optional critic BC [U].
    """

    actor_star: PyTree
    critic_star: PyTree
    actor_fisher: PyTree
    critic_fisher: PyTree
    bc_obs: jax.Array
    bc_stage: jax.Array
    bc_logits: jax.Array
    bc_value: jax.Array

    @property
    def num_bc_states(self) -> int:
        return self.bc_obs.shape[-2]


def teacher_outputs(
    config: PPOConfig, actor_params: PyTree, critic_params: PyTree, obs: jax.Array, stage: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Teacher ``(logits (N, A), V (N,))`` on states ``obs`` (N, obs_dim), heads ``stage`` (N,)."""
    chex.assert_rank([obs, stage], [2, 1])
    nets = make_ppo_networks(config)
    logits = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(actor_params, obs, stage)
    value = jax.vmap(nets.critic_apply, in_axes=(None, 0, 0))(critic_params, obs, stage)
    return logits, value


def make_anchors(
    config: PPOConfig,
    actor_params: PyTree,
    critic_params: PyTree,
    bc_obs: jax.Array,
    bc_stage: jax.Array,
    fisher_obs: jax.Array,
    fisher_stage: jax.Array,
    *,
    chunk_size: int = 32,
) -> PPOAnchors:
    """Anchors of a pre-trained (actor, critic) (jitted; cached per config and shapes).

    ``bc_obs``/``bc_stage``: states collected with pi* on the pre-trained stages (I: 10,000).
    ``fisher_obs``/``fisher_stage``: states for the EWC Fisher (I: 10 batches x 256). The actor
    Fisher is the exact categorical one, ``mean_s sum_a pi*(a|s) (d log pi*(a|s))^2``; the critic
    Fisher ``mean_s (dV*(s))^2`` (fpc_jax/retention/fisher.py), both clipped at 1e-5, 0 on heads.
    """
    return _build_anchors(
        config,
        chunk_size,
        actor_params,
        critic_params,
        jnp.asarray(bc_obs, jnp.float32),
        jnp.asarray(bc_stage, jnp.int32),
        jnp.asarray(fisher_obs, jnp.float32),
        jnp.asarray(fisher_stage, jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _build_anchors(
    config: PPOConfig,
    chunk_size: int,
    actor_params: PyTree,
    critic_params: PyTree,
    bc_obs: jax.Array,
    bc_stage: jax.Array,
    fisher_obs: jax.Array,
    fisher_stage: jax.Array,
) -> PPOAnchors:
    nets = make_ppo_networks(config)
    bc_logits, bc_value = teacher_outputs(config, actor_params, critic_params, bc_obs, bc_stage)
    xs = (fisher_obs, fisher_stage)
    return PPOAnchors(
        actor_star=actor_params,
        critic_star=critic_params,
        actor_fisher=categorical_fisher(nets.actor_apply, actor_params, xs, chunk_size=chunk_size),
        critic_fisher=value_fisher(nets.critic_apply, critic_params, xs, chunk_size=chunk_size),
        bc_obs=bc_obs,
        bc_stage=bc_stage,
        bc_logits=bc_logits,
        bc_value=bc_value,
    )


def placeholder_anchors(
    config: PPOConfig, actor_params: PyTree, critic_params: PyTree, num_bc_states: int
) -> PPOAnchors:
    """Anchors with the right shapes but no teacher knowledge (zero Fisher, zero BC data).

    For runs whose coefficients are all zero (FT, scratch) inside a batch of runs that share one
    compiled program; every retention term stays finite, so ``0 * term`` adds exactly nothing.
    """
    zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)  # noqa: E731
    n = num_bc_states
    return PPOAnchors(
        actor_star=actor_params,
        critic_star=critic_params,
        actor_fisher=zeros(actor_params),
        critic_fisher=zeros(critic_params),
        bc_obs=jnp.zeros((n, config.obs_dim), jnp.float32),
        bc_stage=jnp.zeros((n,), jnp.int32),
        bc_logits=jnp.zeros((n, config.num_actions), jnp.float32),
        bc_value=jnp.zeros((n,), jnp.float32),
    )
