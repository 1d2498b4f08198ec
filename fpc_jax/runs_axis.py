"""The leading runs axis every vmapped program of fpc_jax shares: stacking per-run pytrees
(states, hypers, coefficients, anchors, buffers) and repeating one along it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def stack(trees: list[Any]) -> Any:
    """Stack pytrees of one structure along a new leading runs axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def bcast(tree: Any, n: int) -> Any:
    """``tree`` repeated along a new leading runs axis of size ``n``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)
