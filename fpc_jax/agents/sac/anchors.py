"""What knowledge retention remembers of the pre-trained model: theta*, Fisher, BC teacher data.

Anchors exist for every run, whatever the method, with fixed shapes, so switching method changes
only coefficient values and never recompiles.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.sac.networks import SACConfig, deterministic_action, make_sac_networks
from fpc_jax.retention.fisher import FISHER_MEANS, actor_fisher, critic_fisher

PyTree = Any


@struct.dataclass
class Anchors:
    """Frozen pre-trained quantities used by the retention penalties.

    - ``actor_star`` / ``critic_star``: theta* (also the KS teacher actor),
    - ``actor_fisher`` / ``critic_fisher``: EWC Fisher diagonals, params-shaped, 0 on heads,
    - ``bc_obs`` (N, obs_dim), ``bc_stage`` (N,) int32: stored states of the pre-trained stages,
    - ``bc_mean`` / ``bc_log_std`` (N, act_dim): the teacher's pre-tanh Gaussian on them,
    - ``bc_q`` (N,): ``min_j Q*_j(s, tanh(bc_mean))``, target of the optional critic BC [U].
    """

    actor_star: PyTree
    critic_star: PyTree
    actor_fisher: PyTree
    critic_fisher: PyTree
    bc_obs: jax.Array
    bc_stage: jax.Array
    bc_mean: jax.Array
    bc_log_std: jax.Array
    bc_q: jax.Array

    @property
    def num_bc_states(self) -> int:
        return self.bc_obs.shape[-2]


def teacher_outputs(
    config: SACConfig, actor_params: PyTree, critic_params: PyTree, obs: jax.Array, stage: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Teacher ``(mean, log_std, Q)`` on states ``obs`` (N, obs_dim) with heads ``stage`` (N,)."""
    chex.assert_rank([obs, stage], [2, 1])
    nets = make_sac_networks(config)
    mean, log_std = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(actor_params, obs, stage)
    q = jax.vmap(nets.critic_apply, in_axes=(None, 0, 0, 0))(
        critic_params, obs, deterministic_action(mean), stage
    )
    return mean, log_std, jnp.min(q, axis=-1)


def make_anchors(
    config: SACConfig,
    actor_params: PyTree,
    critic_params: PyTree,
    bc_obs: jax.Array,
    bc_stage: jax.Array,
    fisher_obs: jax.Array,
    fisher_stage: jax.Array,
    fisher_action: jax.Array | None = None,
    *,
    chunk_size: int = 32,
    fisher_mean: str = "squashed",
) -> Anchors:
    """Anchors of a pre-trained (actor, critic) (jitted; cached per config and shapes).

    ``bc_obs``/``bc_stage``: states collected with pi* on the pre-trained stages (I: 10,000).
    ``fisher_obs``/``fisher_stage``: states for the EWC Fisher (I: 10 batches x 256).
    ``fisher_action``: actions for the critic Fisher; default the teacher's ``tanh(mean)`` [U].
    ``fisher_mean``: the actor Fisher's mean, ``"squashed"`` (CW) or ``"pre_tanh"``
    (``retention.fisher.FISHER_MEANS``).
    """
    if fisher_mean not in FISHER_MEANS:
        raise ValueError(f"unknown fisher_mean {fisher_mean!r}; choose one of {FISHER_MEANS}")
    return _build_anchors(
        config,
        chunk_size,
        fisher_mean,
        actor_params,
        critic_params,
        jnp.asarray(bc_obs, jnp.float32),
        jnp.asarray(bc_stage, jnp.int32),
        jnp.asarray(fisher_obs, jnp.float32),
        jnp.asarray(fisher_stage, jnp.int32),
        fisher_action,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _build_anchors(
    config: SACConfig,
    chunk_size: int,
    fisher_mean: str,
    actor_params: PyTree,
    critic_params: PyTree,
    bc_obs: jax.Array,
    bc_stage: jax.Array,
    fisher_obs: jax.Array,
    fisher_stage: jax.Array,
    fisher_action: jax.Array | None,
) -> Anchors:
    nets = make_sac_networks(config)
    bc_mean, bc_log_std, bc_q = teacher_outputs(
        config, actor_params, critic_params, bc_obs, bc_stage
    )
    if fisher_action is None:
        f_mean, _ = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(
            actor_params, fisher_obs, fisher_stage
        )
        fisher_action = deterministic_action(f_mean)
    return Anchors(
        actor_star=actor_params,
        critic_star=critic_params,
        actor_fisher=actor_fisher(
            nets.actor_apply,
            actor_params,
            fisher_obs,
            fisher_stage,
            chunk_size=chunk_size,
            mean=fisher_mean,
        ),
        critic_fisher=critic_fisher(
            nets.critic_apply,
            critic_params,
            fisher_obs,
            fisher_action,
            fisher_stage,
            chunk_size=chunk_size,
        ),
        bc_obs=bc_obs,
        bc_stage=bc_stage,
        bc_mean=bc_mean,
        bc_log_std=bc_log_std,
        bc_q=bc_q,
    )


def placeholder_anchors(
    config: SACConfig, actor_params: PyTree, critic_params: PyTree, num_bc_states: int
) -> Anchors:
    """Anchors with the right shapes but no teacher knowledge (zero Fisher, zero BC data).

    For runs whose coefficients are all zero (FT, scratch, EM) inside a batch of runs that share
    one compiled update; every penalty stays finite.
    """
    zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)  # noqa: E731
    return Anchors(
        actor_star=actor_params,
        critic_star=critic_params,
        actor_fisher=zeros(actor_params),
        critic_fisher=zeros(critic_params),
        bc_obs=jnp.zeros((num_bc_states, config.obs_dim), jnp.float32),
        bc_stage=jnp.zeros((num_bc_states,), jnp.int32),
        bc_mean=jnp.zeros((num_bc_states, config.act_dim), jnp.float32),
        bc_log_std=jnp.zeros((num_bc_states, config.act_dim), jnp.float32),
        bc_q=jnp.zeros((num_bc_states,), jnp.float32),
    )
