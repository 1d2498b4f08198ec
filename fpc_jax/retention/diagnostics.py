"""FPC diagnostics shared by the agents: how far the parameters moved from theta*, and where the
training steps went (the two gaps of I section 5: state coverage and imperfect cloning).

The agents' own diagnostics on pi*'s stored Far states (KL(pi* || pi), the log-likelihood of
pi*'s actions, the critic against pi*'s critic) are in ``fpc_jax/agents/*/diagnostics.py``; every
name they return is described in ``DIAGNOSTICS``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fpc_jax.retention.trunk import is_trunk_path

PyTree = Any

DIAG_STATES = 2048
"""How many of the stored Far states (the BC anchors' first rows) the diagnostics use."""

DIAGNOSTICS: dict[str, str] = {
    "far_kl": "mean over stored Far states of KL(pi* || pi) (SAC: of the pre-tanh Gaussians)",
    "far_logp": "mean log-likelihood under pi of actions sampled from pi* on the stored Far "
    "states (PPO: exact expectation; SAC: one fixed draw per state)",
    "far_logp_star": "the same log-likelihood under pi* itself (the value far_logp starts at)",
    "far_value": "mean critic value on the stored Far states (SAC: min of the twins at "
    "tanh(pi* mean); PPO: V(s))",
    "far_value_gap": "mean of (critic - pi*'s critic) on the stored Far states",
    "actor_trunk_dist": "||theta - theta*|| / ||theta*|| over the actor's shared parameters",
    "actor_far_head_dist": "the same over the actor's Far-stage head rows (NaN: no such heads)",
    "critic_trunk_dist": "the same over the critic's shared parameters",
    "critic_far_head_dist": "the same over the critic's Far-stage head rows",
}
"""The ``diag/<name>`` curves (evals, runs), computed at every evaluation on the run's state."""


def _ratio(num: list[jax.Array], den: list[jax.Array]) -> jax.Array:
    if not num:
        return jnp.float32(jnp.nan)
    return jnp.sqrt(sum(num)) / jnp.maximum(jnp.sqrt(sum(den)), 1e-12)


def param_distances(
    params: PyTree, star: PyTree, far_mask: jax.Array, num_heads: int
) -> tuple[jax.Array, jax.Array]:
    """``(trunk, far_head)`` relative L2 distances ``||theta - theta*|| / ||theta*||``.

    Trunk: every shared leaf (``trunk.is_trunk_path``). Far head: the rows of the per-stage head
    leaves (last axis ``num_heads * k``, row ``h`` = stage ``h``, as the agents' networks lay them
    out) that ``far_mask`` (num_heads,) marks; NaN when the network has no per-stage head."""
    trunk_num, trunk_den, head_num, head_den = [], [], [], []

    def visit(path, p, s):
        if is_trunk_path(path):
            trunk_num.append(jnp.sum((p - s) ** 2))
            trunk_den.append(jnp.sum(s**2))
            return
        rows = lambda x: x.reshape(*x.shape[:-1], num_heads, -1)  # noqa: E731
        w = far_mask.reshape(num_heads, 1)
        head_num.append(jnp.sum(w * (rows(p) - rows(s)) ** 2))
        head_den.append(jnp.sum(w * rows(s) ** 2))

    jax.tree_util.tree_map_with_path(visit, params, star)
    return _ratio(trunk_num, trunk_den), _ratio(head_num, head_den)


def distance_diagnostics(
    actor: PyTree,
    critic: PyTree,
    actor_star: PyTree,
    critic_star: PyTree,
    stage_pool: jax.Array,
    num_heads: int,
) -> dict[str, jax.Array]:
    """The four ``*_dist`` entries of ``DIAGNOSTICS``; ``stage_pool``: the Far stage indices."""
    far_mask = jnp.zeros(num_heads).at[stage_pool].set(1.0)
    a_trunk, a_head = param_distances(actor, actor_star, far_mask, num_heads)
    c_trunk, c_head = param_distances(critic, critic_star, far_mask, num_heads)
    return {
        "actor_trunk_dist": a_trunk,
        "actor_far_head_dist": a_head,
        "critic_trunk_dist": c_trunk,
        "critic_far_head_dist": c_head,
    }


def stage_coverage(stage: jax.Array, num_heads: int) -> jax.Array:
    """(num_heads,) fraction of the steps ``stage`` (any shape, int) spent in each stage."""
    one_hot = jax.nn.one_hot(stage.reshape(-1), num_heads, dtype=jnp.float32)
    return jnp.mean(one_hot, axis=0)
