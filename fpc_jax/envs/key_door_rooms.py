"""KeyDoorRooms: a pure-JAX gridworld of rooms behind locked doors (Montezuma-like), a room a stage.

Close rooms put the key and door at the top, Far rooms mirror both to the bottom; only a per-room
colour cue tells them apart. Design, observation layout, measured numbers: docs/key_door_rooms.md.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.envs.registry import register
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, SequenceState, subsequence_params

FLOOR, WALL, KEY, DOOR = 0, 1, 2, 3  # cell classes of the egocentric window
NUM_CELL_TYPES = 4
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_SIZE = 4
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (d_row, d_col) per action; row 0 is the top wall
DEFAULT_T = 50
DEFAULT_BETA = 0.1
_STATIC = ("num_rooms", "height", "width", "view")
_SEQUENCE_FIELDS = ("T", "beta")


@struct.dataclass
class RoomsParams:
    """Per-room layout ([K, ...] int32, (row, col) with the interior at rows 1..H, cols 1..W)."""

    start: jax.Array  # [K, 2] the agent's entry cell
    door_row: jax.Array  # [K] row of the locked door in the right wall (col W + 1)
    key_lo: jax.Array  # [K, 2] key region, inclusive corner (top-left)
    key_hi: jax.Array  # [K, 2] key region, inclusive corner (bottom-right)
    cue_code: jax.Array  # [K] float32 room colour code; the cue feature is cue * cue_code[k]
    cue: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.5))
    key_reward: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.2))


@struct.dataclass
class RoomState:
    pos: jax.Array  # int32 [2] agent cell
    key_pos: jax.Array  # int32 [2] key cell (jittered at reset)
    door: jax.Array  # int32 [2] door cell, (door_row[k], W + 1)
    has_key: jax.Array  # bool
    room: jax.Array  # int32 global room (stage) id


def window_cells(state: RoomState, height: int, width: int, view: int) -> jax.Array:
    """Cell classes [view, view] around the agent (centre); outside the room reads as WALL."""
    off = jnp.arange(view) - view // 2
    rows = state.pos[0] + off[:, None]
    cols = state.pos[1] + off[None, :]
    inside = (rows >= 1) & (rows <= height) & (cols >= 1) & (cols <= width)
    is_door = (rows == state.door[0]) & (cols == state.door[1])
    is_key = (rows == state.key_pos[0]) & (cols == state.key_pos[1]) & ~state.has_key
    cells = jnp.where(inside, FLOOR, WALL)
    return jnp.where(is_door, DOOR, jnp.where(is_key, KEY, cells)).astype(jnp.int32)


class KeyDoorRooms:
    """Sub-task family: stage k = room k; pick up the key, then walk into the door (success).

    The action is a float vector of length 4 (one-hot over up, down, left, right); the room takes
    its argmax, so logits or probabilities work too. Observation (float32): the one-hot window
    ``[view, view, 4]`` flattened row-major, then ``has_key``, then the cue.
    """

    action_size = ACTION_SIZE

    def __init__(self, num_rooms: int = 4, height: int = 5, width: int = 7, view: int = 5):
        if num_rooms < 3:
            raise ValueError(f"num_rooms must be >= 3 (the last two are Far), got {num_rooms}")
        if height < 3 or width < 4:
            raise ValueError(f"the room interior must be >= 3 x 4, got {height} x {width}")
        if view < 1 or view % 2 == 0:
            raise ValueError(f"view must be odd and >= 1, got {view}")
        self.num_stages = num_rooms
        self.height, self.width, self.view = height, width, view
        self.observation_size = view * view * NUM_CELL_TYPES + 2
        self.far_stages = (num_rooms - 2, num_rooms - 1)
        self.close_stages = tuple(range(num_rooms - 2))

    def default_params(self) -> RoomsParams:
        """Close: key in the top rows, door at the top; Far: the same mirrored to the bottom."""
        h, w = self.height, self.width
        band = max(1, (h - 1) // 2)  # key rows: the band above (Close) / below (Far) the entry row
        far = jnp.arange(self.num_stages) >= self.num_stages - 2
        col_lo = min(3, w - 1)
        key_lo = jnp.where(far[:, None], jnp.array([h - band + 1, col_lo]), jnp.array([1, col_lo]))
        key_hi = jnp.where(far[:, None], jnp.array([h, w - 1]), jnp.array([band, w - 1]))
        return RoomsParams(
            start=jnp.tile(jnp.array([(h + 1) // 2, 1], jnp.int32), (self.num_stages, 1)),
            door_row=jnp.where(far, h, 1).astype(jnp.int32),
            key_lo=key_lo.astype(jnp.int32),
            key_hi=key_hi.astype(jnp.int32),
            cue_code=jnp.where(far, -1.0, 1.0).astype(jnp.float32),
        )

    def observe(self, state: RoomState, params: RoomsParams) -> jax.Array:
        cells = window_cells(state, self.height, self.width, self.view)
        onehot = jax.nn.one_hot(cells, NUM_CELL_TYPES, dtype=jnp.float32).reshape(-1)
        cue = params.cue * params.cue_code[state.room]
        return jnp.concatenate([onehot, state.has_key.astype(jnp.float32)[None], cue[None]])

    def reset(
        self, key: jax.Array, params: RoomsParams, stage: jax.Array
    ) -> tuple[jax.Array, RoomState]:
        lo, hi = params.key_lo[stage], params.key_hi[stage]
        key_pos = jax.random.randint(key, (2,), lo, hi + 1, dtype=jnp.int32)
        state = RoomState(
            pos=params.start[stage],
            key_pos=key_pos,
            door=jnp.stack([params.door_row[stage], jnp.int32(self.width + 1)]),
            has_key=jnp.bool_(False),
            room=jnp.asarray(stage, jnp.int32),
        )
        return self.observe(state, params), state

    def step(
        self,
        key: jax.Array,
        state: RoomState,
        action: jax.Array,
        params: RoomsParams,
        stage: jax.Array,
    ) -> tuple[jax.Array, RoomState, jax.Array, jax.Array]:
        """Move one cell; walls (and the door without the key) block; key pickup; door = success.

        Reward: ``key_reward`` on the pickup step, 1 on the success step, else 0.
        """
        del key, stage
        chex.assert_shape(action, (ACTION_SIZE,))
        target = state.pos + jnp.asarray(MOVES, jnp.int32)[jnp.argmax(action)]
        inside = (target[0] >= 1) & (target[0] <= self.height)
        inside &= (target[1] >= 1) & (target[1] <= self.width)
        success = jnp.all(target == state.door) & state.has_key
        pos = jnp.where(inside | success, target, state.pos)
        got_key = ~state.has_key & jnp.all(pos == state.key_pos)
        state = state.replace(pos=pos, has_key=state.has_key | got_key)
        reward = jnp.where(success, 1.0, params.key_reward * got_key).astype(jnp.float32)
        return self.observe(state, params), state, reward, success


def oracle_action(sub_state: RoomState) -> jax.Array:
    """Scripted oracle on the true state: walk to the key, then to the door (rows first).

    In an obstacle-free room this is a shortest path: Manhattan(start, key) + Manhattan(key, door).
    """
    target = jnp.where(sub_state.has_key, sub_state.door, sub_state.key_pos)
    d = target - sub_state.pos
    a = jnp.where(d[0] < 0, UP, jnp.where(d[0] > 0, DOWN, jnp.where(d[1] < 0, LEFT, RIGHT)))
    return jax.nn.one_hot(a, ACTION_SIZE, dtype=jnp.float32)


def oracle_policy(state: SequenceState, params: SequenceParams) -> jax.Array:
    """The oracle acting on a KeyDoorRooms sequence state (reads the hidden key position)."""
    del params
    return oracle_action(state.sub)


def make_key_door_rooms(
    num_rooms: int = 4, height: int = 5, width: int = 7, view: int = 5
) -> SequenceEnv:
    sub = KeyDoorRooms(num_rooms, height, width, view)
    n_close = len(sub.close_stages)
    names = [f"close_{string.ascii_lowercase[i]}" for i in range(n_close)] + ["far_a", "far_b"]
    return SequenceEnv(
        "key_door_rooms",
        sub,
        default_T=DEFAULT_T,
        default_beta=DEFAULT_BETA,
        stage_names=names,
        close_stages=sub.close_stages,
        far_stages=sub.far_stages,
    )


@register("key_door_rooms")
def key_door_rooms(**overrides: Any) -> tuple[SequenceEnv, SequenceParams]:
    """Factory. Static: num_rooms, height, width, view; dynamic: T, beta, stage_ids and any
    RoomsParams field (a scalar broadcasts over a per-room field)."""
    env = make_key_door_rooms(**{k: int(overrides.pop(k)) for k in _STATIC if k in overrides})
    params = env.default_params()
    room_fields = tuple(f.name for f in dataclasses.fields(RoomsParams))
    valid = (*_STATIC, *_SEQUENCE_FIELDS, "stage_ids", *room_fields)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown key_door_rooms override(s) {unknown}; valid: {', '.join(valid)}")
    sub_updates = {}
    for name, value in overrides.items():
        if name == "stage_ids":
            continue
        current = getattr(params if name in _SEQUENCE_FIELDS else params.sub, name)
        new = jnp.asarray(value, current.dtype)
        if new.ndim == 0 and current.ndim > 0:
            new = jnp.broadcast_to(new, current.shape)
        if new.shape != current.shape:
            raise ValueError(f"override {name!r} must have shape {current.shape}, got {new.shape}")
        if name in _SEQUENCE_FIELDS:
            params = params.replace(**{name: new})
        else:
            sub_updates[name] = new
    params = params.replace(sub=params.sub.replace(**sub_updates))
    if "stage_ids" in overrides:
        params = subsequence_params(params, overrides["stage_ids"])
    validate_params(params, env.subtask)
    return env, params


def validate_params(params: SequenceParams, subtask: KeyDoorRooms) -> None:
    """Raise ValueError for host-side (concrete) params outside the env's domain."""
    p, h, w = params.sub, subtask.height, subtask.width
    size = jnp.array([h, w])
    start_in_key = jnp.all((p.start >= p.key_lo) & (p.start <= p.key_hi), axis=1)
    checks = {
        "T must be >= 1": int(params.T) >= 1,
        "beta must be >= 0": float(params.beta) >= 0,
        "start must be inside the interior": bool(jnp.all((p.start >= 1) & (p.start <= size))),
        "key region must be inside the interior with key_lo <= key_hi": bool(
            jnp.all((p.key_lo >= 1) & (p.key_lo <= p.key_hi) & (p.key_hi <= size))
        ),
        "start must be outside the key region": not bool(jnp.any(start_in_key)),
        f"door_row must be in [1, {h}]": bool(jnp.all((p.door_row >= 1) & (p.door_row <= h))),
        "key_reward must be >= 0": float(p.key_reward) >= 0,
    }
    problems = [msg for msg, ok in checks.items() if not ok]
    if problems:
        raise ValueError("invalid key_door_rooms params: " + "; ".join(problems))
