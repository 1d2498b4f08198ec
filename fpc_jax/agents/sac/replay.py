"""On-device ring replay buffer with a reserved, never-overwritten slice (Episodic Memory).

Slots ``[0, reserved)`` hold the EM transitions (I section 4: 10k of a 100k buffer); the ring
``[reserved, reserved + ring_limit)`` receives online transitions. A fixed-shape pytree: vmaps
over runs. ``ring_limit`` is an array leaf, so runs of one compiled program can keep different
replay sizes in one allocation (CW's 1M for most methods, I's 100k for EM).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class ReplayBuffer:
    """``data`` leaves are (capacity, ...). ``ring_pos``: next ring write offset in
    [0, ring_limit); ``ring_size``/``reserved_size``: filled slots in each part; ``ring_limit``
    (<= capacity - reserved): the slots this run's ring uses before it overwrites its oldest."""

    data: PyTree
    ring_pos: jax.Array
    ring_size: jax.Array
    reserved_size: jax.Array
    ring_limit: jax.Array
    capacity: int = struct.field(pytree_node=False)
    reserved: int = struct.field(pytree_node=False)

    @property
    def ring_capacity(self) -> int:
        return self.capacity - self.reserved

    @property
    def size(self) -> jax.Array:
        """Number of filled slots (reserved and ring)."""
        return self.reserved_size + self.ring_size


def buffer_init(
    capacity: int, example_transition: PyTree, reserved: int = 0, ring_limit: int | None = None
) -> ReplayBuffer:
    """Empty buffer of ``capacity`` slots shaped like ``example_transition`` (one transition);
    its ring holds ``ring_limit`` transitions (default all ``capacity - reserved`` slots)."""
    if not 0 <= reserved < capacity:
        raise ValueError(f"need 0 <= reserved < capacity, got reserved={reserved}, {capacity=}")
    ring_limit = capacity - reserved if ring_limit is None else int(ring_limit)
    if not 1 <= ring_limit <= capacity - reserved:
        raise ValueError(f"need 1 <= ring_limit <= capacity - reserved, got {ring_limit}")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example_transition
    )
    zero = jnp.zeros((), jnp.int32)
    limit = jnp.asarray(ring_limit, jnp.int32)
    return ReplayBuffer(data, zero, zero, zero, limit, capacity=capacity, reserved=reserved)


def _num_new(buf: ReplayBuffer, transitions: PyTree) -> int | None:
    """None for a single transition, else the (static) leading batch size."""
    if jax.tree_util.tree_structure(buf.data) != jax.tree_util.tree_structure(transitions):
        raise ValueError("transitions do not have the buffer's tree structure")
    stored = [d.ndim for d in jax.tree_util.tree_leaves(buf.data)]
    shapes = [jnp.shape(x) for x in jax.tree_util.tree_leaves(transitions)]
    if all(len(s) == nd - 1 for s, nd in zip(shapes, stored, strict=True)):
        return None
    if all(len(s) == nd for s, nd in zip(shapes, stored, strict=True)):
        sizes = {s[0] for s in shapes}
        if len(sizes) != 1:
            raise ValueError(f"transitions have different leading sizes {sorted(sizes)}")
        return sizes.pop()
    raise ValueError("transition leaves must all be single transitions or all batches of them")


def buffer_add(buf: ReplayBuffer, transitions: PyTree) -> ReplayBuffer:
    """Ring-write one transition or a batch (leading axis) into the non-reserved slots."""
    n = _num_new(buf, transitions)
    if n is None:
        transitions = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], transitions)
        n = 1
    if n > buf.ring_capacity:
        raise ValueError(f"adding {n} transitions at once exceeds the ring ({buf.ring_capacity})")
    idx = buf.reserved + (buf.ring_pos + jnp.arange(n, dtype=jnp.int32)) % buf.ring_limit
    data = jax.tree_util.tree_map(
        lambda d, x: d.at[idx].set(x.astype(d.dtype)), buf.data, transitions
    )
    return buf.replace(
        data=data,
        ring_pos=(buf.ring_pos + n) % buf.ring_limit,
        ring_size=jnp.minimum(buf.ring_size + n, buf.ring_limit),
    )


def buffer_fill_reserved(buf: ReplayBuffer, transitions: PyTree) -> ReplayBuffer:
    """Write a batch of at most ``reserved`` transitions into the reserved slice (EM), replacing
    what it held; ``buffer_add`` never touches these slots."""
    n = _num_new(buf, transitions)
    if n is None or n > buf.reserved:
        raise ValueError(f"need a batch of 1..{buf.reserved} transitions for the reserved slice")
    data = jax.tree_util.tree_map(
        lambda d, x: d.at[:n].set(x.astype(d.dtype)), buf.data, transitions
    )
    return buf.replace(data=data, reserved_size=jnp.asarray(n, jnp.int32))


def buffer_sample(buf: ReplayBuffer, key: jax.Array, batch_size: int) -> PyTree:
    """``batch_size`` transitions drawn uniformly (with replacement) over the filled slots,
    reserved ones included. The buffer must not be empty."""
    j = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    idx = jnp.where(j < buf.reserved_size, j, buf.reserved + j - buf.reserved_size)
    return jax.tree_util.tree_map(lambda d: d[idx], buf.data)
