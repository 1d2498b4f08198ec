"""Which parameters retention protects: the shared ``trunk``, not the per-stage or output ``head``.

Every agent's networks put shared layers under a ``"trunk"`` key and output layers under
``"head"``; penalties and Fisher diagonals address the trunk by key path.
"""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any

TRUNK = "trunk"
HEAD = "head"


def is_trunk_path(path: tuple[Any, ...]) -> bool:
    """Whether a pytree key path points into a shared trunk (not a head)."""
    return any(getattr(k, "key", None) == TRUNK for k in path)


def trunk_mask(params: PyTree) -> PyTree:
    """Pytree of Python floats: 1.0 on trunk leaves, 0.0 on head leaves."""
    return jax.tree_util.tree_map_with_path(lambda p, _: float(is_trunk_path(p)), params)
