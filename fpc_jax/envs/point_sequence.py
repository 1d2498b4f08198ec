"""PointSequence: a pure-JAX 2-D point-mass stand-in for RoboticSequence (4 stitched reach stages).

Design, constants and the mapping to hammer/push/peg-unplug-side/push-wall: docs/toy_task.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.envs.registry import register
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, SequenceState, subsequence_params

NUM_STAGES = 4
STAGE_NAMES = ("close_east", "close_north", "far_west", "far_south")
CLOSE_STAGES = (0, 1)
FAR_STAGES = (2, 3)
DEFAULT_T = 100
OBS_CORE = 4  # pos (2) + vel (2)
GOAL_SLOT = 2  # zeros unless goal_visible, like Meta-World's hidden goal in MT1
SUB_OBS_SIZE = OBS_CORE + GOAL_SLOT
ACTION_SIZE = 2


def _default_goals() -> jax.Array:
    # one direction per stage: Close east / north, Far west / south (Far goals further out)
    return jnp.asarray([[0.5, 0.0], [0.0, 0.5], [-0.7, 0.0], [0.0, -0.7]], jnp.float32)


@struct.dataclass
class PointParams:
    """Per-stage layout ([K, ...] arrays) and point-mass physics; every field is an array leaf."""

    goal: jax.Array = struct.field(default_factory=_default_goals)  # [K, 2] goal centres
    start: jax.Array = struct.field(default_factory=lambda: jnp.zeros((NUM_STAGES, 2)))  # [K, 2]
    goal_radius: jax.Array = struct.field(default_factory=lambda: jnp.full((NUM_STAGES,), 0.05))
    action_angle: jax.Array = struct.field(default_factory=lambda: jnp.zeros((NUM_STAGES,)))
    start_noise: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.1))
    goal_noise: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.03))
    dt: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.1))
    damping: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.8))
    force: jax.Array = struct.field(default_factory=lambda: jnp.float32(1.0))
    reward_margin: jax.Array = struct.field(default_factory=lambda: jnp.float32(1.0))
    goal_visible: jax.Array = struct.field(default_factory=lambda: jnp.bool_(False))


@struct.dataclass
class PointState:
    pos: jax.Array  # [2] in [-1, 1]^2
    vel: jax.Array  # [2]
    goal: jax.Array  # [2] this stage's goal (jittered at reset)


def tolerance_long_tail(dist: jax.Array, radius: jax.Array, margin: jax.Array) -> jax.Array:
    """Meta-World ``tolerance(d, bounds=(0, radius), margin, sigmoid='long_tail')``.

    1 inside the radius, ``1 / (1 + 9 x^2)`` with ``x = (d - radius) / margin`` outside (0.1 at the
    margin, Meta-World's default value_at_margin); in (0, 1].
    """
    x = jnp.maximum(dist - radius, 0.0) / margin
    return 1.0 / (1.0 + 9.0 * x**2)


def _rotation(angle: jax.Array) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


def point_dynamics(
    pos: jax.Array, vel: jax.Array, action: jax.Array, angle: jax.Array, params: PointParams
) -> tuple[jax.Array, jax.Array]:
    """Semi-implicit Euler step of the damped point mass in the box [-1, 1]^2.

    ``v' = damping * v + force * dt * R(angle) clip(a, -1, 1)``, ``p' = clip(p + dt * v', -1, 1)``;
    a velocity component is zeroed where the box stops the point (inelastic wall).
    """
    chex.assert_shape([pos, vel, action], (2,))
    force = _rotation(angle) @ jnp.clip(action, -1.0, 1.0)
    vel_tp1 = params.damping * vel + params.force * params.dt * force
    raw = pos + params.dt * vel_tp1
    pos_tp1 = jnp.clip(raw, -1.0, 1.0)
    vel_tp1 = jnp.where(raw == pos_tp1, vel_tp1, 0.0)
    return pos_tp1, vel_tp1


class PointReach:
    """Sub-task family: stage k = reach the hidden goal k from a random start near ``start[k]``."""

    observation_size = SUB_OBS_SIZE
    action_size = ACTION_SIZE
    num_stages = NUM_STAGES

    def default_params(self) -> PointParams:
        return PointParams()

    def observe(self, state: PointState, params: PointParams) -> jax.Array:
        goal_slot = jnp.where(params.goal_visible, state.goal, 0.0)
        return jnp.concatenate([state.pos, state.vel, goal_slot]).astype(jnp.float32)

    def reset(
        self, key: jax.Array, params: PointParams, stage: jax.Array
    ) -> tuple[jax.Array, PointState]:
        key_start, key_goal = jax.random.split(key)
        start = params.start[stage] + params.start_noise * jax.random.uniform(
            key_start, (2,), minval=-1.0, maxval=1.0
        )
        goal = params.goal[stage] + params.goal_noise * jax.random.uniform(
            key_goal, (2,), minval=-1.0, maxval=1.0
        )
        state = PointState(
            pos=jnp.clip(start, -1.0, 1.0).astype(jnp.float32),
            vel=jnp.zeros(2, jnp.float32),
            goal=goal.astype(jnp.float32),
        )
        return self.observe(state, params), state

    def step(
        self,
        key: jax.Array,
        state: PointState,
        action: jax.Array,
        params: PointParams,
        stage: jax.Array,
    ) -> tuple[jax.Array, PointState, jax.Array, jax.Array]:
        del key
        pos, vel = point_dynamics(state.pos, state.vel, action, params.action_angle[stage], params)
        state = state.replace(pos=pos, vel=vel)
        dist = jnp.linalg.norm(pos - state.goal)
        radius = params.goal_radius[stage]
        reward = tolerance_long_tail(dist, radius, params.reward_margin)
        return self.observe(state, params), state, reward, dist <= radius


def expert_action(sub_state: PointState, stage: jax.Array, params: PointParams) -> jax.Array:
    """Scripted expert: the action in [-1, 1]^2 whose next velocity halves the goal distance."""
    v_des = 0.5 * (sub_state.goal - sub_state.pos) / params.dt
    force = (v_des - params.damping * sub_state.vel) / (params.force * params.dt)
    action = _rotation(params.action_angle[stage]).T @ force
    return jnp.clip(action, -1.0, 1.0)


def expert_policy(state: SequenceState, params: SequenceParams) -> jax.Array:
    """The scripted expert acting on a PointSequence state (uses the hidden goal)."""
    return expert_action(state.sub, state.stage, params.sub)


_SEQUENCE_FIELDS = ("T", "beta")


def make_point_sequence() -> SequenceEnv:
    return SequenceEnv(
        "point_sequence",
        PointReach(),
        default_T=DEFAULT_T,
        stage_names=STAGE_NAMES,
        close_stages=CLOSE_STAGES,
        far_stages=FAR_STAGES,
    )


@register("point_sequence")
def point_sequence(**overrides: Any) -> tuple[SequenceEnv, SequenceParams]:
    """Factory: overrides name a sequence field (T, beta, stage_ids) or a PointParams field."""
    env = make_point_sequence()
    params = env.default_params()
    point_fields = tuple(f.name for f in dataclasses.fields(PointParams))
    valid = (*_SEQUENCE_FIELDS, "stage_ids", *point_fields)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown point_sequence override(s) {unknown}; valid: {', '.join(valid)}")
    sub_updates = {}
    for name, value in overrides.items():
        if name == "stage_ids":
            continue
        current = getattr(params if name in _SEQUENCE_FIELDS else params.sub, name)
        new = jnp.asarray(value, current.dtype)
        if new.shape != current.shape:
            new = jnp.broadcast_to(new, current.shape) if new.ndim == 0 else new
        if new.shape != current.shape:
            raise ValueError(f"override {name!r} must have shape {current.shape}, got {new.shape}")
        if name in _SEQUENCE_FIELDS:
            params = params.replace(**{name: new})
        else:
            sub_updates[name] = new
    params = params.replace(sub=params.sub.replace(**sub_updates))
    if "stage_ids" in overrides:
        params = subsequence_params(params, overrides["stage_ids"])
    validate_params(params)
    return env, params


def validate_params(params: SequenceParams) -> None:
    """Raise ValueError for host-side (concrete) params outside the env's domain."""
    sub = params.sub
    checks = {
        "T must be >= 1": int(params.T) >= 1,
        "beta must be >= 0": float(params.beta) >= 0,
        "goal_radius must be > 0": bool(jnp.all(sub.goal_radius > 0)),
        "reward_margin must be > 0": float(sub.reward_margin) > 0,
        "dt must be > 0": float(sub.dt) > 0,
        "damping must be in [0, 1]": 0 <= float(sub.damping) <= 1,
        "start_noise must be >= 0": float(sub.start_noise) >= 0,
        "goal_noise must be >= 0": float(sub.goal_noise) >= 0,
    }
    problems = [msg for msg, ok in checks.items() if not ok]
    if problems:
        raise ValueError("invalid point_sequence params: " + "; ".join(problems))
