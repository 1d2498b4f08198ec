"""The SAC training program over a pure-JAX stitched env: acting, replay and updates in one scan.

``make_train_chunk(env, static) -> chunk(run_state, step0, anchors, coefs, hyper, params)`` runs
``static.steps_per_chunk`` env steps of ONE run (unbatched; ``vmap`` it over the runs axis) and
evaluates at the start of the chunk. Every iteration does ``update_every`` env steps and then, once
``update_after`` steps are reached, ``update_every`` gradient updates (Continual World's schedule:
one update per env step). ``step0`` is the global env-step count, shared by all runs (unbatched),
so the random-action and update-after switches are real branches, not selects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.sac.anchors import Anchors
from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import (
    deterministic_action,
    make_sac_networks,
    sample_tanh_gaussian,
)
from fpc_jax.agents.sac.replay import ReplayBuffer, buffer_add, buffer_init, buffer_sample
from fpc_jax.agents.sac.update import SACHyper, SACTrainState, update_step
from fpc_jax.envs.sequence import (
    SequenceEnv,
    SequenceParams,
    episode_params_sampler,
    select,
    single_stage_params,
)
from fpc_jax.retention.diagnostics import stage_coverage
from fpc_jax.retention.penalties import RetentionCoefs

PyTree = Any


EVAL_POLICIES = ("both", "stochastic", "deterministic")
"""What ``make_evaluate`` plays: Continual World logs stochastic episodes (its plots use them)
and a deterministic one. ``"both"``: ``eval/<k>`` = stochastic, plus ``eval/stochastic/<k>`` and
``eval/deterministic/<k>``; one mode: ``eval/<k>`` (and ``eval/<mode>/<k>``) of that mode."""


@dataclasses.dataclass(frozen=True)
class LoopStatic:
    """Loop shapes and schedule (static: changing them recompiles)."""

    steps_per_chunk: int = 5_000
    update_every: int = 50
    update_after: int = 1_000
    start_steps: int = 10_000
    buffer_capacity: int = 100_000
    em_reserved: int = 0  # slots reserved for Episodic Memory (0: no EM slice)
    eval_episodes: int = 10
    eval_policy: str = "both"  # "both" | "stochastic" | "deterministic" (EVAL_POLICIES)
    stage_horizon: int = 200  # static upper bound on the stage time limit T (eval scan length)
    bootstrap_on_timeout: bool = False  # paper: every stage end is a true terminal
    episode_mode: str = "sequence"  # "sequence": play params' stages; "single": one random stage

    def __post_init__(self) -> None:
        if self.steps_per_chunk % self.update_every:
            raise ValueError("steps_per_chunk must be a multiple of update_every")
        if self.episode_mode not in ("sequence", "single"):
            raise ValueError(
                f"episode_mode must be 'sequence' or 'single', got {self.episode_mode}"
            )
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(f"eval_policy must be in {EVAL_POLICIES}, got {self.eval_policy!r}")
        if not 0 <= self.em_reserved < self.buffer_capacity:
            raise ValueError("need 0 <= em_reserved < buffer_capacity")


@struct.dataclass
class RunState:
    """Everything one run carries between chunks (checkpointed as a whole for resume)."""

    sac: SACTrainState
    buffer: ReplayBuffer
    env_state: PyTree
    episode_params: SequenceParams  # params of the episode being played
    key: jax.Array
    episodes: jax.Array  # training episodes finished in the current chunk
    stages_solved_sum: jax.Array  # sum over those episodes of stages solved
    all_solved_sum: jax.Array  # number of those episodes that solved every stage
    random_steps: jax.Array  # env steps of uniform-random actions at the start (per run)

    @property
    def actor_params(self) -> PyTree:
        """The policy the chunk driver evaluates."""
        return self.sac.actor_params


def transition_example(obs_dim: int, act_dim: int) -> Batch:
    f = jnp.float32
    return Batch(
        obs=jnp.zeros(obs_dim, f),
        action=jnp.zeros(act_dim, f),
        reward=jnp.zeros((), f),
        next_obs=jnp.zeros(obs_dim, f),
        discount_mask=jnp.zeros((), f),
        stage=jnp.zeros((), jnp.int32),
    )


def episode_params_fn(static: LoopStatic, stage_pool: jax.Array) -> Callable[..., SequenceParams]:
    """Params of a new training episode (``sequence.episode_params_sampler``)."""
    return episode_params_sampler(static.episode_mode, stage_pool)


def init_run_state(
    env: SequenceEnv,
    static: LoopStatic,
    sac: SACTrainState,
    params: SequenceParams,
    stage_pool: jax.Array,
    key: jax.Array,
    em_transitions: Batch | None = None,
    *,
    random_steps: int | None = None,
    ring_limit: int | None = None,
) -> RunState:
    """Fresh run: empty replay (EM slice filled when given), env reset, counters zero.

    ``random_steps``: uniform-random env steps at the start (default ``static.start_steps``;
    CW's scratch runs: 10k); ``ring_limit``: this run's replay ring size (default every slot
    ``static.buffer_capacity - static.em_reserved``). Both are per-run leaves: runs that differ
    in them share one compiled program."""
    from fpc_jax.agents.sac.replay import buffer_fill_reserved

    cfg = sac.config
    buf = buffer_init(
        static.buffer_capacity,
        transition_example(cfg.obs_dim, cfg.act_dim),
        static.em_reserved,
        ring_limit,
    )
    if em_transitions is not None and static.em_reserved:
        buf = buffer_fill_reserved(buf, em_transitions)
    key, k_ep, k_reset = jax.random.split(key, 3)
    ep_params = episode_params_fn(static, stage_pool)(k_ep, params)
    _, env_state = env.reset(k_reset, ep_params)
    zero = jnp.zeros((), jnp.int32)
    rand = jnp.asarray(static.start_steps if random_steps is None else random_steps, jnp.int32)
    return RunState(sac, buf, env_state, ep_params, key, zero, zero, zero, rand)


def make_policy(config) -> tuple[Callable, Callable]:
    nets = make_sac_networks(config)

    def sample(actor_params, obs, stage, key):
        mean, log_std = nets.actor_apply(actor_params, obs, stage)
        action, _ = sample_tanh_gaussian(key, mean, log_std)
        return action

    def greedy(actor_params, obs, stage):
        mean, _ = nets.actor_apply(actor_params, obs, stage)
        return deterministic_action(mean)

    return sample, greedy


def make_evaluate(
    env: SequenceEnv, config, episodes: int, stage_horizon: int, policy: str = "deterministic"
) -> Callable[..., dict[str, jax.Array]]:
    """``evaluate(actor_params, params, key)``: success on the whole sequence (fraction of
    stages solved, fraction of episodes solving all) and on each stage run alone with its own
    head (``stage_success``, shape (num_heads,)), ``episodes`` each, of the ``policy``
    (``EVAL_POLICIES``): ``tanh(mean)`` (deterministic), sampled actions (stochastic) or both
    (one after the other, so no call is wider than one mode's)."""
    if policy not in EVAL_POLICIES:
        raise ValueError(f"policy must be one of {EVAL_POLICIES}, got {policy!r}")
    sample, greedy = make_policy(config)
    num_heads = env.num_heads

    def episode(actor_params, params, key, horizon, stochastic):
        obs, state = env.reset(key, params)

        def body(carry, k):
            obs, state = carry
            k_act, k_env = jax.random.split(k)
            if stochastic:
                action = sample(actor_params, obs, state.stage, k_act)
            else:
                action = greedy(actor_params, obs, state.stage)
            obs, state, *_ = env.step(k_env if stochastic else k, state, action, params)
            return (obs, state), None

        (_, state), _ = jax.lax.scan(body, (obs, state), jax.random.split(key, horizon))
        return state.stages_solved

    def one_mode(actor_params, params, key, stochastic):
        k_seq, k_stage = jax.random.split(key)
        horizon = stage_horizon  # static bound on T: a K-stage episode lasts <= K * T steps
        play = jax.vmap(episode, in_axes=(None, None, 0, None, None))
        solved = play(
            actor_params,
            params,
            jax.random.split(k_seq, episodes),
            num_heads * horizon,
            stochastic,
        )
        n_stages = params.num_stages.astype(jnp.float32)

        def alone(k, key):
            p = single_stage_params(params, k)
            s = play(actor_params, p, jax.random.split(key, episodes), horizon, stochastic)
            return jnp.mean((s >= 1).astype(jnp.float32))

        per_stage = jax.vmap(alone)(jnp.arange(num_heads), jax.random.split(k_stage, num_heads))
        return {
            "stages_solved_frac": jnp.mean(solved / n_stages),
            "all_solved": jnp.mean((solved >= params.num_stages).astype(jnp.float32)),
            "stage_success": per_stage,
        }

    def evaluate(actor_params, params: SequenceParams, key: jax.Array) -> dict[str, jax.Array]:
        if policy == "deterministic":  # the evaluation before issue 16: same keys, same draws
            det = one_mode(actor_params, params, key, False)
            return {**det, **{f"deterministic/{k}": v for k, v in det.items()}}
        k_sto, k_det = jax.random.split(key)
        sto = one_mode(actor_params, params, k_sto, True)
        out = {**sto, **{f"stochastic/{k}": v for k, v in sto.items()}}
        if policy == "both":
            det = one_mode(actor_params, params, k_det, False)
            out |= {f"deterministic/{k}": v for k, v in det.items()}
        return out

    return evaluate


def make_update_burst(config, updates: int) -> Callable[..., Any]:
    """``burst(sac, buf, anchors, coefs, hyper, key, do_update) -> (sac, metrics)``: ``updates``
    SAC updates on minibatches sampled from ``buf`` (metrics averaged), or, when ``do_update`` is
    False, the state unchanged with zero metrics. Pass an unbatched ``do_update`` so that under
    ``vmap`` the ``lax.cond`` stays a real branch."""

    def run(sac, buf, anchors, coefs, hyper, key):
        def one(s, k):
            k_batch, k_upd = jax.random.split(k)
            batch = buffer_sample(buf, k_batch, config.batch_size)
            return update_step(s, batch, anchors, coefs, hyper, k_upd)

        sac, metrics = jax.lax.scan(one, sac, jax.random.split(key, updates))
        return sac, jax.tree.map(jnp.mean, metrics)

    def burst(sac, buf, anchors, coefs, hyper, key, do_update):
        args = (buf, anchors, coefs, hyper, key)
        shapes = jax.eval_shape(run, sac, *args)[1]
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return jax.lax.cond(do_update, lambda s: run(s, *args), lambda s: (s, zeros), sac)

    return burst


def make_train_chunk(env: SequenceEnv, static: LoopStatic, config) -> Callable[..., Any]:
    """Build ``chunk(run, step0, anchors, coefs, hyper, params, stage_pool) -> (run, out)``."""
    sample, _ = make_policy(config)
    evaluate = make_evaluate(
        env, config, static.eval_episodes, static.stage_horizon, static.eval_policy
    )
    burst = make_update_burst(config, static.update_every)
    n_iters = static.steps_per_chunk // static.update_every
    act_dim = config.act_dim

    def env_step(run: RunState, xs, params, stage_pool):
        step, key = xs
        k_act, k_rand, k_env, k_ep, k_reset = jax.random.split(key, 5)
        state = run.env_state
        obs = state.obs
        policy_action = sample(run.sac.actor_params, obs, state.stage, k_act)
        random_action = jax.random.uniform(k_rand, (act_dim,), minval=-1.0, maxval=1.0)
        action = jnp.where(step < run.random_steps, random_action, policy_action)
        next_obs, next_state, reward, terminated, truncated, info = env.step(
            k_env, state, action, run.episode_params
        )
        end = info["stage_success"] if static.bootstrap_on_timeout else info["stage_terminal"]
        transition = Batch(
            obs=obs,
            action=action,
            reward=reward,
            next_obs=next_obs,
            discount_mask=1.0 - end.astype(jnp.float32),
            stage=info["stage"],
        )
        done = terminated | truncated
        ep_params = episode_params_fn(static, stage_pool)(k_ep, params)
        _, reset_state = env.reset(k_reset, ep_params)
        solved = next_state.stages_solved
        run = run.replace(
            buffer=buffer_add(run.buffer, transition),
            env_state=select(done, reset_state, next_state),
            episode_params=select(done, ep_params, run.episode_params),
            episodes=run.episodes + done,
            stages_solved_sum=run.stages_solved_sum + jnp.where(done, solved, 0),
            all_solved_sum=run.all_solved_sum + (done & (solved >= run.episode_params.num_stages)),
        )
        physics = {k: v.astype(jnp.float32) for k, v in info.items() if k.startswith("physics/")}
        return run, (reward, state.stage, physics)

    def chunk(
        run: RunState,
        step0: jax.Array,
        anchors: Anchors,
        coefs: RetentionCoefs,
        hyper: SACHyper,
        params: SequenceParams,
        stage_pool: jax.Array,
    ) -> tuple[RunState, dict[str, Any]]:
        key, k_eval, k_loop = jax.random.split(run.key, 3)
        run = run.replace(
            key=key,
            episodes=jnp.zeros_like(run.episodes),
            stages_solved_sum=jnp.zeros_like(run.stages_solved_sum),
            all_solved_sum=jnp.zeros_like(run.all_solved_sum),
        )
        evals = evaluate(run.sac.actor_params, params, k_eval)

        def iteration(run, xs):
            it, key = xs
            k_env, k_upd = jax.random.split(key)
            base = step0 + it * static.update_every
            steps = base + jnp.arange(static.update_every)
            run, (rewards, stages, physics) = jax.lax.scan(
                lambda r, x: env_step(r, x, params, stage_pool),
                run,
                (steps, jax.random.split(k_env, static.update_every)),
            )
            do_update = base + static.update_every > static.update_after
            sac, metrics = burst(run.sac, run.buffer, anchors, coefs, hyper, k_upd, do_update)
            run = run.replace(sac=sac)
            coverage = stage_coverage(stages, env.num_heads)
            metrics = {**metrics, "reward": jnp.mean(rewards)}
            metrics |= {k: jnp.mean(v) for k, v in physics.items()}  # step fractions
            return run, (metrics, coverage)

        run, (metrics, coverage) = jax.lax.scan(
            iteration, run, (jnp.arange(n_iters), jax.random.split(k_loop, n_iters))
        )
        out = {
            "eval": evals,
            "train": jax.tree.map(jnp.mean, metrics),
            "train_coverage": jnp.mean(coverage, axis=0),
            "train_episodes": run.episodes,
            "train_stages_solved": run.stages_solved_sum / jnp.maximum(run.episodes, 1),
            "train_all_solved": run.all_solved_sum / jnp.maximum(run.episodes, 1),
        }
        return run, out

    return chunk, evaluate
