"""The PPO training program over a pure-JAX stitched env: rollouts, GAE and updates in one scan.

``make_train_chunk(env, static, config) -> (chunk, evaluate)`` follows the SAC agent's contract
(fpc_jax/agents/sac/train.py): ``chunk(run_state, step0, anchors, coefs, hyper, params,
stage_pool)`` runs ``static.steps_per_chunk`` env transitions (summed over the ``num_envs``
parallel envs) of ONE run (unbatched; ``vmap`` it over runs) and evaluates at the chunk start.
Each iteration collects ``num_steps`` steps of ``num_envs`` envs, computes GAE (plus RND's
intrinsic stream when on) and does ``epochs`` x ``minibatches`` Adam updates (Schulman et al. 2017;
cleanrl / purejaxrl ``ppo.py`` layout). The env's action is a one-hot float vector.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.ppo.anchors import PPOAnchors
from fpc_jax.agents.ppo.losses import PPOBatch, gae, rnd_error
from fpc_jax.agents.ppo.networks import PPOConfig, make_policy, make_ppo_networks, sample_action
from fpc_jax.agents.ppo.update import (
    PPOHyper,
    PPOTrainState,
    init_train_state,
    train_state_from_params,
    update_epochs,
)
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, single_stage_params
from fpc_jax.retention.penalties import RetentionCoefs

PyTree = Any

__all__ = [
    "LoopStatic",
    "PPOHyper",
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

EVAL_MODES = ("sample", "greedy")
RND_OBS_CLIP = 5.0


@dataclasses.dataclass(frozen=True)
class LoopStatic:
    """Loop shapes and schedule (static: changing them recompiles). CPU-scale defaults; the
    paper's Montezuma run is ``num_envs=128, num_steps=128, epochs=4`` (docs/ppo_design.md).

    - ``episode_mode``: ``"sequence"`` plays the whole task from its start (fine-tuning),
      ``"single"`` plays one stage drawn from ``stage_pool`` per episode (pre-training).
    - ``eval_mode``: ``"sample"`` (default) acts by sampling pi, as PPO evaluations do for a
      stochastic policy; ``"greedy"`` takes its argmax.
    - ``bootstrap_on_timeout``: a stage time-out is a true terminal by default (the paper; see
      docs/sequence_semantics.md); True bootstraps from the final observation's value.
    - ``stage_end_terminal``: a mid-sequence stage success cuts the value trace (SAC's
      RoboticSequence semantics); by default False, the episode is one MDP as in Montezuma.
    """

    num_envs: int = 16
    num_steps: int = 64
    epochs: int = 4
    minibatches: int = 4
    steps_per_chunk: int = 4_096
    eval_episodes: int = 10
    stage_horizon: int = 200  # static upper bound on the stage time limit T (eval scan length)
    eval_mode: str = "sample"
    episode_mode: str = "sequence"
    bootstrap_on_timeout: bool = False
    stage_end_terminal: bool = False
    normalize_advantages: bool = True
    clip_value_loss: bool = True

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "epochs", "minibatches", "eval_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LoopStatic.{name} must be a positive int, got {value!r}")
        if self.steps_per_chunk < 1 or self.steps_per_chunk % self.rollout_steps:
            raise ValueError(
                f"steps_per_chunk ({self.steps_per_chunk}) must be a positive multiple of "
                f"num_envs * num_steps ({self.rollout_steps})"
            )
        if self.rollout_steps % self.minibatches:
            raise ValueError(
                f"num_envs * num_steps ({self.rollout_steps}) must split into "
                f"{self.minibatches} minibatches"
            )
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {self.eval_mode!r}")
        if self.episode_mode not in ("sequence", "single"):
            raise ValueError(
                f"episode_mode must be 'sequence' or 'single', got {self.episode_mode!r}"
            )

    @classmethod
    def montezuma(cls, iterations_per_chunk: int = 8, **overrides: Any) -> LoopStatic:
        """The paper's Montezuma PPO+RND loop (I appendix; Burda et al. 2018): 128 envs x 128
        steps, 4 epochs of 4 minibatches, unclipped value loss as in RND's code;
        ``iterations_per_chunk`` rollouts per chunk."""
        settings: dict[str, Any] = dict(
            num_envs=128, num_steps=128, epochs=4, minibatches=4, clip_value_loss=False
        )
        settings.update(overrides)
        steps = settings["num_envs"] * settings["num_steps"] * iterations_per_chunk
        return cls(**{"steps_per_chunk": steps, **settings})

    @property
    def rollout_steps(self) -> int:
        """Env transitions per iteration: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def iterations_per_chunk(self) -> int:
        return self.steps_per_chunk // self.rollout_steps


@struct.dataclass
class RunningMeanStd:
    """Running mean / variance of a stream of arrays (Chan et al. parallel update; RND's
    observation and intrinsic-return normalisers, Burda et al. 2018 sec. 2.4)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...] = ()) -> RunningMeanStd:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def update(self, x: jax.Array) -> RunningMeanStd:
        """Fold in a batch ``x`` (N, *shape)."""
        chex.assert_shape(x, (None, *self.mean.shape))
        n = jnp.float32(x.shape[0])
        b_mean, b_var = jnp.mean(x, axis=0), jnp.var(x, axis=0)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        return RunningMeanStd(self.mean + delta * n / total, m2 / total, total)


@struct.dataclass
class RNDStats:
    """RND normalisers of one run: observations, intrinsic returns, and the per-env running
    discounted intrinsic return whose std scales the intrinsic reward."""

    obs: RunningMeanStd
    int_return: RunningMeanStd
    return_filter: jax.Array  # (num_envs,)


@struct.dataclass
class RunState:
    """Everything one run carries between chunks (checkpointed as a whole for resume).

    ``env_state`` and ``episode_params`` have a leading ``num_envs`` axis."""

    ppo: PPOTrainState
    env_state: PyTree
    episode_params: SequenceParams
    rnd: RNDStats
    key: jax.Array
    episodes: jax.Array  # training episodes finished in the current chunk
    stages_solved_sum: jax.Array  # sum over those episodes of stages solved
    all_solved_sum: jax.Array  # number of those episodes that solved every stage

    @property
    def actor_params(self) -> PyTree:
        return self.ppo.actor_params


def _select(pred: jax.Array, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def episode_params_fn(static: LoopStatic, stage_pool: jax.Array) -> Callable[..., SequenceParams]:
    """Params of a new training episode: the whole sequence, or one stage drawn from the pool."""

    def fn(key: jax.Array, params: SequenceParams) -> SequenceParams:
        if static.episode_mode == "sequence":
            return params
        return single_stage_params(params, jax.random.choice(key, stage_pool))

    return fn


def init_run_state(
    env: SequenceEnv,
    static: LoopStatic,
    train_state: PPOTrainState,
    params: SequenceParams,
    stage_pool: jax.Array,
    key: jax.Array,
) -> RunState:
    """Fresh run: ``num_envs`` envs reset, RND normalisers at their prior, counters zero
    (jitted; cached per env and ``static``)."""
    return _init_run_state(
        env, static, train_state, params, jnp.asarray(stage_pool, jnp.int32), key
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_run_state(
    env: SequenceEnv,
    static: LoopStatic,
    train_state: PPOTrainState,
    params: SequenceParams,
    stage_pool: jax.Array,
    key: jax.Array,
) -> RunState:
    key, k_ep, k_reset = jax.random.split(key, 3)
    new_params = episode_params_fn(static, stage_pool)
    ep_params = jax.vmap(new_params, in_axes=(0, None))(
        jax.random.split(k_ep, static.num_envs), params
    )
    _, env_state = jax.vmap(env.reset)(jax.random.split(k_reset, static.num_envs), ep_params)
    rnd = RNDStats(
        obs=RunningMeanStd.create((train_state.config.obs_dim,)),
        int_return=RunningMeanStd.create(),
        return_filter=jnp.zeros((static.num_envs,), jnp.float32),
    )
    zero = jnp.zeros((), jnp.int32)
    return RunState(train_state, env_state, ep_params, rnd, key, zero, zero, zero)


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


def gae_end_flags(
    static: LoopStatic, terminated: jax.Array, truncated: jax.Array, stage_success: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Map the stitched env's end signals to GAE's ``(terminated, truncated)``
    (docs/ppo_design.md): the final stage's success terminates; a stage time-out (the env's
    ``truncated``) terminates unless ``bootstrap_on_timeout``, then it truncates (bootstrap from
    the final observation); a mid-sequence stage success continues the episode's value trace
    unless ``stage_end_terminal``."""
    mid_success = stage_success & ~terminated
    gae_term = (
        terminated
        | (truncated & (not static.bootstrap_on_timeout))
        | (mid_success & static.stage_end_terminal)
    )
    return gae_term, truncated & static.bootstrap_on_timeout


@struct.dataclass
class Rollout:
    """``num_steps`` x ``num_envs`` transitions (leading axes (T, N))."""

    obs: jax.Array
    stage: jax.Array
    action: jax.Array
    logp: jax.Array
    value: jax.Array  # (T, N, num_values) at obs
    reward: jax.Array
    terminated: jax.Array  # no bootstrap (GAE)
    truncated: jax.Array  # bootstrap from next_obs, cut the trace (GAE)
    next_obs: jax.Array  # the true next observation (before an auto-reset)
    next_stage: jax.Array


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

    def env_step(ts: PPOTrainState, env_state, ep_params, keys, params, stage_pool):
        """One step of one env with auto-reset (``keys``: 4 keys); returns the transition."""
        k_act, k_env, k_ep, k_reset = keys
        obs, stage = env_state.obs, env_state.stage
        action, logp = sample_action(k_act, nets.actor_apply(ts.actor_params, obs, stage))
        value = nets.critic_values(ts.critic_params, obs, stage)
        one_hot = jax.nn.one_hot(action, config.num_actions, dtype=jnp.float32)
        next_obs, next_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, one_hot, ep_params
        )
        gae_term, gae_trunc = gae_end_flags(static, terminated, truncated, info["stage_success"])
        done = terminated | truncated
        new_ep_params = episode_params_fn(static, stage_pool)(k_ep, params)
        _, reset_state = env.reset(k_reset, new_ep_params)
        transition = Rollout(
            obs=obs,
            stage=stage,
            action=action,
            logp=logp,
            value=value,
            reward=reward,
            terminated=gae_term,
            truncated=gae_trunc,
            next_obs=next_obs,
            next_stage=next_state.stage,
        )
        solved = next_state.stages_solved
        stats = (done, jnp.where(done, solved, 0), done & (solved >= ep_params.num_stages))
        return (
            _select(done, reset_state, next_state),
            _select(done, new_ep_params, ep_params),
            transition,
            stats,
        )

    vmapped_step = jax.vmap(env_step, in_axes=(None, 0, 0, 0, None, None))
    critic_tn = jax.vmap(jax.vmap(nets.critic_values, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
    rnd_tn = jax.vmap(jax.vmap(nets.rnd_apply, in_axes=(None, 0)), in_axes=(None, 0))
    gae_n = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)

    def intrinsic(ts: PPOTrainState, rnd: RNDStats, roll: Rollout, hyper: PPOHyper):
        """Normalised intrinsic rewards (T, N) of the rollout, the RND inputs, new stats."""
        obs_stats = rnd.obs.update(roll.next_obs.reshape(-1, config.obs_dim))
        rnd_obs = jnp.clip(
            (roll.next_obs - obs_stats.mean) / jnp.sqrt(obs_stats.var + 1e-8),
            -RND_OBS_CLIP,
            RND_OBS_CLIP,
        )
        raw = rnd_error(rnd_tn(ts.rnd_predictor, rnd_obs), rnd_tn(ts.rnd_target, rnd_obs))

        def filt(f, r):
            f = f * hyper.gamma_int + r
            return f, f

        return_filter, returns = jax.lax.scan(filt, rnd.return_filter, raw)
        ret_stats = rnd.int_return.update(returns.reshape(-1))
        reward = raw / jnp.sqrt(ret_stats.var + 1e-8)
        return reward, rnd_obs, RNDStats(obs_stats, ret_stats, return_filter)

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
        next_values = critic_tn(ts.critic_params, roll.next_obs, roll.next_stage)
        adv, ret = gae_n(
            roll.reward,
            roll.value[..., 0],
            next_values[..., 0],
            roll.terminated,
            roll.truncated,
            hyper.gamma,
            hyper.gae_lambda,
        )
        metrics = {"train/reward": jnp.mean(roll.reward)}
        rnd = run.rnd
        if config.rnd:
            r_int, rnd_obs, rnd = intrinsic(ts, run.rnd, roll, hyper)
            last_v = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))(
                ts.critic_params, env_state.obs, env_state.stage
            )
            v_int = roll.value[..., 1]
            next_v_int = jnp.concatenate([v_int[1:], last_v[None, :, 1]])
            never = jnp.zeros_like(roll.terminated)
            adv_int, ret_int = gae_n(
                r_int, v_int, next_v_int, never, never, hyper.gamma_int, hyper.gae_lambda
            )
            advantage = hyper.ext_coef * adv + hyper.int_coef * adv_int
            returns = jnp.stack([ret, ret_int], axis=-1)
            metrics["rnd/int_reward"] = jnp.mean(r_int)
        else:
            rnd_obs = roll.next_obs
            advantage = adv
            returns = ret[..., None]
        batch = PPOBatch(
            obs=roll.obs,
            stage=roll.stage,
            action=roll.action,
            logp=roll.logp,
            value=roll.value,
            returns=returns,
            advantage=advantage,
            rnd_obs=rnd_obs,
        )
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
        return run, {**upd_metrics, **metrics}

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
        run, metrics = jax.lax.scan(
            lambda r, k: iteration(r, k, anchors, coefs, hyper, params, stage_pool),
            run,
            jax.random.split(k_loop, n_iters),
        )
        episodes = jnp.maximum(run.episodes, 1)
        out = {
            "eval": evals,
            "train": jax.tree.map(jnp.mean, metrics),
            "train_episodes": run.episodes,
            "train_stages_solved": run.stages_solved_sum / episodes,
            "train_all_solved": run.all_solved_sum / episodes,
        }
        return run, out

    return chunk, evaluate
