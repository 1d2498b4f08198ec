"""The runs axis over devices: a 1-D ``Mesh('runs')``, runs sharded with ``NamedSharding``.

Runs are independent, so sharding them adds no collectives: each device steps its own runs. In a
multi-process job (``multihost.initialize``) the mesh spans the devices of every process, the same
number from each; docs/multihost.md.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def runs_mesh(num_runs: int, devices: list[Any] | None = None) -> Mesh:
    """A mesh over the most devices that divide ``num_runs`` evenly (all of them when possible).

    With several processes the mesh takes as many devices from each process, so that every
    process steps its share of the runs. If ``num_runs`` does not divide over the processes, each
    process runs all of them on its own devices (correct, but no faster than one process) and a
    warning says so.
    """
    devices = list(devices if devices is not None else jax.devices())
    per_process: dict[int, list[Any]] = {}
    for d in devices:
        per_process.setdefault(d.process_index, []).append(d)
    procs = len(per_process)
    if procs == 1:
        k = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
        return Mesh(np.asarray(devices[:k]), ("runs",))
    width = min(len(v) for v in per_process.values())
    fits = [k for k in range(1, width + 1) if num_runs % (k * procs) == 0]
    if not fits:
        local = [d for d in devices if d.process_index == jax.process_index()]
        warnings.warn(
            f"{num_runs} runs do not divide over {procs} processes: every process runs all of "
            f"them on its own devices; use a multiple of {procs} runs to share them",
            stacklevel=2,
        )
        return runs_mesh(num_runs, local)
    k = max(fits)
    return Mesh(np.asarray([d for p in sorted(per_process) for d in per_process[p][:k]]), ("runs",))


def shard_runs(mesh: Mesh, tree: Any) -> Any:
    """Place every leaf (leading axis = runs) sharded along ``runs``."""
    return _put(tree, NamedSharding(mesh, PartitionSpec("runs")))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Place every leaf whole on every device of the mesh (shared inputs such as anchors)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def make_global(tree: Any) -> Any:
    """Every process-local leaf as a global array replicated on all devices of all processes
    (every process holds the same value); leaves that already span processes are kept."""
    everywhere = NamedSharding(Mesh(np.asarray(jax.devices()), ("runs",)), PartitionSpec())
    local = lambda x: isinstance(x, jax.Array) and x.is_fully_addressable  # noqa: E731
    return jax.tree.map(lambda x: _global(x, everywhere) if local(x) else x, tree)


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """``jax.device_put``; across processes each process places its own shards of its host copy
    (every process holds the same inputs: the same config and seeds built them)."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def _global(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def describe(mesh: Mesh) -> str:
    devs = mesh.devices.ravel()
    procs = len({d.process_index for d in devs})
    where = f", {procs} processes" if procs > 1 else ""
    return f"{len(devs)} x {devs[0].device_kind} ({jax.default_backend()}{where})"
