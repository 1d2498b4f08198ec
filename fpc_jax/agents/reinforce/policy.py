"""The linear policy of Wolczyk et al. 2023 (Sec. 3.2): P(right | s) = sigmoid(w . s), no bias."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def prob_right(w: jax.Array, obs: jax.Array) -> jax.Array:
    """P(action = right) for one observation (unbatched)."""
    chex.assert_equal_shape([w, obs])
    return jax.nn.sigmoid(jnp.dot(w, obs))


def log_prob(w: jax.Array, obs: jax.Array, action: jax.Array) -> jax.Array:
    """log pi(action | obs); action 1 = right, 0 = left."""
    logit = jnp.dot(w, obs)
    return jnp.where(action == 1, jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit))


def sample_action(key: jax.Array, w: jax.Array, obs: jax.Array) -> jax.Array:
    return jax.random.bernoulli(key, prob_right(w, obs)).astype(jnp.int32)
