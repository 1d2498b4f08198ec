"""Which parameters retention protects: every parameter shared by all stages, not a per-stage head.

Every agent's networks put per-stage output layers (one output row per stage, selected by the
stage index) under a ``"head"`` key; everything else (``"trunk"`` layers, and an output layer that
all stages share) is shared, and L2 / EWC protect it.
"""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any

TRUNK = "trunk"
HEAD = "head"


def is_trunk_path(path: tuple[Any, ...]) -> bool:
    """Whether a pytree key path points at a shared parameter (not into a per-stage head)."""
    return not any(getattr(k, "key", None) == HEAD for k in path)


def trunk_mask(params: PyTree) -> PyTree:
    """Pytree of Python floats: 1.0 on shared leaves, 0.0 on per-stage head leaves."""
    return jax.tree_util.tree_map_with_path(lambda p, _: float(is_trunk_path(p)), params)
