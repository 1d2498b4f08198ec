"""Pre-train on Phase 2, fine-tune on the whole AppleRetrieval: one jittable ``train`` function.

``make_train(static) -> train(hyper, env_params, key)``; the whole program is ``lax.scan`` loops, so
seeds and env variants (M, c) are ``vmap`` axes of one compiled call (purejaxrl-style).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.reinforce.losses import reinforce_loss
from fpc_jax.agents.reinforce.policy import prob_right, sample_action
from fpc_jax.envs.apple_retrieval import (
    AppleParams,
    AppleRetrieval,
    exact_outcome_probs,
    observation,
)


@dataclasses.dataclass(frozen=True)
class ReinforceStatic:
    """Shapes and loop lengths: changing any of these recompiles."""

    horizon: int = 100
    episodes_per_update: int = 10
    pretrain_updates: int = 300
    finetune_updates: int = 1000
    eval_interval: int = 10
    use_baseline: bool = True
    x_cap: int = 64  # static bound on positions for the exact evaluation; must exceed max(M) + 1


@struct.dataclass
class ReinforceHyper:
    """Dynamic hyperparameters (array leaves: a vmap axis costs no recompilation)."""

    lr: jax.Array | float = 1e-3
    gamma: jax.Array | float = 1.0
    w_init: jax.Array = dataclasses.field(default_factory=lambda: jnp.zeros(2))


def rollout(
    key: jax.Array, w: jax.Array, env: AppleRetrieval, params: AppleParams, horizon: int
) -> dict[str, jax.Array]:
    """One episode of at most ``horizon`` steps; steps after the episode ends are masked out."""

    def body(carry, key_t):
        obs, state, done = carry
        action = sample_action(key_t, w, obs)
        next_obs, next_state, reward, terminated, truncated, info = env.step(
            key_t, state, action, params
        )
        out = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "mask": (~done).astype(jnp.float32),
            "reached_apple": info["reached_apple"] & ~done,
            "success": terminated & ~done,
        }
        return (next_obs, next_state, done | terminated | truncated), out

    key_reset, key_steps = jax.random.split(key)
    obs, state = env.reset(key_reset, params)
    _, traj = jax.lax.scan(
        body, (obs, state, jnp.bool_(False)), jax.random.split(key_steps, horizon)
    )
    reached = jnp.any(traj["reached_apple"]) | (jnp.asarray(params.start_phase) == 2)
    return {**traj, "reached_phase2": reached, "succeeded": jnp.any(traj["success"])}


def make_train(
    static: ReinforceStatic, progress: Callable[[jax.Array], None] | None = None
) -> Callable[..., dict[str, jax.Array]]:
    """Build ``train(hyper, env_params, key) -> outputs`` (unbatched; vmap it over runs).

    ``progress(updates_done)`` is called from the device loop (``jax.debug.callback``) with an
    unbatched counter, so under ``vmap`` it fires once per update block, not once per run.
    """

    def report(done):
        if progress is not None:
            jax.debug.callback(progress, done)

    env = AppleRetrieval()
    if static.finetune_updates % static.eval_interval:
        raise ValueError("finetune_updates must be a multiple of eval_interval")
    n_evals = static.finetune_updates // static.eval_interval

    def update(w, key, hyper, params):
        keys = jax.random.split(key, static.episodes_per_update)
        traj = jax.vmap(rollout, in_axes=(0, None, None, None, None))(
            keys, w, env, params, static.horizon
        )
        grad, metrics = jax.grad(reinforce_loss, has_aux=True)(
            w,
            traj["obs"],
            traj["action"],
            traj["reward"],
            traj["mask"],
            hyper.gamma,
            static.use_baseline,
        )
        stats = {
            "batch_reach_phase2": jnp.mean(traj["reached_phase2"].astype(jnp.float32)),
            "batch_success": jnp.mean(traj["succeeded"].astype(jnp.float32)),
            **metrics,
        }
        return w - hyper.lr * grad, stats

    def evaluate(w, params):
        p1 = prob_right(w, observation(jnp.int32(1), params.c))
        p2 = prob_right(w, observation(jnp.int32(2), params.c))
        full, reach = exact_outcome_probs(
            p1, p2, params.replace(start_phase=1), static.horizon, static.x_cap
        )
        phase2, _ = exact_outcome_probs(
            p1, p2, params.replace(start_phase=2), static.horizon, static.x_cap
        )
        return {"success_full": full, "success_phase2": phase2, "reach_phase2": reach, "w": w}

    def train(hyper: ReinforceHyper, params: AppleParams, key: jax.Array) -> dict[str, jax.Array]:
        params = params.replace(T=jnp.minimum(jnp.asarray(params.T), static.horizon))
        key_pre, key_ft = jax.random.split(key)
        pre_params = params.replace(start_phase=2)

        def pre_step(w, xs):
            k, i = xs
            w, stats = update(w, k, hyper, pre_params)
            report(i + 1)
            return w, stats["batch_success"]

        w_pre, pre_success = jax.lax.scan(
            pre_step,
            jnp.asarray(hyper.w_init, jnp.float32),
            (
                jax.random.split(key_pre, static.pretrain_updates),
                jnp.arange(static.pretrain_updates),
            ),
        )
        ft_params = params.replace(start_phase=1)

        def ft_block(w, xs):
            k, b = xs
            ev = evaluate(w, params)
            w, stats = jax.lax.scan(
                lambda w, kk: update(w, kk, hyper, ft_params),
                w,
                jax.random.split(k, static.eval_interval),
            )
            report(static.pretrain_updates + (b + 1) * static.eval_interval)
            return w, (ev, stats)

        w_final, (evals, stats) = jax.lax.scan(
            ft_block, w_pre, (jax.random.split(key_ft, n_evals), jnp.arange(n_evals))
        )
        last = evaluate(w_final, params)
        curves = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), evals, last)
        per_update = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), stats)
        return {
            "w_pre": w_pre,
            "w_final": w_final,
            "pretrain_batch_success": pre_success,
            "eval_update": jnp.arange(n_evals + 1) * static.eval_interval,
            **{f"curve_{k}": v for k, v in curves.items()},
            **{f"update_{k}": v for k, v in per_update.items()},
        }

    return train
