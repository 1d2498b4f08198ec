"""Generic stitching of pure-JAX sub-tasks into a stage sequence (RoboticSequence / StitchedEnv).

Implements docs/sequence_semantics.md, after Algorithm 1 of Wolczyk et al. 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


class SubTask(Protocol):
    """A parametric family of sub-tasks indexed by a global stage id (the head index).

    All stages share observation and action shapes. ``success`` is a bool scalar.
    """

    observation_size: int
    action_size: int
    num_stages: int

    def default_params(self) -> PyTree: ...

    def reset(
        self, key: jax.Array, params: PyTree, stage: jax.Array
    ) -> tuple[jax.Array, PyTree]: ...

    def step(
        self, key: jax.Array, state: PyTree, action: jax.Array, params: PyTree, stage: jax.Array
    ) -> tuple[jax.Array, PyTree, jax.Array, jax.Array]: ...


@struct.dataclass
class SequenceParams:
    """Sequence definition; every field is an array leaf, so params vmap (e.g. over stages).

    ``stage_ids`` always has one entry per head (length ``num_heads``); only the first
    ``num_stages`` are played, so a single stage or a sub-sequence keeps the same shapes.
    """

    stage_ids: jax.Array  # int32 [num_heads]: global head index of each position
    num_stages: jax.Array  # int32 scalar: how many positions of stage_ids are played
    sub: PyTree  # sub-task params
    T: jax.Array = struct.field(default_factory=lambda: jnp.int32(200))
    beta: jax.Array = struct.field(default_factory=lambda: jnp.float32(1.5))


@struct.dataclass
class SequenceState:
    """Where an episode is: sequence position, head, stage timer, progress, sub-task state."""

    pos: jax.Array  # int32: position in the sequence, in [0, num_stages)
    stage: jax.Array  # int32: global head index, stage_ids[pos]
    t: jax.Array  # int32: steps taken in the current stage
    stages_solved: jax.Array  # int32: stages solved so far this episode
    done: jax.Array  # bool: episode over (terminated or truncated); further steps are no-ops
    obs: jax.Array  # float32: the last observation returned
    sub: PyTree  # sub-task state


def subsequence_params(params: SequenceParams, stage_ids: Sequence[int]) -> SequenceParams:
    """Params playing the given global stages in order (host-side; e.g. ``(2, 3)`` = Far pair)."""
    num_heads = params.stage_ids.shape[-1]
    ids = [int(k) for k in stage_ids]
    if not 1 <= len(ids) <= num_heads or not all(0 <= k < num_heads for k in ids):
        raise ValueError(f"stage_ids must be 1..{num_heads} ids in [0, {num_heads}), got {ids}")
    padded = ids + [ids[-1]] * (num_heads - len(ids))
    return params.replace(stage_ids=jnp.asarray(padded, jnp.int32), num_stages=jnp.int32(len(ids)))


def single_stage_params(params: SequenceParams, k: jax.Array | int) -> SequenceParams:
    """Params running global stage ``k`` alone with head ``k`` (jittable; vmap over ``k``)."""
    k = jnp.asarray(k, jnp.int32)
    return params.replace(
        stage_ids=jnp.full_like(params.stage_ids, k), num_stages=jnp.ones_like(params.num_stages)
    )


def select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """``on_true`` where ``pred`` else ``on_false``, leaf by leaf (an auto-reset's state choice)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def episode_params_sampler(
    episode_mode: str, stage_pool: jax.Array
) -> Callable[[jax.Array, SequenceParams], SequenceParams]:
    """Params of a new training episode: ``"sequence"`` plays ``params`` as they are, ``"single"``
    one stage drawn uniformly from ``stage_pool`` with its own head (pre-training on Far)."""

    def fn(key: jax.Array, params: SequenceParams) -> SequenceParams:
        if episode_mode == "sequence":
            return params
        return single_stage_params(params, jax.random.choice(key, stage_pool))

    return fn


class SequenceEnv:
    """Functional env stitching the stages of ``subtask`` (see docs/sequence_semantics.md)."""

    def __init__(
        self,
        name: str,
        subtask: SubTask,
        *,
        default_T: int = 200,
        default_beta: float = 1.5,
        stage_names: Sequence[str] | None = None,
        close_stages: Sequence[int] = (),
        far_stages: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.subtask = subtask
        self.num_heads = subtask.num_stages
        self.observation_size = subtask.observation_size + 1
        self.action_size = subtask.action_size
        self.stage_names = tuple(stage_names or (f"stage{k}" for k in range(self.num_heads)))
        self.close_stages = tuple(close_stages)
        self.far_stages = tuple(far_stages)
        self._default_T = default_T
        self._default_beta = default_beta

    def default_params(self) -> SequenceParams:
        return SequenceParams(
            stage_ids=jnp.arange(self.num_heads, dtype=jnp.int32),
            num_stages=jnp.int32(self.num_heads),
            sub=self.subtask.default_params(),
            T=jnp.int32(self._default_T),
            beta=jnp.float32(self._default_beta),
        )

    def _obs(self, sub_obs: jax.Array, t: jax.Array, params: SequenceParams) -> jax.Array:
        chex.assert_shape(sub_obs, (self.subtask.observation_size,))
        frac = t.astype(jnp.float32) / params.T.astype(jnp.float32)
        return jnp.concatenate([sub_obs.astype(jnp.float32), frac[None]])

    def reset(self, key: jax.Array, params: SequenceParams) -> tuple[jax.Array, SequenceState]:
        stage = params.stage_ids[0]
        sub_obs, sub_state = self.subtask.reset(key, params.sub, stage)
        obs = self._obs(sub_obs, jnp.int32(0), params)
        state = SequenceState(
            pos=jnp.int32(0),
            stage=stage,
            t=jnp.int32(0),
            stages_solved=jnp.int32(0),
            done=jnp.bool_(False),
            obs=obs,
            sub=sub_state,
        )
        return obs, state

    def step(
        self, key: jax.Array, state: SequenceState, action: jax.Array, params: SequenceParams
    ) -> tuple[jax.Array, SequenceState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        """One transition; stepping a finished episode returns it unchanged with zero reward."""
        chex.assert_shape(action, (self.action_size,))
        key_step, key_reset = jax.random.split(key)
        sub_obs, sub_state, r, success = self.subtask.step(
            key_step, state.sub, action, params.sub, state.stage
        )
        success = jnp.asarray(success, jnp.bool_)
        t = state.t + 1
        reward = jnp.where(success, params.beta * r * (params.T - t), r).astype(jnp.float32)
        is_last = state.pos >= params.num_stages - 1
        terminated = success & is_last
        time_out = ~success & (t >= params.T)
        advance = success & ~is_last

        next_pos = jnp.minimum(state.pos + 1, params.stage_ids.shape[-1] - 1)
        next_stage = params.stage_ids[next_pos]
        new_obs, new_sub = self.subtask.reset(key_reset, params.sub, next_stage)
        t_next = jnp.where(advance, 0, t)
        stepped = SequenceState(
            pos=jnp.where(advance, next_pos, state.pos),
            stage=jnp.where(advance, next_stage, state.stage),
            t=t_next,
            stages_solved=state.stages_solved + success.astype(jnp.int32),
            done=terminated | time_out,
            obs=self._obs(jnp.where(advance, new_obs, sub_obs), t_next, params),
            sub=select(advance, new_sub, sub_state),
        )
        live = ~state.done
        next_state = select(live, stepped, state)
        info = {
            "stage": state.stage,
            "stage_success": success & live,
            "stage_terminal": (success | time_out) & live,
            "stages_solved": next_state.stages_solved,
            "sub_reward": jnp.where(live, r, 0.0).astype(jnp.float32),
        }
        step_info = getattr(self.subtask, "step_info", None)  # physics flags (MJX), if any
        if step_info is not None:
            info.update({k: v & live for k, v in step_info(sub_state).items()})
        return (
            next_state.obs,
            next_state,
            jnp.where(live, reward, 0.0),
            terminated & live,
            time_out & live,
            info,
        )


def episode_metrics(stages_solved: jax.Array, params: SequenceParams) -> dict[str, jax.Array]:
    """The paper's episode metrics: fraction of stages solved and whether all were solved."""
    return {
        "stages_solved_frac": stages_solved / params.num_stages,
        "all_solved": stages_solved >= params.num_stages,
    }
