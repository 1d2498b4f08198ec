"""The PPO loop's per-run state and one auto-resetting env step: loop shapes (``LoopStatic``),
the run carried between chunks (``RunState``, RND normalisers), episode params, the stitched env's
end signals as GAE flags, and the transition a step records (``Rollout``). The training program
built on them is fpc_jax/agents/ppo/train.py.
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

from fpc_jax.agents.ppo.networks import PPOConfig, PPONetworks, sample_action
from fpc_jax.agents.ppo.update import PPOTrainState
from fpc_jax.envs.sequence import (
    SequenceEnv,
    SequenceParams,
    episode_params_sampler,
    select,
)

PyTree = Any

EVAL_MODES = ("sample", "greedy")


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


def init_rnd_stats(obs_dim: int, num_envs: int) -> RNDStats:
    """Fresh RND normalisers of one run with ``num_envs`` envs."""
    return RNDStats(
        obs=RunningMeanStd.create((obs_dim,)),
        int_return=RunningMeanStd.create(),
        return_filter=jnp.zeros((num_envs,), jnp.float32),
    )


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


def episode_params_fn(static: LoopStatic, stage_pool: jax.Array) -> Callable[..., SequenceParams]:
    """Params of a new training episode (``sequence.episode_params_sampler``)."""
    return episode_params_sampler(static.episode_mode, stage_pool)


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
    rnd = init_rnd_stats(train_state.config.obs_dim, static.num_envs)
    zero = jnp.zeros((), jnp.int32)
    return RunState(train_state, env_state, ep_params, rnd, key, zero, zero, zero)


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


def make_env_step(
    env: SequenceEnv, static: LoopStatic, config: PPOConfig, nets: PPONetworks
) -> Callable[..., tuple[PyTree, SequenceParams, Rollout, tuple[jax.Array, ...]]]:
    """``env_step(ts, env_state, ep_params, keys, params, stage_pool) -> (env_state, ep_params,
    transition, (done, stages_solved, all_solved))``: one step of one env acting by ``ts``'s
    sampled policy, with a same-step auto-reset into a new episode's params."""

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
            select(done, reset_state, next_state),
            select(done, new_ep_params, ep_params),
            transition,
            stats,
        )

    return env_step
