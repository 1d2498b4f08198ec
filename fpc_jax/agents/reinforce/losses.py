"""REINFORCE loss (Williams 1992) with an optional per-timestep batch-mean baseline."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from fpc_jax.agents.reinforce.policy import log_prob


def rewards_to_go(reward_t: jax.Array, mask_t: jax.Array, gamma: jax.Array) -> jax.Array:
    """G_t = sum_{k >= t} gamma^(k-t) r_k over the valid steps of one episode (unbatched, (H,))."""
    chex.assert_equal_shape([reward_t, mask_t])

    def body(g_tp1, xs):
        r, m = xs
        g = m * (r + gamma * g_tp1)
        return g, g

    _, g_t = jax.lax.scan(body, jnp.float32(0.0), (reward_t, mask_t), reverse=True)
    return g_t


def reinforce_loss(
    w: jax.Array,
    obs_bt: jax.Array,
    action_bt: jax.Array,
    reward_bt: jax.Array,
    mask_bt: jax.Array,
    gamma: jax.Array,
    use_baseline: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-E[sum_t log pi(a_t|s_t) (G_t - b_t)] over a batch of episodes (B, H).

    ``b_t`` is the mean return-to-go of the batch's episodes still running at step t (0 when
    ``use_baseline`` is False).
    """
    chex.assert_rank([obs_bt, action_bt, reward_bt, mask_bt], [3, 2, 2, 2])
    g_bt = jax.vmap(rewards_to_go, in_axes=(0, 0, None))(reward_bt, mask_bt, gamma)
    if use_baseline:
        b_t = jnp.sum(g_bt * mask_bt, axis=0) / jnp.maximum(jnp.sum(mask_bt, axis=0), 1.0)
    else:
        b_t = jnp.zeros(g_bt.shape[1])
    adv_bt = jax.lax.stop_gradient(g_bt - b_t[None])
    logp_bt = jax.vmap(jax.vmap(log_prob, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(
        w, obs_bt, action_bt
    )
    loss = -jnp.mean(jnp.sum(mask_bt * logp_bt * adv_bt, axis=1))
    metrics = {"loss/pg": loss, "return/mean": jnp.mean(g_bt[:, 0])}
    return loss, metrics
