"""The PPO training program over a pure-JAX stitched env: rollouts, GAE and updates in one scan.

``make_train_chunk(env, static, config) -> (chunk, evaluate)`` follows the SAC agent's contract
(fpc_jax/agents/sac/train.py): ``chunk(run_state, step0, anchors, coefs, hyper, params,
stage_pool)`` runs ``static.steps_per_chunk`` env transitions (summed over the ``num_envs``
parallel envs) of ONE run (unbatched; ``vmap`` it over runs) and evaluates at the chunk start.
Each iteration collects ``num_steps`` steps of ``num_envs`` envs, computes GAE (plus RND's
intrinsic stream when on) and does ``epochs`` x ``minibatches`` Adam updates (Schulman et al. 2017;
cleanrl / purejaxrl ``ppo.py`` layout). The env's action is a one-hot float vector. The run
state, the env step and the GAE end flags are in fpc_jax/agents/ppo/rollout.py (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from fpc_jax.agents.ppo.advantages import make_batch_builder
from fpc_jax.agents.ppo.anchors import PPOAnchors
from fpc_jax.agents.ppo.networks import PPOConfig, make_policy, make_ppo_networks
from fpc_jax.agents.ppo.rollout import (
    EVAL_MODES,
    LoopStatic,
    RNDStats,
    Rollout,
    RunningMeanStd,
    RunState,
    episode_params_fn,
    gae_end_flags,
    init_run_state,
    make_env_step,
)
from fpc_jax.agents.ppo.update import (
    PPOHyper,
    init_train_state,
    train_state_from_params,
    update_epochs,
)
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, single_stage_params
from fpc_jax.retention.diagnostics import stage_coverage
from fpc_jax.retention.penalties import RetentionCoefs

__all__ = [
    "EVAL_MODES",
    "LoopStatic",
    "PPOHyper",
    "RNDStats",
    "Rollout",
    "RunState",
    "RunningMeanStd",
    "episode_params_fn",
    "gae_end_flags",
    "init_run_state",
    "init_train_state",
    "make_evaluate",
    "make_policy",
    "make_train_chunk",
    "train_state_from_params",
]


def make_evaluate(
    env: SequenceEnv,
    config: PPOConfig,
    episodes: int,
    stage_horizon: int,
    eval_mode: str = "sample",
) -> Callable[..., dict[str, jax.Array]]:
    """``evaluate(actor_params, params, key)``: success on the whole sequence (fraction of stages
    solved, fraction of episodes solving all) and on each stage run alone with its head
    (``stage_success``, shape (num_heads,)), acting by ``eval_mode`` ("sample" or "greedy")."""
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
    sample, greedy = make_policy(config)
    num_heads = env.num_heads

    def act(actor_params, obs, stage, key):
        if eval_mode == "greedy":
            return greedy(actor_params, obs, stage)
        return sample(actor_params, obs, stage, key)

    def episode(actor_params, params, keys):
        """Stages solved in one episode of ``len(keys) - 1`` steps; ``keys`` (steps + 1, 2)."""
        obs, state = env.reset(keys[0, 0], params)

        def body(carry, k):
            obs, state = carry
            action = act(actor_params, obs, state.stage, k[0])
            obs, state, *_ = env.step(k[1], state, action, params)
            return (obs, state), None

        (_, state), _ = jax.lax.scan(body, (obs, state), keys[1:])
        return state.stages_solved

    episodes_b = jax.vmap(episode, in_axes=(None, None, 0))

    def evaluate(actor_params, params: SequenceParams, key: jax.Array) -> dict[str, jax.Array]:
        # one draw of every key: a K-stage episode lasts <= K * T steps, a stage alone <= T
        seq_horizon = num_heads * stage_horizon
        keys = jax.random.split(key, (1 + num_heads, episodes, seq_horizon + 1, 2))
        solved = episodes_b(actor_params, params, keys[0])
        n_stages = params.num_stages.astype(jnp.float32)

        def alone(k, keys):
            s = episodes_b(actor_params, single_stage_params(params, k), keys)
            return jnp.mean((s >= 1).astype(jnp.float32))

        per_stage = jax.vmap(alone)(jnp.arange(num_heads), keys[1:, :, : stage_horizon + 1])
        return {
            "stages_solved_frac": jnp.mean(solved / n_stages),
            "all_solved": jnp.mean((solved >= params.num_stages).astype(jnp.float32)),
            "stage_success": per_stage,
        }

    return evaluate


def make_train_chunk(
    env: SequenceEnv, static: LoopStatic, config: PPOConfig
) -> tuple[Callable[..., Any], Callable[..., dict[str, jax.Array]]]:
    """Build ``chunk(run, step0, anchors, coefs, hyper, params, stage_pool) -> (run, out)`` and
    ``evaluate``. ``step0`` (the global env-step count) is accepted for the driver's contract;
    PPO has no step-dependent switch (the KS decay counts updates in the train state)."""
    if env.action_size != config.num_actions:
        raise ValueError(
            f"env {env.name!r} takes {env.action_size}-dim one-hot actions, "
            f"config.num_actions is {config.num_actions}"
        )
    if env.observation_size != config.obs_dim:
        raise ValueError(
            f"env {env.name!r} observations have {env.observation_size} dims, "
            f"config.obs_dim is {config.obs_dim}"
        )
    nets = make_ppo_networks(config)
    evaluate = make_evaluate(
        env, config, static.eval_episodes, static.stage_horizon, static.eval_mode
    )
    n_env, n_steps = static.num_envs, static.num_steps
    vmapped_step = jax.vmap(
        make_env_step(env, static, config, nets), in_axes=(None, 0, 0, 0, None, None)
    )
    build_batch = make_batch_builder(config)

    def iteration(run: RunState, key, anchors, coefs, hyper, params, stage_pool):
        k_roll, k_upd = jax.random.split(key)
        ts = run.ppo

        def step(carry, k):
            env_state, ep_params = carry
            env_state, ep_params, transition, stats = vmapped_step(
                ts, env_state, ep_params, k, params, stage_pool
            )
            return (env_state, ep_params), (transition, stats)

        (env_state, ep_params), (roll, stats) = jax.lax.scan(
            step,
            (run.env_state, run.episode_params),
            jax.random.split(k_roll, (n_steps, n_env, 4)),
        )
        chex.assert_shape(roll.reward, (n_steps, n_env))
        batch, rnd, metrics = build_batch(ts, run.rnd, roll, env_state.obs, env_state.stage, hyper)
        flat = jax.tree.map(lambda x: x.reshape(n_steps * n_env, *x.shape[2:]), batch)
        ts, upd_metrics = update_epochs(
            ts,
            flat,
            anchors,
            coefs,
            hyper,
            k_upd,
            epochs=static.epochs,
            minibatches=static.minibatches,
            normalize_advantages=static.normalize_advantages,
            clip_value_loss=static.clip_value_loss,
        )
        done, solved, all_solved = (jnp.sum(x) for x in stats)
        run = run.replace(
            ppo=ts,
            env_state=env_state,
            episode_params=ep_params,
            rnd=rnd,
            episodes=run.episodes + done.astype(jnp.int32),
            stages_solved_sum=run.stages_solved_sum + solved.astype(jnp.int32),
            all_solved_sum=run.all_solved_sum + all_solved.astype(jnp.int32),
        )
        return run, ({**upd_metrics, **metrics}, stage_coverage(roll.stage, env.num_heads))

    def chunk(
        run: RunState,
        step0: jax.Array,
        anchors: PPOAnchors,
        coefs: RetentionCoefs,
        hyper: PPOHyper,
        params: SequenceParams,
        stage_pool: jax.Array,
    ) -> tuple[RunState, dict[str, Any]]:
        del step0
        key, k_eval, k_loop = jax.random.split(run.key, 3)
        zero = jnp.zeros_like(run.episodes)
        run = run.replace(key=key, episodes=zero, stages_solved_sum=zero, all_solved_sum=zero)
        evals = evaluate(run.ppo.actor_params, params, k_eval)
        n_iters = static.iterations_per_chunk
        run, (metrics, coverage) = jax.lax.scan(
            lambda r, k: iteration(r, k, anchors, coefs, hyper, params, stage_pool),
            run,
            jax.random.split(k_loop, n_iters),
        )
        episodes = jnp.maximum(run.episodes, 1)
        out = {
            "eval": evals,
            "train": jax.tree.map(jnp.mean, metrics),
            "train_coverage": jnp.mean(coverage, axis=0),
            "train_episodes": run.episodes,
            "train_stages_solved": run.stages_solved_sum / episodes,
            "train_all_solved": run.all_solved_sum / episodes,
        }
        return run, out

    return chunk, evaluate
