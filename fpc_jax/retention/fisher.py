"""Diagonal Fisher information for EWC, computed as in Continual World (Wolczyk et al. 2021, 2024).

Per-sample Jacobians of the policy's Gaussian parameters (actor), of a categorical policy's
log-probabilities (discrete actor), or of Q / V (critic) with respect to the parameters, averaged
over states in fixed-size chunks to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.retention.trunk import trunk_mask

PyTree = Any

FISHER_MIN = 1e-5
STD_EPS = 1e-6


def _chunked_mean(
    per_sample: Callable[..., PyTree], params: PyTree, xs: tuple[jax.Array, ...], chunk_size: int
) -> PyTree:
    """Mean over the leading axis of ``per_sample(params, *x)``, ``chunk_size`` samples at once."""
    n = xs[0].shape[0]
    chex.assert_tree_shape_prefix(xs, (n,))
    if n == 0:
        raise ValueError("Fisher needs at least one state")
    num_chunks = -(-n // chunk_size)
    pad = num_chunks * chunk_size - n
    weight = jnp.concatenate([jnp.ones((n,)), jnp.zeros((pad,))]) / n
    xs = jax.tree_util.tree_map(
        lambda x: jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]), xs
    )
    chunks = jax.tree_util.tree_map(
        lambda x: x.reshape(num_chunks, chunk_size, *x.shape[1:]), (weight, xs)
    )

    def body(acc: PyTree, chunk: tuple[jax.Array, tuple[jax.Array, ...]]) -> tuple[PyTree, None]:
        w, x = chunk
        values = jax.vmap(per_sample, in_axes=(None, *([0] * len(x))))(params, *x)
        acc = jax.tree_util.tree_map(lambda a, v: a + jnp.tensordot(w, v, axes=1), acc, values)
        return acc, None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(body, zeros, chunks)
    return total


def _mask_heads(fisher: PyTree) -> PyTree:
    mask = trunk_mask(fisher)
    return jax.tree_util.tree_map(lambda f, m: f * m, fisher, mask)


def _clip_and_mask(fisher: PyTree, min_value: float) -> PyTree:
    return _mask_heads(jax.tree_util.tree_map(lambda f: jnp.maximum(f, min_value), fisher))


FISHER_MEANS = ("squashed", "pre_tanh")
"""Which mean the actor Fisher differentiates: ``squashed`` = ``tanh(mu)``, the action mean
Continual World's actor returns (its ``methods/ewc.py`` default, ours too); ``pre_tanh`` = the
Gaussian's own ``mu`` (fpc_jax before issue 16; larger on saturated action dimensions)."""


def actor_fisher(
    actor_apply: Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    params: PyTree,
    obs: jax.Array,
    stage: jax.Array,
    *,
    chunk_size: int = 32,
    min_value: float = FISHER_MIN,
    mean: str = "squashed",
) -> PyTree:
    """EWC Fisher diagonal of a diagonal-Gaussian policy, as Continual World's ``methods/ewc.py``.

    For each state's own head, with ``m = tanh(mu)`` (``mean="squashed"``, CW) or ``m = mu``
    (``"pre_tanh"``) and ``sigma = exp(log_std)`` (pre-tanh in both):
    ``f_i(s) = max(sum_a (dm_a/dtheta_i^2 + 2 dsigma_a/dtheta_i^2) / (sigma_a^2 + 1e-6), 1e-5)``
    (the Fisher of a Gaussian w.r.t. (m, sigma) is diag(1/sigma^2, 2/sigma^2), pulled back
    through the Jacobian; clipped below per state, as CW does), then ``F_i = mean_s f_i(s)``.
    Head parameters are set to 0.

    ``obs``: (N, obs_dim) states of the pre-trained stages (default 10 batches x 256), ``stage``:
    (N,) their head indices.
    """
    chex.assert_rank([obs, stage], [2, 1])
    if mean not in FISHER_MEANS:
        raise ValueError(f"unknown Fisher mean {mean!r}; choose one of {FISHER_MEANS}")
    squash = mean == "squashed"

    def per_sample(p: PyTree, o: jax.Array, s: jax.Array) -> PyTree:
        def gaussian(q: PyTree) -> tuple[jax.Array, jax.Array]:
            mu, log_std = actor_apply(q, o, s)
            return (jnp.tanh(mu) if squash else mu), jnp.exp(log_std)

        d_mean, d_std = jax.jacrev(gaussian)(p)
        _, std = gaussian(p)
        inv_var = 1.0 / (std**2 + STD_EPS)
        return jax.tree_util.tree_map(
            lambda dm, ds: jnp.maximum(
                jnp.tensordot(inv_var, dm**2 + 2.0 * ds**2, axes=1), min_value
            ),
            d_mean,
            d_std,
        )

    return _mask_heads(_chunked_mean(per_sample, params, (obs, stage), chunk_size))


def critic_fisher(
    critic_apply: Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array],
    params: PyTree,
    obs: jax.Array,
    action: jax.Array,
    stage: jax.Array,
    *,
    chunk_size: int = 32,
    min_value: float = 0.0,
) -> PyTree:
    """EWC Fisher diagonal of the critics (I section 4): ``F_i = mean_s (dQ/dtheta_i)^2``.

    ``critic_apply`` returns the twin Q values (2,) from stacked params; each critic only depends
    on its own slice, so summing the squared Jacobian over the two outputs gives each critic's own
    Fisher. Not clipped (``min_value`` 0), as in Continual World's ``methods/ewc.py``; head
    parameters are set to 0.
    """
    chex.assert_rank([obs, action, stage], [2, 2, 1])

    def per_sample(p: PyTree, o: jax.Array, a: jax.Array, s: jax.Array) -> PyTree:
        jac = jax.jacrev(lambda q: critic_apply(q, o, a, s))(p)
        return jax.tree_util.tree_map(lambda d: jnp.sum(d**2, axis=0), jac)

    fisher = _chunked_mean(per_sample, params, (obs, action, stage), chunk_size)
    return _clip_and_mask(fisher, min_value)


def categorical_fisher(
    logits_apply: Callable[..., jax.Array],
    params: PyTree,
    xs: tuple[jax.Array, ...],
    *,
    chunk_size: int = 32,
    min_value: float = FISHER_MIN,
) -> PyTree:
    """EWC Fisher diagonal of a categorical policy, exact over actions (Kirkpatrick et al. 2017):
    ``F_i = mean_s sum_a pi(a|s) (d log pi(a|s) / dtheta_i)^2``.

    ``logits_apply(params, *x)`` gives the logits (A,) of one state; ``xs`` are its per-state
    inputs with a leading axis N (e.g. ``(obs,)`` or ``(obs, stage)``). Clipped below at
    ``min_value`` like the Gaussian actor's; head parameters are set to 0.
    """

    def per_sample(p: PyTree, *x: jax.Array) -> PyTree:
        jac = jax.jacrev(lambda q: jax.nn.log_softmax(logits_apply(q, *x)))(p)
        probs = jax.nn.softmax(logits_apply(p, *x))
        return jax.tree_util.tree_map(lambda d: jnp.tensordot(probs, d**2, axes=1), jac)

    fisher = _chunked_mean(per_sample, params, tuple(xs), chunk_size)
    return _clip_and_mask(fisher, min_value)


def value_fisher(
    value_apply: Callable[..., jax.Array],
    params: PyTree,
    xs: tuple[jax.Array, ...],
    *,
    chunk_size: int = 32,
    min_value: float = FISHER_MIN,
) -> PyTree:
    """EWC Fisher diagonal of a scalar value function: ``F_i = mean_s (dV(s)/dtheta_i)^2`` (the
    critic Fisher of I section 4 without an action input). Clipped and head-masked as above."""

    def per_sample(p: PyTree, *x: jax.Array) -> PyTree:
        grad = jax.grad(lambda q: jnp.squeeze(value_apply(q, *x)))(p)
        return jax.tree_util.tree_map(lambda d: d**2, grad)

    fisher = _chunked_mean(per_sample, params, tuple(xs), chunk_size)
    return _clip_and_mask(fisher, min_value)


def fisher_sample(n_data: int, n: int, seed: int) -> np.ndarray:
    """Indices of the EWC Fisher states among ``n_data`` stored Far states: ``n`` uniform draws
    with replacement (Continual World ``methods/ewc.py`` samples its 10 batches of 256 from the
    replay of the tasks it protects), so every Far task and every part of an episode contributes
    in proportion to its stored states, not the first ``n`` (one Far task, early steps)."""
    if n_data < 1 or n < 1:
        raise ValueError(f"need n_data >= 1 and n >= 1, got {n_data}, {n}")
    return np.random.default_rng([seed, 0xF15E]).integers(0, n_data, n)
