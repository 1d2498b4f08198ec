"""AppleRetrieval(c, M, T): the 1-D toy of Wolczyk et al. 2023 (Sec. 3.2), as pure JAX functions.

Home is x=0, the apple x=M. Phase 1: walk right to M; arriving there switches to Phase 2: walk back
to 0. Observation [1, -c] in Phase 1 and [1, c] in Phase 2. Reward +1 for a step in the
phase's correct direction, -1 otherwise. Success (terminated) = arriving at 0 in Phase 2;
truncated = T steps without success.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.envs.registry import register

LEFT, RIGHT = 0, 1


@struct.dataclass
class AppleParams:
    """Env variant; every field is an array leaf so (M, c) grids are a vmap axis."""

    c: jax.Array | float = 0.5
    M: jax.Array | int = 30
    T: jax.Array | int = 100
    start_phase: jax.Array | int = (
        1  # 2: start at x=M in Phase 2 (pre-training, Phase-2 competence)
    )


@struct.dataclass
class AppleState:
    x: jax.Array
    phase: jax.Array
    t: jax.Array


def observation(phase: jax.Array, c: jax.Array) -> jax.Array:
    """[1, -c] in Phase 1, [1, c] in Phase 2 (float32, shape (2,))."""
    sign = jnp.where(phase == 2, 1.0, -1.0)
    return jnp.stack([jnp.float32(1.0), sign * c]).astype(jnp.float32)


class AppleRetrieval:
    """Functional env (see ``fpc_jax.envs.base``). Actions: 0 = left, 1 = right."""

    name = "apple_retrieval"
    num_actions = 2
    obs_dim = 2

    def default_params(self) -> AppleParams:
        return AppleParams()

    def reset(self, key: jax.Array, params: AppleParams) -> tuple[jax.Array, AppleState]:
        del key  # deterministic start
        phase = jnp.asarray(params.start_phase, jnp.int32)
        x = jnp.where(phase == 2, jnp.asarray(params.M, jnp.int32), 0)
        state = AppleState(x=x, phase=phase, t=jnp.int32(0))
        return observation(phase, params.c), state

    def step(
        self, key: jax.Array, state: AppleState, action: jax.Array, params: AppleParams
    ) -> tuple[jax.Array, AppleState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        del key  # deterministic dynamics
        action = jnp.asarray(action, jnp.int32)
        correct = jnp.where(state.phase == 1, action == RIGHT, action == LEFT)
        reward = jnp.where(correct, 1.0, -1.0).astype(jnp.float32)
        m = jnp.asarray(params.M, jnp.int32)
        x = jnp.clip(state.x + 2 * action - 1, 0, m)
        reached_apple = (state.phase == 1) & (x == m)
        phase = jnp.where(reached_apple, 2, state.phase)
        t = state.t + 1
        terminated = (state.phase == 2) & (x == 0)
        truncated = (t >= params.T) & ~terminated
        new_state = AppleState(x=x, phase=phase, t=t)
        info = {"reached_apple": reached_apple, "x": x, "phase": phase}
        return observation(phase, params.c), new_state, reward, terminated, truncated, info


def validate_params(params: AppleParams) -> None:
    """Raise ValueError for host-side (concrete) params outside the env's domain."""
    m, t, c, sp = (jnp.asarray(v) for v in (params.M, params.T, params.c, params.start_phase))
    problems = []
    if jnp.any(m < 1):
        problems.append(f"M must be an integer >= 1, got {m}")
    if jnp.any(t < 1):
        problems.append(f"T must be an integer >= 1, got {t}")
    if not bool(jnp.all(jnp.isfinite(c))):
        problems.append(f"c must be finite, got {c}")
    if not bool(jnp.all((sp == 1) | (sp == 2))):
        problems.append(f"start_phase must be 1 or 2, got {sp}")
    if problems:
        raise ValueError("invalid AppleRetrieval params: " + "; ".join(problems))


@register("apple_retrieval")
def make_apple_retrieval(**overrides: float | int) -> tuple[AppleRetrieval, AppleParams]:
    """Registry factory: ``make("apple_retrieval", M=10, c=0.5)``."""
    valid = {"c", "M", "T", "start_phase"}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(
            f"unknown AppleRetrieval parameter(s) {sorted(unknown)}; valid: {sorted(valid)}"
        )
    for k in ("M", "T", "start_phase"):
        if k in overrides and int(overrides[k]) != overrides[k]:
            raise ValueError(f"AppleRetrieval {k} must be an integer, got {overrides[k]!r}")
    params = AppleParams(**overrides)
    validate_params(params)
    return AppleRetrieval(), params


def exact_outcome_probs(
    p_right_phase1: jax.Array,
    p_right_phase2: jax.Array,
    params: AppleParams,
    horizon: int,
    x_cap: int,
) -> tuple[jax.Array, jax.Array]:
    """Exact P(success) and P(reach Phase 2) within ``horizon`` steps, by dynamic programming.

    The observation depends only on the phase, so any policy of the observation is a random walk
    with one P(right) per phase; we propagate the distribution over (phase, x) instead of sampling.
    ``x_cap`` (static) bounds the positions and must exceed M + 1. Start follows
    ``params.start_phase`` exactly like ``reset``.
    """
    m = jnp.asarray(params.M, jnp.int32)
    t_limit = jnp.asarray(params.T, jnp.int32)
    idx = jnp.arange(x_cap)
    start2 = jnp.asarray(params.start_phase) == 2
    a1 = jnp.where(start2, 0.0, (idx == 0).astype(jnp.float32))
    a2 = jnp.where(start2, (idx == m).astype(jnp.float32), 0.0)
    p, q = p_right_phase1, p_right_phase2

    def shift_up(a: jax.Array) -> jax.Array:  # mass at y-1 lands on y
        return jnp.where(idx >= 1, jnp.roll(a, 1), 0.0)

    def shift_down(a: jax.Array) -> jax.Array:  # mass at y+1 lands on y
        return jnp.where(idx < x_cap - 1, jnp.roll(a, -1), 0.0)

    def body(carry, t):
        a1, a2, success, reached = carry
        active = t < t_limit
        r1 = shift_up(p * a1)
        to_phase2 = jnp.sum(jnp.where(idx == m, r1, 0.0))
        l1 = shift_down((1 - p) * a1) + jnp.where(idx == 0, (1 - p) * a1, 0.0)
        new_a1 = jnp.where(idx == m, 0.0, r1) + l1
        l2 = shift_down((1 - q) * a2)
        succ = l2[0]
        r2 = jnp.where(idx <= m, shift_up(q * a2), 0.0) + jnp.where(idx == m, q * a2, 0.0)
        new_a2 = jnp.where(idx == 0, 0.0, l2) + r2 + jnp.where(idx == m, to_phase2, 0.0)
        carry = (
            jnp.where(active, new_a1, a1),
            jnp.where(active, new_a2, a2),
            success + jnp.where(active, succ, 0.0),
            reached + jnp.where(active, to_phase2, 0.0),
        )
        return carry, None

    init = (a1, a2, jnp.float32(0.0), jnp.where(start2, 1.0, 0.0).astype(jnp.float32))
    (_, _, success, reached), _ = jax.lax.scan(body, init, jnp.arange(horizon))
    return success, reached
