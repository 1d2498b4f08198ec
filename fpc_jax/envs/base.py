"""The functional environment contract shared by every fpc_jax env (gymnax-style).

An env is a stateless object with pure methods; everything that varies lives in two pytrees:
``params`` (what defines the env variant: sizes, coefficients; vmappable) and ``state`` (what
changes while stepping).

    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

``terminated`` means a true terminal (no bootstrapping beyond it); ``truncated`` means the episode
was cut by a time limit. Envs do not auto-reset: the caller (a training loop) decides what to do
at episode end.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

PyTree = Any


class Environment(Protocol):
    """Structural type of a functional env."""

    name: str

    def default_params(self) -> PyTree: ...

    def reset(self, key: jax.Array, params: PyTree) -> tuple[jax.Array, PyTree]: ...

    def step(
        self, key: jax.Array, state: PyTree, action: jax.Array, params: PyTree
    ) -> tuple[jax.Array, PyTree, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]: ...
